"""Waiting for a call in progress (``wait_for_in_progress_seconds > 0``): attach in-process,
poll across processes, give up at the deadline."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pydantic
import pytest
import pytest_asyncio

from engine.conftest import order_function, request_log
from idemstore import (
    AsyncDynamoStore,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyValidationError,
    InMemoryStore,
    RecordStore,
    idempotent_function,
)
from idemstore.testing import MotoEndpoint

P = ParamSpec("P")
R = TypeVar("R")


class Receipt(pydantic.BaseModel):
    order_id: int


async def until(condition: Any) -> None:
    """Let other tasks run until ``condition()`` holds (bounded, so a bug fails, not hangs)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


class Hold:
    """Holds the first call of a test in progress, so that its duplicates find its lock taken.

    A decorated body that awaits ``run(name)`` is recorded in ``runs`` and then waits, holding
    its lock, until the test calls ``release()``.
    """

    def __init__(self) -> None:
        self.runs: list[Any] = []
        self._released = asyncio.Event()

    async def run(self, name: Any) -> None:
        """Record a run as ``name``, then wait for ``release()``."""
        self.runs.append(name)
        await self._released.wait()

    def release(self) -> None:
        """Let the held calls go on."""
        self._released.set()

    async def start(self, call: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        """``call`` as a task, once its run has begun: from then on it holds its lock."""
        task = asyncio.create_task(call)
        await until(lambda: self.runs)
        return task


def waiting_function(
    store: RecordStore, seconds: float, **options: Any
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """``idempotent_function`` on ``order`` that waits up to ``seconds`` for a call in progress."""
    return order_function(store, IdempotencyConfig(wait_for_in_progress_seconds=seconds, **options))


def deployed_elsewhere(
    function: Any, store: RecordStore
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """``function``'s decorator (same config, same key prefix) on ``store``: the same
    function deployed in another process, with its own engine and client."""
    engine = function.idempotency_engine
    return idempotent_function(
        data_keyword_argument="order",
        persistence_store=store,
        config=engine.config,
        key_prefix=engine.key_prefix,
    )


@pytest_asyncio.fixture
async def other_process_store(
    moto_server: MotoEndpoint, store: RecordStore
) -> AsyncIterator[RecordStore]:
    """The same records reached as another process would: the same table through a
    client of its own, or the same in-memory records through a connection of its own."""
    if isinstance(store, InMemoryStore):
        yield store.connection()
        return
    assert isinstance(store, AsyncDynamoStore)
    async with moto_server.store(store.table_name) as other:
        yield other


@pytest.mark.asyncio
async def test_same_process_duplicates_attach_with_no_requests(store: RecordStore) -> None:
    log = await request_log(store)
    hold = Hold()

    @waiting_function(store, 5)
    async def process(order: dict[str, Any]) -> Receipt:
        await hold.run(order["id"])
        return Receipt(order_id=order["id"])

    leader = await hold.start(process(order={"id": 1}))
    duplicates = [asyncio.create_task(process(order={"id": 1})) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert log.operations == ["PutItem"]
    assert not any(d.done() for d in duplicates)

    hold.release()
    results = await asyncio.gather(leader, *duplicates)
    assert results == [Receipt(order_id=1)] * 4
    assert all(isinstance(r, Receipt) for r in results)
    assert hold.runs == [1]
    assert log.operations == ["PutItem", "UpdateItem"]


@pytest.mark.asyncio
@pytest.mark.server
async def test_simultaneous_calls_take_one_lock(store: RecordStore) -> None:
    log = await request_log(store)
    runs: list[int] = []

    @waiting_function(store, 5)
    async def process(order: dict[str, Any]) -> int:
        runs.append(order["id"])
        await asyncio.sleep(0.05)
        return len(runs)

    assert list(await asyncio.gather(*(process(order={"id": 7}) for _ in range(5)))) == [1] * 5
    assert runs == [7]
    assert log.operations == ["PutItem", "UpdateItem"]


@pytest.mark.asyncio
async def test_attached_duplicate_is_validated(store: RecordStore) -> None:
    hold = Hold()

    @waiting_function(store, 5, event_key_jmespath="id", payload_validation_jmespath="amount")
    async def charge(order: dict[str, Any]) -> str:
        await hold.run(order["amount"])
        return f"charged {order['amount']}"

    leader = await hold.start(charge(order={"id": 1, "amount": 10}))
    same = asyncio.create_task(charge(order={"id": 1, "amount": 10}))
    differing = asyncio.create_task(charge(order={"id": 1, "amount": 99}))
    await asyncio.sleep(0.02)
    hold.release()
    assert await leader == "charged 10"
    assert await same == "charged 10"
    with pytest.raises(IdempotencyValidationError):
        await differing
    assert hold.runs == [10]


@pytest.mark.asyncio
async def test_duplicates_of_a_failed_call_run_it_again_once(store: RecordStore) -> None:
    hold = Hold()

    @waiting_function(store, 5)
    async def process(order: dict[str, Any]) -> str:
        if not hold.runs:
            await hold.run("first")
            raise ConnectionError("first attempt failed")
        hold.runs.append("again")
        await asyncio.sleep(0.05)
        return "second attempt"

    leader = await hold.start(process(order={"id": 1}))
    duplicates = [asyncio.create_task(process(order={"id": 1})) for _ in range(2)]
    await asyncio.sleep(0.02)
    hold.release()
    with pytest.raises(ConnectionError):
        await leader
    assert list(await asyncio.gather(*duplicates)) == ["second attempt"] * 2
    assert hold.runs == ["first", "again"]


@pytest.mark.asyncio
@pytest.mark.server
async def test_duplicate_in_another_process_polls_then_replays(
    store: RecordStore, other_process_store: AsyncDynamoStore
) -> None:
    hold = Hold()

    @waiting_function(store, 5)
    async def process(order: dict[str, Any]) -> Receipt:
        await hold.run("here")
        return Receipt(order_id=order["id"])

    # The same function deployed elsewhere: same key prefix, its own engine and client.
    @deployed_elsewhere(process, other_process_store)
    async def process_elsewhere(order: dict[str, Any]) -> Receipt:
        hold.runs.append("elsewhere")
        return Receipt(order_id=-1)

    elsewhere_log = await request_log(other_process_store)
    leader = await hold.start(process(order={"id": 3}))
    duplicate = asyncio.create_task(process_elsewhere(order={"id": 3}))
    await until(lambda: elsewhere_log.operations.count("GetItem") >= 2)
    assert not duplicate.done()
    hold.release()

    assert await leader == Receipt(order_id=3)
    assert await duplicate == Receipt(order_id=3)
    assert hold.runs == ["here"]
    assert elsewhere_log.operations[0] == "PutItem"
    assert set(elsewhere_log.operations[1:]) == {"GetItem"}


@pytest.mark.asyncio
@pytest.mark.server
async def test_duplicate_in_another_process_runs_when_the_first_call_fails(
    store: RecordStore, other_process_store: AsyncDynamoStore
) -> None:
    hold = Hold()

    @waiting_function(store, 5)
    async def process(order: dict[str, Any]) -> str:
        await hold.run("here")
        raise ConnectionError("downstream failed")

    @deployed_elsewhere(process, other_process_store)
    async def process_elsewhere(order: dict[str, Any]) -> str:
        hold.runs.append("elsewhere")
        return "done elsewhere"

    elsewhere_log = await request_log(other_process_store)
    leader = await hold.start(process(order={"id": 8}))
    duplicate = asyncio.create_task(process_elsewhere(order={"id": 8}))
    await until(lambda: "GetItem" in elsewhere_log.operations)
    hold.release()
    with pytest.raises(ConnectionError):
        await leader
    # The released record is gone when polled: the duplicate takes the lock and runs.
    assert await duplicate == "done elsewhere"
    assert hold.runs == ["here", "elsewhere"]
    assert elsewhere_log.operations[-2:] == ["PutItem", "UpdateItem"]


@pytest.mark.asyncio
async def test_duplicate_in_another_process_gives_up_at_the_deadline(
    store: RecordStore, other_process_store: AsyncDynamoStore
) -> None:
    hold = Hold()

    @waiting_function(store, 0.3)
    async def process(order: dict[str, Any]) -> str:
        await hold.run("here")
        return "done"

    @deployed_elsewhere(process, other_process_store)
    async def process_elsewhere(order: dict[str, Any]) -> str:
        raise AssertionError("must not run")

    elsewhere_log = await request_log(other_process_store)
    leader = await hold.start(process(order={"id": 4}))
    try:
        with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
            await process_elsewhere(order={"id": 4})
    finally:
        hold.release()
    assert await leader == "done"
    assert hold.runs == ["here"]
    assert caught.value.old_data_record is not None
    # Polling backs off: a handful of reads, never a busy loop.
    polls = elsewhere_log.operations.count("GetItem")
    assert polls <= 5
    assert elsewhere_log.operations == ["PutItem"] + ["GetItem"] * polls


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "wait", [0, 0.3], ids=["at once without waiting", "at the deadline when waiting"]
)
async def test_same_process_duplicate_raises_already_in_progress(
    store: RecordStore, wait: float
) -> None:
    hold = Hold()

    @waiting_function(store, wait)
    async def process(order: dict[str, Any]) -> str:
        await hold.run("run")
        return "done"

    leader = await hold.start(process(order={"id": 5}))
    log = await request_log(store)
    try:
        with pytest.raises(IdempotencyAlreadyInProgressError, match="already in progress"):
            await process(order={"id": 5})
        # A wait is spent attached to the call in progress: one look at the table, no polls.
        assert log.operations == ["PutItem"]
    finally:
        hold.release()
    assert await leader == "done"
    assert hold.runs == ["run"]
