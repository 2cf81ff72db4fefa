"""When things go wrong: fencing, retried writes, failures, cancellation, unstorable results,
expired records and stale locks.

Store doubles here forward every operation to the real store on the moto server;
they only change what the engine is told, never what is stored.
"""

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import pytest

from engine.conftest import FakeClock, key_of, order_function, overwrite, request_log
from engine.delegating import DelegatingStore
from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyInconsistentStateError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyResponseTooLargeError,
    IdempotencySerializationError,
    IdempotencyTableNotFoundError,
    RecordStatus,
    RecordStore,
)
from idemstore.engine import MAX_ACQUIRE_ATTEMPTS


async def record_or_none(store: RecordStore, key: str) -> DataRecord | None:
    try:
        return await store.get_record(key)
    except IdempotencyItemNotFoundError:
        return None


async def settled_record(
    store: RecordStore, key: str, settled: Callable[[DataRecord | None], bool]
) -> DataRecord | None:
    """The record for ``key`` (or None) once ``settled`` holds for it, for work that finishes
    in the background; gives up after two seconds and returns what is stored then."""
    record = await record_or_none(store, key)
    for _ in range(100):
        if settled(record):
            break
        await asyncio.sleep(0.02)
        record = await record_or_none(store, key)
    return record


def sleeper(store: RecordStore, started: asyncio.Event) -> Callable[..., Coroutine[Any, Any, None]]:
    """An idempotent ``process(order=...)`` that sets ``started`` and sleeps until cancelled."""

    @order_function(store)
    async def process(order: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(30)

    return process


# --- fencing ----------------------------------------------------------------------------


class Usurper:
    """Another caller that takes over the lock a running call holds; ``record`` is what it
    wrote in the table."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.record: DataRecord | None = None

    async def take_over(
        self, process: Any, order: dict[str, Any], *, extend_lease_ms: int = 0, **changes: Any
    ) -> None:
        """Write the in-progress record ``process`` holds for ``order`` again, under another
        owner, its lease extended by ``extend_lease_ms`` and with ``changes``."""
        ours = await self.store.get_record(key_of(process, order))
        assert ours.status is RecordStatus.INPROGRESS
        assert ours.in_progress_expiry_timestamp is not None
        self.record = replace(
            ours,
            owner_token="another-caller",
            in_progress_expiry_timestamp=ours.in_progress_expiry_timestamp + extend_lease_ms,
            **changes,
        )
        await overwrite(self.store, self.record)


@pytest.fixture
def usurper(store: RecordStore) -> Usurper:
    """Another caller on the test's store, to take over the lock of a call while it runs."""
    return Usurper(store)


@pytest.mark.asyncio
@pytest.mark.server
async def test_finisher_whose_lock_was_taken_over_gets_its_result_back(
    store: RecordStore, usurper: Usurper
) -> None:
    @order_function(store)
    async def process(order: dict[str, Any]) -> dict[str, Any]:
        await usurper.take_over(process, order, extend_lease_ms=60_000)
        return {"computed": order["id"]}

    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await process(order={"id": 1})
    assert caught.value.result == {"computed": 1}
    assert caught.value.current_record == usurper.record
    assert await store.get_record(key_of(process, {"id": 1})) == usurper.record


@pytest.mark.asyncio
async def test_finisher_cannot_overwrite_a_record_completed_by_another(
    store: RecordStore, usurper: Usurper
) -> None:
    @order_function(store)
    async def process(order: dict[str, Any]) -> str:
        await usurper.take_over(
            process, order, status=RecordStatus.COMPLETED, response_data='"theirs"'
        )
        return "ours"

    with pytest.raises(IdempotencyLeaseLostError, match="completed by another caller") as caught:
        await process(order={"id": 1})
    assert caught.value.result == "ours"
    assert await process(order={"id": 1}) == "theirs"


@pytest.mark.asyncio
@pytest.mark.server
async def test_failing_finisher_does_not_release_the_new_owners_lock(
    store: RecordStore, usurper: Usurper
) -> None:
    @order_function(store)
    async def process(order: dict[str, Any]) -> None:
        await usurper.take_over(process, order)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await process(order={"id": 1})
    assert await store.get_record(key_of(process, {"id": 1})) == usurper.record


@pytest.mark.asyncio
async def test_heartbeat_stops_renewing_a_lock_taken_over(
    store: RecordStore, usurper: Usurper
) -> None:
    lease = 0.3
    renewed_before_loss: list[int] = []
    log = await request_log(store)

    @order_function(store, IdempotencyConfig(in_progress_lease_seconds=lease))
    async def process(order: dict[str, Any]) -> str:
        await usurper.take_over(process, order)
        renewals = log.operations.count("UpdateItem")
        renewed_before_loss.append(renewals)
        # Let several renewal periods pass: the first renewal finds the lock gone and stops.
        for _ in range(50):
            await asyncio.sleep(lease / 3)
            if log.operations.count("UpdateItem") > renewals:
                break
        await asyncio.sleep(lease)
        return "done"

    with pytest.raises(IdempotencyLeaseLostError):
        await process(order={"id": 1})
    assert await store.get_record(key_of(process, {"id": 1})) == usurper.record
    # One refused renewal, then the refused completion: renewal stopped after the loss.
    assert log.operations.count("UpdateItem") == renewed_before_loss[0] + 2


# --- retried writes whose first attempt was applied --------------------------------------


class RetriedWrites(DelegatingStore):
    """Every write reaches the table twice: the first attempt is applied but its response
    is lost, and the retry's outcome is what the engine hears (a botocore retry, as the
    server sees it)."""

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        await self.inner.put_record(record, now=now)
        await self.inner.put_record(record, now=now)

    async def update_record(self, record: DataRecord) -> None:
        await self.inner.update_record(record)
        await self.inner.update_record(record)

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        for _ in range(2):
            await self.inner.renew_lease(
                record, in_progress_expiry_timestamp=in_progress_expiry_timestamp
            )

    async def delete_record(self, record: DataRecord) -> None:
        await self.inner.delete_record(record)
        await self.inner.delete_record(record)


@pytest.mark.asyncio
async def test_retried_acquire_and_completion_are_recognised_as_ours(
    store: RecordStore,
) -> None:
    log = await request_log(store)
    runs: list[Any] = []

    @order_function(RetriedWrites(store), IdempotencyConfig(in_progress_lease_seconds=0.15))
    async def process(order: dict[str, Any]) -> dict[str, Any]:
        runs.append(order)
        await asyncio.sleep(0.1)  # long enough for a lease renewal
        return {"done": order["id"]}

    assert await process(order={"id": 1}) == {"done": 1}
    assert runs == [{"id": 1}]
    assert log.operations[:2] == ["PutItem", "PutItem"]
    assert log.operations[-2:] == ["UpdateItem", "UpdateItem"]
    record = await store.get_record(key_of(process, {"id": 1}))
    assert record.status is RecordStatus.COMPLETED
    assert await process(order={"id": 1}) == {"done": 1}
    assert len(runs) == 1


@pytest.mark.asyncio
async def test_retried_release_after_a_failure_keeps_the_original_error(
    store: RecordStore,
) -> None:
    log = await request_log(store)

    @order_function(RetriedWrites(store))
    async def process(order: dict[str, Any]) -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await process(order={"id": 1})
    assert log.operations == ["PutItem", "PutItem", "DeleteItem", "DeleteItem"]
    assert await record_or_none(store, key_of(process, {"id": 1})) is None


# --- the function raises -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_function_error_releases_the_record_and_propagates(
    store: RecordStore,
) -> None:
    attempts: list[int] = []

    @order_function(store)
    async def process(order: dict[str, Any]) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("downstream failed")
        return "second time lucky"

    with pytest.raises(ConnectionError, match="downstream failed") as caught:
        await process(order={"id": 1})
    assert type(caught.value) is ConnectionError
    assert await record_or_none(store, key_of(process, {"id": 1})) is None
    assert await process(order={"id": 1}) == "second time lucky"
    assert len(attempts) == 2


