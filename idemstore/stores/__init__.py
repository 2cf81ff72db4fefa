"""Record stores: the contract every store keeps, and the stores that keep it.

- ``contract``: the ``RecordStore`` protocol and how a conditional write's
  outcome is read (shared by every store, so they agree on what "ours" means);
- ``dynamo``: ``AsyncDynamoStore``, DynamoDB through aiobotocore (the only DynamoDB I/O);
- ``memory``: ``InMemoryStore``, the same contract in a dict, for tests and local runs.
"""
