"""Engine semantics run on ``InMemoryStore``; tests marked ``server`` run on the moto server too.

The ``store`` fixture is an ``InMemoryStore`` by default. A test marked
``@pytest.mark.server`` runs twice: on memory and on an ``AsyncDynamoStore``
over a fresh table on the session's moto server, so the request budget and the
lock's behaviour are proven over real HTTP on a representative subset.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pytest

from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyConfig,
    InMemoryStore,
    RecordStore,
    idempotent_function,
)
from idemstore.codec import to_item
from idemstore.testing import RequestLog


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" in metafunc.fixturenames:
        kinds = (
            ["memory", "dynamo"] if metafunc.definition.get_closest_marker("server") else ["memory"]
        )
        metafunc.parametrize("store_kind", kinds)


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest) -> RecordStore:
    """The plugin's ``memory_store`` or ``dynamo_store`` (a fresh table on the session's moto
    server), as ``store_kind`` says: the engine tests run on the same stores users test with."""
    chosen: RecordStore = request.getfixturevalue(f"{store_kind}_store")
    return chosen


P = ParamSpec("P")
R = TypeVar("R")


def order_function(
    store: RecordStore, config: IdempotencyConfig | None = None, **options: Any
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """``idempotent_function`` keyed on the ``order`` argument, over ``store``: the decorator
    the engine tests put on their ``process(order=...)``. ``options`` go to the decorator
    (``key_prefix``, ``output_serializer``)."""
    return idempotent_function(
        data_keyword_argument="order", persistence_store=store, config=config, **options
    )


async def assert_replays_a_copy(
    process: Callable[..., Coroutine[Any, Any, Any]], result: Any
) -> None:
    """``process(order=...)``, returning ``result``, replays a copy of it: read back from the
    stored record, of the same type and equal, but not the object the first call returned."""
    assert await process(order={"id": 1}) is result
    replayed = await process(order={"id": 1})
    assert type(replayed) is type(result)
    assert replayed == result
    assert replayed is not result


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
