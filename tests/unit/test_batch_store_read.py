"""``AsyncDynamoStore.get_records``: the requests it builds and how it treats unprocessed keys.

moto always processes every key, so the answers DynamoDB gives under throttling
(``UnprocessedKeys``) come from a client that records the requests and answers
as told; the store's own code is what runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from idemstore import AsyncDynamoStore, DataRecord, RecordStatus, TableSchema
from idemstore.codec import to_item

TABLE = "records"


def record(key: str) -> DataRecord:
    return DataRecord(
        idempotency_key=key,
        status=RecordStatus.COMPLETED,
        expiry_timestamp=2_000_000_000,
        response_data='"ok"',
    )


class ScriptedClient:
    """Answers ``batch_get_item`` with the stored items, leaving unread the keys it is
    told to leave (per request, in order)."""

    def __init__(self, keys: list[str], unread: list[set[str]]) -> None:
        self.items = {key: to_item(TableSchema(), record(key)) for key in keys}
        self.unread = unread
        self.requests: list[list[str]] = []

    async def batch_get_item(self, *, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803  # botocore's parameter name
        request = RequestItems[TABLE]
        assert request["ConsistentRead"] is True
        asked = [key["id"]["S"] for key in request["Keys"]]
        self.requests.append(asked)
        left = self.unread.pop(0) if self.unread else set()
        answer = [self.items[k] for k in asked if k in self.items and k not in left]
        unprocessed = [{"id": {"S": k}} for k in asked if k in left]
        response: dict[str, Any] = {"Responses": {TABLE: answer}}
        if unprocessed:
            response["UnprocessedKeys"] = {TABLE: {"Keys": unprocessed, "ConsistentRead": True}}
        return response


def scripted_store(
    keys: list[str], unread: list[set[str]]
) -> tuple[AsyncDynamoStore, ScriptedClient]:
    client = ScriptedClient(keys, unread)
    # Duck-typed: the store calls only batch_get_item here.
    store = AsyncDynamoStore(TABLE, client=client)  # type: ignore[arg-type]
    return store, client


@pytest.mark.asyncio
async def test_keys_are_deduplicated_and_sent_a_hundred_per_request() -> None:
    keys = [f"f#{n}" for n in range(250)]
    store, client = scripted_store(keys[:240], [])

    found = await store.get_records(keys + keys[:10])

    assert sorted(len(request) for request in client.requests) == [50, 100, 100]
    assert sorted(found) == sorted(keys[:240])
    assert found["f#7"] == record("f#7")


@pytest.mark.asyncio
async def test_unprocessed_keys_are_asked_again() -> None:
    keys = ["f#1", "f#2", "f#3"]
    store, client = scripted_store(keys, [{"f#2", "f#3"}, {"f#3"}])

    found = await store.get_records(keys)

    assert client.requests == [keys, ["f#2", "f#3"], ["f#3"]]
    assert sorted(found) == keys


@pytest.mark.asyncio
async def test_keys_left_unprocessed_after_the_retries_are_absent() -> None:
    keys = ["f#1", "f#2"]
    store, client = scripted_store(keys, [{"f#2"}] * 10)

    found = await store.get_records(keys)

    assert len(client.requests) == 3  # bounded
    assert sorted(found) == ["f#1"]  # f#2 takes the caller's per-key path


@pytest.mark.asyncio
async def test_no_keys_sends_no_request() -> None:
    store, client = scripted_store([], [])

    assert await store.get_records([]) == {}
    assert client.requests == []