@pytest.mark.asyncio
async def test_release_failing_too_carries_both_errors(dynamo_store: AsyncDynamoStore) -> None:
    store = dynamo_store

    @order_function(store)
    async def process(order: dict[str, Any]) -> None:
        client = await store.client()
        await client.delete_table(TableName=store.table_name)
        raise ValueError("bad order")

    with pytest.raises(
        IdempotencyPersistenceLayerError, match="after the function raised"
    ) as caught:
        await process(order={"id": 1})
    error = caught.value
    assert type(error) is IdempotencyPersistenceLayerError
    assert isinstance(error.function_error, ValueError)
    assert str(error.function_error) == "bad order"
    assert isinstance(error.__cause__, IdempotencyTableNotFoundError)


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_releases_the_record(store: RecordStore) -> None:
    log = await request_log(store)

    @order_function(store)
    async def process(order: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(process(order={"id": 1}), timeout=1.0)
    assert log.operations == ["PutItem", "DeleteItem"]
    assert await record_or_none(store, key_of(process, {"id": 1})) is None


@pytest.mark.asyncio
@pytest.mark.server
async def test_task_cancel_releases_the_record(store: RecordStore) -> None:
    log = await request_log(store)
    started = asyncio.Event()
    process = sleeper(store, started)

    task = asyncio.create_task(process(order={"id": 1}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert log.operations == ["PutItem", "DeleteItem"]
    assert await record_or_none(store, key_of(process, {"id": 1})) is None


class SlowCompletion(DelegatingStore):
    """A completion that takes a while to reach the table (a slow network)."""

    async def update_record(self, record: DataRecord) -> None:
        await asyncio.sleep(0.2)
        await self.inner.update_record(record)


@pytest.mark.asyncio
@pytest.mark.server
async def test_timeout_during_completion_still_records_the_result(
    store: RecordStore,
) -> None:
    runs: list[int] = []

    @order_function(SlowCompletion(store))
    async def process(order: dict[str, Any]) -> str:
        runs.append(1)
        # The caller's timeout fires while the (slow) completion is on its way.
        deadline.reschedule(asyncio.get_running_loop().time() + 0.05)
        return "charged"

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            await process(order={"id": 1})
    key = key_of(process, {"id": 1})
    # The function ran: its result is recorded, not left behind an orphaned lock.
    # The completion finishes in the background.
    record = await settled_record(
        store, key, lambda r: r is None or r.status is not RecordStatus.INPROGRESS
    )
    assert record is not None
    assert record.status is RecordStatus.COMPLETED
    assert await process(order={"id": 1}) == "charged"
    assert runs == [1]


class SlowRelease(DelegatingStore):
    """A release that takes a while to reach the table; says when it has begun."""

    def __init__(self, inner: RecordStore) -> None:
        super().__init__(inner)
        self.releasing = asyncio.Event()

    async def delete_record(self, record: DataRecord) -> None:
        self.releasing.set()
        await asyncio.sleep(0.1)
        await self.inner.delete_record(record)


@pytest.mark.asyncio
async def test_release_is_shielded_from_a_second_cancellation(
    store: RecordStore,
) -> None:
    slow = SlowRelease(store)
    started = asyncio.Event()
    process = sleeper(slow, started)

    task = asyncio.create_task(process(order={"id": 1}))
    await started.wait()
    task.cancel()
    await slow.releasing.wait()
    task.cancel()  # impatient caller: cancel again while the release is on its way
    with pytest.raises(asyncio.CancelledError):
        await task
    key = key_of(process, {"id": 1})
    # The release finishes in the background.
    assert await settled_record(store, key, lambda r: r is None) is None


# --- results that cannot be stored -----------------------------------------------------------


@pytest.mark.asyncio
async def test_unserializable_result_is_an_error_and_releases(
    store: RecordStore,
) -> None:
    log = await request_log(store)

    @order_function(store)
    async def process(order: dict[str, Any]) -> Any:
        return {"handle": object()}

    with pytest.raises(IdempotencySerializationError, match="cannot be stored as JSON") as caught:
        await process(order={"id": 1})
    assert isinstance(caught.value.__cause__, TypeError)
    assert log.operations == ["PutItem", "DeleteItem"]
    assert await record_or_none(store, key_of(process, {"id": 1})) is None


@pytest.mark.asyncio
async def test_result_too_large_even_compressed_is_an_error_and_releases(
    store: RecordStore,
) -> None:
    log = await request_log(store)
    incompressible = base64.b64encode(os.urandom(600_000)).decode()

    @order_function(store)
    async def process(order: dict[str, Any]) -> str:
        return incompressible

    with pytest.raises(IdempotencyResponseTooLargeError, match="compressed") as caught:
        await process(order={"id": 1})
    assert caught.value.size_bytes > caught.value.limit_bytes
    assert log.operations == ["PutItem", "DeleteItem"]
    assert await record_or_none(store, key_of(process, {"id": 1})) is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("size", "compressed"),
    [(40_000, False), (600_000, True)],
    ids=["fits as text", "above item limit"],
)
async def test_large_results_are_compressed_only_when_they_do_not_fit(
    dynamo_store: AsyncDynamoStore, size: int, compressed: bool
) -> None:
    store = dynamo_store
    log = await request_log(store)
    text = ("order line, " * (size // 12 + 1))[:size]
    runs: list[int] = []

    @order_function(store)
    async def process(order: dict[str, Any]) -> dict[str, str]:
        runs.append(1)
        return {"text": text}

    assert await process(order={"id": 1}) == {"text": text}
    client = await store.client()
    item = (
        await client.get_item(
            TableName=store.table_name,
            Key=store.schema.key(key_of(process, {"id": 1})),
        )
    )["Item"]
    if compressed:
        assert "data" not in item
        assert len(item["data_zlib"]["B"]) < size // 10
    else:
        assert "data_zlib" not in item
        assert json.loads(item["data"]["S"]) == {"text": text}
    log.clear()
    assert await process(order={"id": 1}) == {"text": text}
    assert log.operations == ["PutItem"]
    assert runs == [1]


# --- expired records, stale locks, bounded retries ---------------------------------------------


@pytest.mark.asyncio
@pytest.mark.server
async def test_expired_record_is_taken_over(store: RecordStore) -> None:
    clock = FakeClock(time.time())
    log = await request_log(store)
    runs: list[float] = []

    @order_function(store, IdempotencyConfig(expires_after_seconds=60, clock=clock))
    async def process(order: dict[str, Any]) -> int:
        runs.append(clock())
        return len(runs)

    assert await process(order={"id": 1}) == 1
    clock.advance(30)
    assert await process(order={"id": 1}) == 1
    clock.advance(31)
    log.clear()
    assert await process(order={"id": 1}) == 2
    assert log.operations == ["PutItem", "UpdateItem"]
    record = await store.get_record(key_of(process, {"id": 1}))
    assert record.expiry_timestamp == int(clock()) + 60


def foreign_lock(key: str, clock: FakeClock, *, lock_ms_left: int) -> DataRecord:
    return DataRecord(
        idempotency_key=key,
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=int(clock()) + 3600,
        in_progress_expiry_timestamp=int(clock() * 1000) + lock_ms_left,
        owner_token="another-caller",
    )


@pytest.mark.asyncio
@pytest.mark.server
async def test_live_lock_of_another_caller_is_in_progress(store: RecordStore) -> None:
    clock = FakeClock(time.time())

    @order_function(store, IdempotencyConfig(clock=clock))
    async def process(order: dict[str, Any]) -> None:
        raise AssertionError("must not run")

    lock = foreign_lock(key_of(process, {"id": 1}), clock, lock_ms_left=10_000)
    await store.put_record(lock, now=clock())
    log = await request_log(store)
    with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
        await process(order={"id": 1})
    assert caught.value.old_data_record == lock
    assert log.operations == ["PutItem"]


@pytest.mark.asyncio
@pytest.mark.server
async def test_stale_lock_is_taken_over(store: RecordStore) -> None:
    clock = FakeClock(time.time())
    runs: list[int] = []

    @order_function(store, IdempotencyConfig(clock=clock))
    async def process(order: dict[str, Any]) -> str:
        runs.append(1)
        return "recovered"

    lock = foreign_lock(key_of(process, {"id": 1}), clock, lock_ms_left=10_000)
    await store.put_record(lock, now=clock())
    clock.advance(11)  # the other caller died; its lock lapsed
    log = await request_log(store)
    assert await process(order={"id": 1}) == "recovered"
    assert log.operations == ["PutItem", "UpdateItem"]
    record = await store.get_record(key_of(process, {"id": 1}))
    assert record.status is RecordStatus.COMPLETED
    assert record.owner_token != "another-caller"


class AlwaysStale(DelegatingStore):
    """A record that looks stale each time it is returned but never is at the server:
    a permanent race, or a client clock far ahead of the other callers'."""

    def __init__(self, inner: RecordStore) -> None:
        super().__init__(inner)
        self.put_attempts = 0

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        self.put_attempts += 1
        try:
            await self.inner.put_record(record, now=now)
        except IdempotencyItemAlreadyExistsError as exc:
            found = exc.old_data_record
            assert found is not None
            stale = replace(found, in_progress_expiry_timestamp=0)
            raise IdempotencyItemAlreadyExistsError(str(exc), old_data_record=stale) from exc


@pytest.mark.asyncio
async def test_retries_after_stale_records_are_bounded(store: RecordStore) -> None:
    clock = FakeClock(time.time())
    stale = AlwaysStale(store)

    @order_function(stale, IdempotencyConfig(clock=clock, wait_for_in_progress_seconds=0.2))
    async def process(order: dict[str, Any]) -> None:
        raise AssertionError("must not run")

    lock = foreign_lock(key_of(process, {"id": 1}), clock, lock_ms_left=10_000)
    await store.put_record(lock, now=clock())
    log = await request_log(store)
    with pytest.raises(IdempotencyInconsistentStateError, match="gave up after"):
        await process(order={"id": 1})
    assert stale.put_attempts == MAX_ACQUIRE_ATTEMPTS
    assert log.operations == ["PutItem"] * MAX_ACQUIRE_ATTEMPTS
    assert await store.get_record(lock.idempotency_key) == lock
