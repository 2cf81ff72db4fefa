"""The record-store contract, run against every store: DynamoDB (moto), in memory, Redis.

Each test runs on five stores: DynamoDB and in memory, each with a simple key and
in sort-key mode, and Redis (a real server; its key is the idempotency key, so it
has no sort-key mode). The stores must agree because the engine relies on this
contract alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
import pytest_asyncio
from store_records import NOW, NOW_MS, completed, lock

from idemstore.errors import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyLeaseLostError,
)
from idemstore.records import DataRecord
from idemstore.stores.contract import RecordStore
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore
from idemstore.table import TableSchema
from idemstore.tables import create_table
from idemstore.testing import MotoEndpoint

STATIC_PK = "idempotency#conformance"


@pytest_asyncio.fixture
async def dynamo_sort_key_store(moto_server: MotoEndpoint) -> AsyncIterator[AsyncDynamoStore]:
    store = moto_server.store(
        f"idemstore-sk-{uuid.uuid4().hex[:12]}", sort_key_attr="sk", static_pk_value=STATIC_PK
    )
    await create_table(store)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def memory_sort_key_store() -> InMemoryStore:
    return InMemoryStore(TableSchema(sort_key_attr="sk", static_pk_value=STATIC_PK))


@pytest.fixture(
    params=[
        "dynamo_store",
        "memory_store",
        "dynamo_sort_key_store",
        "memory_sort_key_store",
        "redis_store",
    ]
)
def store(request: pytest.FixtureRequest) -> RecordStore:
    found: RecordStore = request.getfixturevalue(request.param)
    return found


def stale(held: DataRecord) -> DataRecord:
    """The same lock with its deadline passed, the record itself still live."""
    return replace(held, in_progress_expiry_timestamp=NOW_MS - 1)


# --- acquire ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_put_then_get_round_trip(store: RecordStore) -> None:
    first, second = lock("t1"), lock("t2", key="fn.mod.f#k2", payload_hash=None)
    await store.put_record(first, now=NOW)
    await store.put_record(second, now=NOW)
    assert await store.get_record(first.idempotency_key) == first
    assert await store.get_record(second.idempotency_key) == second


@pytest.mark.asyncio
async def test_get_of_a_missing_key_is_not_found(store: RecordStore) -> None:
    with pytest.raises(IdempotencyItemNotFoundError) as caught:
        await store.get_record("fn.mod.f#nothing")
    assert caught.value.idempotency_key == "fn.mod.f#nothing"


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param(lock("t1"), id="live-lock"),
        pytest.param(completed(lock("t1")), id="completed"),
        pytest.param(lock("t1", in_progress_expiry_timestamp=None), id="lock-without-deadline"),
        pytest.param(lock("t1", in_progress_expiry_timestamp=NOW_MS), id="lock-ends-now"),
        pytest.param(completed(stale(lock("t1"))), id="completed-after-lock-deadline"),
    ],
)
@pytest.mark.asyncio
async def test_put_over_a_live_record_raises_with_that_record(
    store: RecordStore, holder: DataRecord
) -> None:
    await store.put_record(holder, now=NOW)
    with pytest.raises(IdempotencyItemAlreadyExistsError) as caught:
        await store.put_record(lock("t2"), now=NOW)
    assert caught.value.old_data_record == holder
    assert await store.get_record(holder.idempotency_key) == holder


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param(completed(lock("t1", expiry_timestamp=int(NOW) - 1)), id="expired-result"),
        pytest.param(lock("t1", expiry_timestamp=int(NOW) - 1), id="expired-lock"),
        pytest.param(stale(lock("t1")), id="stale-lock"),
    ],
)
@pytest.mark.asyncio
async def test_put_takes_over_an_expired_record_or_a_stale_lock(
    store: RecordStore, holder: DataRecord
) -> None:
    await store.put_record(holder, now=NOW - 3600)
    challenger = lock("t2")
    await store.put_record(challenger, now=NOW)
    assert await store.get_record(challenger.idempotency_key) == challenger


@pytest.mark.asyncio
async def test_a_retried_put_finding_our_own_lock_succeeds(store: RecordStore) -> None:
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    await store.put_record(ours, now=NOW)  # the first attempt's response was lost
    assert await store.get_record(ours.idempotency_key) == ours


# --- complete -----------------------------------------------------------------


@pytest.mark.parametrize(
    "attempts",
    [
        pytest.param(1, id="completes-our-lock"),
        pytest.param(2, id="retried-after-its-response-was-lost"),
    ],
)
@pytest.mark.asyncio
async def test_update_completes_our_lock(store: RecordStore, attempts: int) -> None:
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    done = completed(ours)
    for _ in range(attempts):  # a second attempt finds our own completion: success
        await store.update_record(done)
    assert await store.get_record(ours.idempotency_key) == done


@pytest.mark.asyncio
async def test_update_with_another_token_loses_the_lease(store: RecordStore) -> None:
    late = lock("t1")
    await store.put_record(stale(late), now=NOW - 120)
    taker = lock("t2")
    await store.put_record(taker, now=NOW)  # takes over the stale lock
    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await store.update_record(completed(late))
    assert caught.value.current_record == taker
    assert caught.value.idempotency_key == late.idempotency_key
    assert await store.get_record(late.idempotency_key) == taker


@pytest.mark.asyncio
async def test_update_over_a_record_completed_by_another_loses_the_lease(
    store: RecordStore,
) -> None:
    late = lock("t1")
    await store.put_record(stale(late), now=NOW - 120)
    taker = lock("t2")
    await store.put_record(taker, now=NOW)
    await store.update_record(completed(taker, '"theirs"'))
    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await store.update_record(completed(late, '"ours"'))
    assert caught.value.current_record == completed(taker, '"theirs"')
    assert await store.get_record(late.idempotency_key) == completed(taker, '"theirs"')


@pytest.mark.asyncio
async def test_update_of_a_gone_record_loses_the_lease_and_creates_nothing(
    store: RecordStore,
) -> None:
    gone = lock("t1")
    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await store.update_record(completed(gone))
    assert caught.value.current_record is None
    with pytest.raises(IdempotencyItemNotFoundError):
        await store.get_record(gone.idempotency_key)


@pytest.mark.asyncio
async def test_fenced_writes_need_a_token(store: RecordStore) -> None:
    anonymous = replace(lock("t1"), owner_token=None)
    with pytest.raises(ValueError, match="owner_token"):
        await store.update_record(completed(anonymous))
    with pytest.raises(ValueError, match="owner_token"):
        await store.delete_record(anonymous)


@pytest.mark.asyncio
async def test_a_large_result_round_trips_compressed(store: RecordStore) -> None:
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    result = json.dumps([{"row": i, "text": "lorem ipsum " * 4} for i in range(6000)])
    assert len(result) > 400 * 1024  # over DynamoDB's item limit unless compressed
    done = completed(ours, result)
    await store.update_record(done)
    assert await store.get_record(ours.idempotency_key) == done


# --- renew, and the fenced writes renew and release share ---------------------


@pytest.mark.asyncio
async def test_renew_moves_our_lock_deadline(store: RecordStore) -> None:
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    await store.renew_lease(ours, in_progress_expiry_timestamp=NOW_MS + 120_000)
    renewed = await store.get_record(ours.idempotency_key)
    assert renewed == replace(ours, in_progress_expiry_timestamp=NOW_MS + 120_000)


@pytest.mark.asyncio
async def test_renew_beyond_the_expiry_keeps_the_record_alive(store: RecordStore) -> None:
    ours = lock("t1", expiry_timestamp=int(NOW) + 60)
    await store.put_record(ours, now=NOW)
    deadline = NOW_MS + 600_000
    await store.renew_lease(ours, in_progress_expiry_timestamp=deadline)
    renewed = await store.get_record(ours.idempotency_key)
    assert renewed.in_progress_expiry_timestamp == deadline
    assert renewed.expiry_timestamp > deadline // 1000
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        await store.put_record(lock("t2"), now=NOW + 300)


async def renew(store: RecordStore, record: DataRecord) -> None:
    await store.renew_lease(record, in_progress_expiry_timestamp=NOW_MS + 120_000)


async def release(store: RecordStore, record: DataRecord) -> None:
    await store.delete_record(record)


# The writes fenced on the lock's owner token, besides the completion.
FENCED_WRITES = [pytest.param(renew, id="renew"), pytest.param(release, id="release")]


async def held_by_another(store: RecordStore) -> DataRecord:
    """Another caller's lock holds the key."""
    theirs = lock("t2")
    await store.put_record(theirs, now=NOW)
    return theirs


