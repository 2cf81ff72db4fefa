"""pytest fixtures for testing idempotent code, registered as a pytest plugin.

Installed with idemstore (entry point ``pytest11``), so a project gets:

- ``moto_server`` (session): a DynamoDB-protocol server on 127.0.0.1, on a free
  port, with dummy credentials that never read the user's AWS configuration;
- ``dynamo_store``: an ``AsyncDynamoStore`` on a fresh table in that server,
  closed after the test;
- ``dynamo_endpoint``: points every store built without ``endpoint_url`` (a
  store at module scope) at that server for one test, through the
  environment; ``await dynamo_endpoint.create_table(store)`` makes its table,
  which is deleted after the test;
- ``memory_store``: an ``InMemoryStore``;
- ``redis_server`` (session): a ``valkey-server``/``redis-server`` process on
  127.0.0.1 and a free port, without persistence, stopped by its PID;
- ``redis_store``: an ``AsyncRedisStore`` on that server with an empty database
  (needs the ``redis`` package, imported only when the fixture is used).

The plugin loads without its optional dependencies (pytest-asyncio, moto): it
then stays inert, and a test that uses a fixture needing them fails with the
extra to install (``pip install "idemstore[pytest]"``). The async fixtures work
in pytest-asyncio's strict mode. ``RequestLog``, ``MotoEndpoint``,
``LoopbackTables`` and ``start_moto_server`` come from ``idemstore.loopback``
and are re-exported here.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from idemstore.loopback import (
    DUMMY_ACCESS_KEY,
    DUMMY_REGION,
    DUMMY_SECRET_KEY,
    INSTALL_HINT,
    LoopbackTables,
    MotoEndpoint,
    RequestLog,
    is_client_setting,
    isolated_session,
    missing_server_dependency,
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
    "LoopbackTables",
    "MotoEndpoint",
    "RequestLog",
    "dynamo_endpoint",
    "dynamo_store",
    "isolated_session",
    "memory_store",
    "moto_server",
    "redis_server",
    "redis_store",
    "start_moto_server",
]

HAS_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None
"""Looked up, not imported: without it the plugin must still load."""


def _async_fixture(implementation: Callable[..., AsyncIterator[Any]], name: str) -> object:
    """A pytest-asyncio fixture, or without pytest-asyncio one that fails naming the extra."""
    if HAS_PYTEST_ASYNCIO:
        import pytest_asyncio

        return pytest_asyncio.fixture(implementation, name=name)

    def unavailable() -> NoReturn:
        pytest.fail(f"the {name} fixture needs pytest-asyncio: {INSTALL_HINT}", pytrace=False)

    return pytest.fixture(unavailable, name=name)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEndpoint]:
    missing = missing_server_dependency()
    if missing is not None:
        pytest.fail(f"the moto_server fixture: {missing}", pytrace=False)
    server, endpoint = start_moto_server()
    try:
        yield endpoint
    finally:
        server.stop()


async def _dynamo_store(moto_server: MotoEndpoint) -> AsyncIterator[AsyncDynamoStore]:
    store = moto_server.store(f"idemstore-test-{uuid.uuid4().hex[:12]}")
    try:
        await create_table(store)
        yield store
    finally:
        await store.aclose()


async def _dynamo_endpoint(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LoopbackTables]:
    for name in list(os.environ):
        if is_client_setting(name):
            monkeypatch.delenv(name)
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    tables = LoopbackTables(moto_server)
    try:
        yield tables
    finally:
        # Before monkeypatch restores the environment: the clients are still ours.
        await tables.aclose()


dynamo_store = _async_fixture(_dynamo_store, "dynamo_store")
dynamo_endpoint = _async_fixture(_dynamo_endpoint, "dynamo_endpoint")


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


async def _redis_store(redis_server: RedisServer) -> AsyncIterator[AsyncRedisStore]:
    # Imported here, so the plugin loads where the redis package is not installed.
    import redis.asyncio

    from idemstore.stores.redis import AsyncRedisStore

    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await client.flushdb()
        yield AsyncRedisStore(client)
    finally:
        await client.aclose()


redis_store = _async_fixture(_redis_store, "redis_store")
