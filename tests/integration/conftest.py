"""Fixtures shared by the integration tests that prove compatibility with Powertools."""

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from idemstore import AsyncDynamoStore
from idemstore.loopback import RedisServer
from idemstore.testing import MotoEndpoint


@pytest.fixture
def powertools_layer(moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore) -> Any:
    """Powertools' DynamoDB layer on the table of ``dynamo_store``."""
    # Imported here: the other integration modules need neither boto3 nor Powertools.
    from powertools_twins import dynamo_layer

    return dynamo_layer(moto_server, dynamo_store.table_name)


@pytest.fixture
def redis_powertools_layer(redis_server: RedisServer) -> Iterator[Any]:
    """Powertools' Redis layer on the server of ``redis_store``, with redis-py's sync client."""
    # Imported here, as above.
    import redis
    from aws_lambda_powertools.utilities.idempotency.persistence.redis import (
        RedisCachePersistenceLayer,
    )

    # Powertools' client protocol is narrower than redis-py's own signatures: Any.
    client: Any = redis.Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    with warnings.catch_warnings():
        # The layer is marked deprecated in favour of its alias CachePersistenceLayer,
        # the very same class: constructing either warns.
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = RedisCachePersistenceLayer(client=client)
    try:
        yield layer
    finally:
        client.close()
