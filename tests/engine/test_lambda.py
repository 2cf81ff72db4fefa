"""Locks in and out of Lambda (deadline, lease, heartbeat) and the Lambda entry point."""

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiobotocore.session import AioSession

from engine.conftest import FakeClock, key_of, request_log
from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    InMemoryStore,
    RecordStore,
    create_table,
    idempotent,
    idempotent_function,
    lambda_entry_point,
    register_lambda_context,
)
from idemstore.testing import MotoEndpoint


class FakeLambdaContext:
    """The part of Lambda's context object the engine reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        self.aws_request_id = uuid.uuid4().hex

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def clock() -> FakeClock:
    """The engine's clock, stopped at the time the test starts: a lock's deadline is then
    exactly that time plus the invocation's time left, or plus the lease."""
    return FakeClock(time.time())


def lock_recording_function(
    store: RecordStore, config: IdempotencyConfig
) -> tuple[Callable[..., Coroutine[Any, Any, str]], list[DataRecord]]:
    """An idempotent ``process(order=...)``, and the locks it ran under, call by call."""
    locks: list[DataRecord] = []

    @idempotent_function(data_keyword_argument="order", persistence_store=store, config=config)
    async def process(order: dict[str, Any]) -> str:
        locks.append(await store.get_record(key_of(process, order)))
        return "processed"

    return process, locks


def lock_recording_handler(
    store: RecordStore, config: IdempotencyConfig
) -> tuple[Callable[[dict[str, Any], Any], Coroutine[Any, Any, str]], list[DataRecord]]:
    """An idempotent Lambda handler, and the locks it ran under, invocation by invocation."""
    locks: list[DataRecord] = []

    @idempotent(persistence_store=store, config=config)
    async def handler(event: dict[str, Any], context: Any) -> str:
        locks.append(await store.get_record(key_of(handler, event)))
        return "ok"

    return handler, locks


# --- in Lambda: the lock lasts until the invocation's deadline ----------------------------


@pytest.mark.parametrize(
    ("context", "deadline_ms"),
    [
        pytest.param(FakeLambdaContext(remaining_ms=7_250), 7_250, id="invocation-deadline"),
        # A context without a deadline falls back to the lease.
        pytest.param(object(), 20_000, id="context-without-a-deadline"),
    ],
)
@pytest.mark.asyncio
@pytest.mark.server
async def test_handler_lock_lasts_until_the_invocation_deadline_else_for_the_lease(
    store: RecordStore, clock: FakeClock, context: Any, deadline_ms: int
) -> None:
    config = IdempotencyConfig(clock=clock, in_progress_lease_seconds=20)
    handler, locks = lock_recording_handler(store, config)
    log = await request_log(store)
    assert await handler({"id": 1}, context) == "ok"
    assert locks[0].in_progress_expiry_timestamp == int(clock() * 1000) + deadline_ms
    assert log.operations == ["PutItem", "GetItem", "UpdateItem"]  # no lease renewals


@pytest.mark.asyncio
async def test_handler_registers_its_context_for_the_functions_it_calls(
    store: RecordStore, clock: FakeClock
) -> None:
    config = IdempotencyConfig(clock=clock, in_progress_lease_seconds=100)
    process, locks = lock_recording_function(store, config)

    @idempotent(persistence_store=store, config=config)
    async def handler(event: dict[str, Any], context: Any) -> str:
        return await process(order=event["order"])

    event = {"order": {"id": 1}}
    assert await asyncio.create_task(handler(event, FakeLambdaContext(4_500))) == "processed"
    assert locks[0].in_progress_expiry_timestamp == int(clock() * 1000) + 4_500


@pytest.mark.parametrize("register", ["module function", "config method"])
@pytest.mark.asyncio
async def test_function_reads_the_registered_lambda_context(
    store: RecordStore, clock: FakeClock, register: str
) -> None:
    config = IdempotencyConfig(clock=clock, in_progress_lease_seconds=100)
    process, locks = lock_recording_function(store, config)

    async def lambda_handler(event: dict[str, Any], context: Any) -> str:
        if register == "module function":
            register_lambda_context(context)
        else:
            config.register_lambda_context(context)
        return await process(order=event)

    # A task of its own, as each invocation is: the registration stays in it.
    invocation = lambda_handler({"id": 1}, FakeLambdaContext(3_000))
    assert await asyncio.create_task(invocation) == "processed"
    assert locks[0].in_progress_expiry_timestamp == int(clock() * 1000) + 3_000
    # The config itself was not touched, and later calls without a context use the lease.
    await process(order={"id": 2})
    assert locks[1].in_progress_expiry_timestamp == int(clock() * 1000) + 100_000


@pytest.mark.asyncio
async def test_registered_contexts_are_task_local(store: RecordStore, clock: FakeClock) -> None:
    config = IdempotencyConfig(clock=clock)
    both_registered = asyncio.Barrier(2)
    deadlines: dict[int, int | None] = {}

    @idempotent_function(data_keyword_argument="order", persistence_store=store, config=config)
    async def process(order: dict[str, Any]) -> int:
        lock = await store.get_record(key_of(process, order))
        deadlines[order["id"]] = lock.in_progress_expiry_timestamp
        return int(order["id"])

    async def invocation(order_id: int, remaining_ms: int) -> int:
        config.register_lambda_context(FakeLambdaContext(remaining_ms))
        await both_registered.wait()  # the other invocation registers its context meanwhile
        return await process(order={"id": order_id})

    assert list(await asyncio.gather(invocation(1, 4_000), invocation(2, 9_000))) == [1, 2]
    now_ms = int(clock() * 1000)
    assert deadlines == {1: now_ms + 4_000, 2: now_ms + 9_000}


