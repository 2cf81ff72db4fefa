"""pytest fixtures for testing idempotent code, registered as a pytest plugin.

Installed with idemstore (entry point ``pytest11``), so a project gets:

- ``moto_server`` (session): a DynamoDB-protocol server on 127.0.0.1, on a free
  port, with dummy credentials that never read the user's AWS configuration;
- ``dynamo_store``: an ``AsyncDynamoStore`` on a fresh table in that server,
  closed after the test;
- ``memory_store``: an ``InMemoryStore``;
- ``redis_server`` (session): a ``valkey-server``/``redis-server`` process on
  127.0.0.1 and a free port, without persistence, stopped by its PID;
- ``redis_store``: an ``AsyncRedisStore`` on that server with an empty database
  (needs the ``redis`` package, imported only when the fixture is used).

The async fixture works in pytest-asyncio's strict mode. ``RequestLog``,
``MotoEndpoint`` and ``start_moto_server`` come from ``idemstore.loopback``
and are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from idemstore.loopback import (
    DUMMY_ACCESS_KEY,
    DUMMY_REGION,
    DUMMY_SECRET_KEY,
    MotoEndpoint,
    RequestLog,
    isolated_session,
    start_moto_server,
)
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore
from idemstore.tables import create_table

if TYPE_CHECKING:
    from idemstore.loopback import RedisServer
    from idemstore.stores.redis import AsyncRedisStore

__all__ = [
    "DUMMY_ACCESS_KEY",
    "DUMMY_REGION",
    "DUMMY_SECRET_KEY",
    "MotoEndpoint",
    "RequestLog",
    "dynamo_store",
    "isolated_session",
    "memory_store",
    "moto_server",
    "redis_server",
    "redis_store",
    "start_moto_server",
]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEndpoint]:
    server, endpoint = start_moto_server()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest_asyncio.fixture
async def dynamo_store(moto_server: MotoEndpoint) -> AsyncIterator[AsyncDynamoStore]:
    store = moto_server.store(f"idemstore-test-{uuid.uuid4().hex[:12]}")
    await create_table(store)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def memory_store() -> InMemoryStore:
    return InMemoryStore()


# --- Redis / Valkey -----------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    from idemstore.loopback import start_redis_server

    server = start_redis_server()
    try:
        yield server
    finally:
        server.close()


@pytest_asyncio.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[AsyncRedisStore]:
    # Imported here, so the plugin loads where the redis package is not installed.
    import redis.asyncio

    from idemstore.stores.redis import AsyncRedisStore

    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await client.flushdb()
        yield AsyncRedisStore(client)
    finally:
        await client.aclose()