async def completed_by_us(store: RecordStore) -> DataRecord:
    """Our own lock, completed. For a release: the completion was applied but its answer
    lost; the caller then releases the lock, which must never delete the completed result."""
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    await store.update_record(completed(ours))
    return completed(ours)


@pytest.mark.parametrize(
    "in_place",
    [
        pytest.param(held_by_another, id="another-token"),
        pytest.param(completed_by_us, id="after-our-completion"),
    ],
)
@pytest.mark.parametrize("write", FENCED_WRITES)
@pytest.mark.asyncio
async def test_a_fenced_write_of_our_lock_loses_the_lease_to_the_record_in_place(
    store: RecordStore,
    write: Callable[[RecordStore, DataRecord], Awaitable[None]],
    in_place: Callable[[RecordStore], Awaitable[DataRecord]],
) -> None:
    current = await in_place(store)
    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await write(store, lock("t1"))
    assert caught.value.current_record == current
    assert await store.get_record(current.idempotency_key) == current


@pytest.mark.asyncio
async def test_renew_after_removal_loses_the_lease(store: RecordStore) -> None:
    gone = lock("t1", key="fn.mod.f#gone")
    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await store.renew_lease(gone, in_progress_expiry_timestamp=NOW_MS + 120_000)
    assert caught.value.current_record is None


# --- release ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delete_releases_our_lock(store: RecordStore) -> None:
    ours = lock("t1")
    await store.put_record(ours, now=NOW)
    await store.delete_record(ours)
    with pytest.raises(IdempotencyItemNotFoundError):
        await store.get_record(ours.idempotency_key)
    await store.delete_record(ours)  # already gone: a retried release succeeds
    retaken = lock("t2")
    await store.put_record(retaken, now=NOW)  # free for the next caller
    assert await store.get_record(ours.idempotency_key) == retaken


@pytest.mark.asyncio
async def test_the_stores_satisfy_the_protocol(store: RecordStore) -> None:
    assert isinstance(store, RecordStore)
    assert store.schema.record_key_attr == ("sk" if store.schema.sort_key_attr else "id")


@pytest.mark.asyncio
async def test_get_records_reads_the_records_found_by_key(store: RecordStore) -> None:
    keys = [f"fn.mod.f#k{n}" for n in range(3)]
    for key in keys[:2]:
        await store.put_record(lock("t-1", key=key), now=NOW)

    # Duplicates are read once (DynamoDB would reject them); a missing key is absent.
    found = await store.get_records([keys[0], keys[2], keys[1], keys[0]])

    assert found == {key: lock("t-1", key=key) for key in keys[:2]}
    assert await store.get_records([]) == {}