@pytest.mark.asyncio
async def test_handler_context_does_not_leak_into_the_callers_task(
    store: RecordStore, clock: FakeClock
) -> None:
    config = IdempotencyConfig(clock=clock, in_progress_lease_seconds=50)

    @idempotent(persistence_store=store, config=config)
    async def handler(event: dict[str, Any], context: Any) -> str:
        return "handled"

    process, locks = lock_recording_function(store, config)

    assert await asyncio.create_task(handler({"id": 1}, FakeLambdaContext(2_000))) == "handled"
    assert await process(order={"id": 1}) == "processed"
    assert locks[0].in_progress_expiry_timestamp == int(clock() * 1000) + 50_000


# --- outside Lambda: a lease, renewed by a heartbeat -----------------------------------------


@pytest.mark.asyncio
async def test_lock_outside_lambda_is_a_lease(store: RecordStore, clock: FakeClock) -> None:
    config = IdempotencyConfig(clock=clock, in_progress_lease_seconds=12.5)
    process, locks = lock_recording_function(store, config)

    await process(order={"id": 1})
    assert locks[0].in_progress_expiry_timestamp == int(clock() * 1000) + 12_500


@pytest.mark.asyncio
@pytest.mark.server
async def test_heartbeat_keeps_a_long_call_locked(store: RecordStore) -> None:
    lease = 0.9  # renewed every 0.3 s: room for a slow request on a busy machine
    runs: list[int] = []
    observed: dict[str, Any] = {}

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=store,
        config=IdempotencyConfig(in_progress_lease_seconds=lease),
    )
    async def process(order: dict[str, Any]) -> str:
        runs.append(len(runs) + 1)
        if len(runs) > 1:
            return "the duplicate ran"  # the lock was lost: fail below, do not recurse
        key = key_of(process, order)
        first = (await store.get_record(key)).in_progress_expiry_timestamp
        assert first is not None
        # Run until the first lease has certainly lapsed (bounded: a stuck clock fails).
        for _ in range(100):
            await asyncio.sleep(lease / 3)
            if time.time() * 1000 > first + 100:
                break
        try:
            await process(order=order)  # a duplicate, once the first lease is over
        except IdempotencyAlreadyInProgressError as exc:
            observed["duplicate"] = exc
        observed["first"] = first
        observed["later"] = (await store.get_record(key)).in_progress_expiry_timestamp
        return "done"

    assert await process(order={"id": 1}) == "done"
    assert runs == [1]
    assert isinstance(observed["duplicate"], IdempotencyAlreadyInProgressError)
    assert observed["later"] > observed["first"]


# --- the Lambda entry point ---------------------------------------------------------------


def clients_made_by(session: AioSession) -> list[str]:
    """The clients ``session`` makes from now on, one entry each: each announces its class."""
    made: list[str] = []
    session.register(
        "creating-client-class.dynamodb", lambda event_name, **_: made.append(event_name)
    )
    return made


def test_entry_point_reuses_one_loop_and_one_client(moto_server: MotoEndpoint) -> None:
    table_name = f"idemstore-entry-{uuid.uuid4().hex[:12]}"

    async def setup() -> None:
        async with moto_server.store(table_name) as creator:
            await create_table(creator)

    asyncio.run(setup())

    session = moto_server.session()
    store = AsyncDynamoStore(
        table_name,
        endpoint_url=moto_server.url,
        region_name=moto_server.region_name,
        session=session,
    )
    created = clients_made_by(session)
    clients: list[object] = []
    loops: list[asyncio.AbstractEventLoop] = []
    runs: list[int] = []

    @idempotent(persistence_store=store, config=IdempotencyConfig(event_key_jmespath="id"))
    async def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        clients.append(await store.client())
        loops.append(asyncio.get_running_loop())
        runs.append(event["id"])
        return {"id": event["id"]}

    entry = lambda_entry_point(handler)
    try:
        results = [entry({"id": n}, FakeLambdaContext(5_000)) for n in (1, 2, 3)]
        replay = entry({"id": 1}, FakeLambdaContext(5_000))
    finally:
        entry.loop.run_until_complete(store.aclose())
        entry.close()

    assert results == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert replay == {"id": 1}
    assert runs == [1, 2, 3]
    assert len(created) == 1
    assert len(clients) == 3
    assert all(client is clients[0] for client in clients)
    assert all(loop is loops[0] for loop in loops)


def test_entry_point_propagates_errors_and_keeps_serving() -> None:
    calls: list[str] = []

    async def handler(event: dict[str, Any], context: Any) -> str:
        calls.append(event["action"])
        if event["action"] == "fail":
            raise ValueError("bad event")
        return "ok"

    entry = lambda_entry_point(handler)
    try:
        with pytest.raises(ValueError, match="bad event"):
            entry({"action": "fail"}, None)
        first_loop = entry.loop
        assert entry({"action": "work"}, None) == "ok"
        assert entry.loop is first_loop
    finally:
        entry.close()
    assert calls == ["fail", "work"]


@pytest.mark.asyncio
async def test_the_handler_context_does_not_outlive_the_handler(
    memory_store: InMemoryStore,
) -> None:
    from idemstore.lambda_runtime import current_lambda_context

    seen: list[Any] = []

    @idempotent(persistence_store=memory_store)
    async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(current_lambda_context())
        return {}

    marker = object()
    await handler({"id": "scoped"}, marker)
    assert seen == [marker]
    assert current_lambda_context() is None
