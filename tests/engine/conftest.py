"""Engine semantics run on ``InMemoryStore``; tests marked ``server`` run on the moto server too.

The ``store`` fixture is an ``InMemoryStore`` by default. A test marked
``@pytest.mark.server`` runs twice: on memory and on an ``AsyncDynamoStore``
over a fresh table on the session's moto server, so the request budget and the
lock's behaviour are proven over real HTTP on a representative subset.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from idemstore import AsyncDynamoStore, DataRecord, InMemoryStore, RecordStore
from idemstore.codec import to_item
from idemstore.tables import create_table
from idemstore.testing import MotoEndpoint, RequestLog


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" in metafunc.fixturenames:
        kinds = (
            ["memory", "dynamo"] if metafunc.definition.get_closest_marker("server") else ["memory"]
        )
        metafunc.parametrize("store_kind", kinds)


@pytest_asyncio.fixture
async def store(store_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[RecordStore]:
    if store_kind == "memory":
        yield InMemoryStore()
        return
    moto_server: MotoEndpoint = request.getfixturevalue("moto_server")
    dynamo = moto_server.store(f"idemstore-engine-{uuid.uuid4().hex[:12]}")
    await create_table(dynamo)
    try:
        yield dynamo
    finally:
        await dynamo.aclose()


async def request_log(store: RecordStore) -> RequestLog:
    """The operations a store serves from now on, by DynamoDB name, whichever the store.

    A test's wrapping store (one with an ``inner`` store) is seen through.
    """
    while not isinstance(store, InMemoryStore | AsyncDynamoStore) and hasattr(store, "inner"):
        store = store.inner
    if isinstance(store, InMemoryStore):
        return RequestLog().watch(store)
    assert isinstance(store, AsyncDynamoStore)
    return RequestLog().attach(await store.client())


class FakeClock:
    """An injected clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key_of(function: Any, payload: Any) -> str:
    """The idempotency key a decorated function derives from ``payload``."""
    key: str = function.idempotency_engine.identify(payload).key
    return key


async def overwrite(store: RecordStore, record: DataRecord) -> None:
    """Write an item unconditionally, as another caller taking the lock over would."""
    if isinstance(store, InMemoryStore):
        store.overwrite(record)
        return
    assert isinstance(store, AsyncDynamoStore)
    client = await store.client()
    await client.put_item(TableName=store.table_name, Item=to_item(store.schema, record))
