"""Clock skew between callers (the clock is injected: ``IdempotencyConfig(clock=...)``).

Lock and record expiry are compared against the acquirer's clock, sent with its
conditional put. Hence the bound: a caller whose clock runs S seconds ahead of
the lock owner's sees the lock end S seconds early, and a completed record
expire S seconds early. Inside those windows nothing runs twice; beyond them a
take-over can happen, and fencing still leaves exactly one stored result.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from faults.helpers import BodyRuns, completed_result, key_of, stored
from idemstore import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyLeaseLostError,
    RecordStatus,
    idempotent_function,
)
from idemstore.codec import to_item
from idemstore.config import Clock
from idemstore.records import DataRecord
from idemstore.stores.dynamo import AsyncDynamoStore

SKEW = 30.0
Job = Callable[..., Coroutine[Any, Any, str]]


def offset_clock(seconds: float) -> Clock:
    return lambda: time.time() + seconds


def job_function(
    store: AsyncDynamoStore,
    runs: BodyRuns,
    *,
    clock: Clock,
    lease: float = 60.0,
    expires_after: int = 3600,
    started: asyncio.Event | None = None,
    finish: asyncio.Event | None = None,
    label: str = "",
) -> Job:
    config = IdempotencyConfig(
        clock=clock, in_progress_lease_seconds=lease, expires_after_seconds=expires_after
    )

    @idempotent_function(
        data_keyword_argument="job", persistence_store=store, config=config, key_prefix="skew"
    )
    async def run_job(job: str) -> str:
        runs.record(label)
        if started is not None:
            started.set()
        if finish is not None:
            await finish.wait()
        return f"{job} by {label}"

    return run_job


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("owner_offset", "other_offset"),
    [(0.0, SKEW), (0.0, -SKEW), (-SKEW, 0.0), (SKEW, 0.0)],
    ids=["other-ahead", "other-behind", "owner-behind", "owner-ahead"],
)
async def test_skew_inside_the_lock_window_never_runs_twice(
    owner_offset: float, other_offset: float, direct_store: AsyncDynamoStore
) -> None:
    runs, started, finish = BodyRuns(), asyncio.Event(), asyncio.Event()
    owner = job_function(
        direct_store,
        runs,
        clock=offset_clock(owner_offset),
        started=started,
        finish=finish,
        label="owner",
    )
    other = job_function(direct_store, runs, clock=offset_clock(other_offset), label="other")
    task = asyncio.create_task(owner(job="j"))
    await started.wait()

    with pytest.raises(IdempotencyAlreadyInProgressError):
        await other(job="j")

    finish.set()
    assert await task == "j by owner"
    assert await other(job="j") == "j by owner"
    assert runs.calls == ["owner"]
    assert await completed_result(direct_store, key_of(owner, "j")) == "j by owner"


@pytest.mark.asyncio
async def test_skew_beyond_the_lease_takes_over_early_and_fencing_keeps_one_result(
    direct_store: AsyncDynamoStore,
) -> None:
    # The documented bound: a 10 s lease cannot hold against a clock 30 s ahead.
    runs, started, finish = BodyRuns(), asyncio.Event(), asyncio.Event()
    owner = job_function(
        direct_store, runs, clock=time.time, lease=10, started=started, finish=finish, label="owner"
    )
    ahead = job_function(direct_store, runs, clock=offset_clock(SKEW), lease=10, label="ahead")
    task = asyncio.create_task(owner(job="k"))
    await started.wait()

    assert await ahead(job="k") == "k by ahead"  # the lock looked 20 s stale to it
    finish.set()
    with pytest.raises(IdempotencyLeaseLostError) as lost:
        await task

    assert runs.calls == ["owner", "ahead"]
    assert lost.value.result == "k by owner"
    record = await stored(direct_store, key_of(owner, "k"))
    assert record is not None
    assert lost.value.current_record == record
    assert json.loads(record.response_data or "") == "k by ahead"


@pytest.mark.asyncio
async def test_a_caller_behind_waits_longer_for_a_stale_lock(
    direct_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    behind = job_function(direct_store, runs, clock=offset_clock(-SKEW), label="behind")
    on_time = job_function(direct_store, runs, clock=time.time, label="on time")
    now = time.time()
    dead_lock = DataRecord(
        idempotency_key=key_of(behind, "s"),
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=int(now) + 3600,
        in_progress_expiry_timestamp=int((now - 5) * 1000),  # lapsed 5 s ago
        owner_token="crashed-owner",
    )
    await direct_store.put_record(dead_lock, now=now)

    # 30 s behind, the lock still has 25 s to run: liveness suffers, safety does not.
    with pytest.raises(IdempotencyAlreadyInProgressError):
        await behind(job="s")
    assert await on_time(job="s") == "s by on time"
    assert runs.calls == ["on time"]


@pytest.mark.asyncio
async def test_skew_beyond_the_expiry_window_runs_again(direct_store: AsyncDynamoStore) -> None:
    # Records are kept 20 s here; to a clock 30 s ahead a fresh result has expired.
    runs = BodyRuns()
    first = job_function(direct_store, runs, clock=time.time, expires_after=20, label="first")
    ahead = job_function(
        direct_store, runs, clock=offset_clock(SKEW), expires_after=20, label="ahead"
    )
    inside = job_function(
        direct_store, runs, clock=offset_clock(SKEW / 3), expires_after=20, label="inside"
    )

    assert await first(job="e") == "e by first"
    assert await inside(job="e") == "e by first"  # 10 s ahead: still inside the window
    assert await ahead(job="e") == "e by ahead"
    assert runs.calls == ["first", "ahead"]


@pytest.mark.asyncio
async def test_an_expired_record_the_ttl_has_not_deleted_yet_is_replaced(
    direct_store: AsyncDynamoStore,
) -> None:
    # DynamoDB deletes expired items lazily (often days later): the acquire
    # condition compares the expiry itself, so such an item is never replayed.
    runs = BodyRuns()
    fresh = job_function(direct_store, runs, clock=time.time, label="fresh")
    now = time.time()
    expired = DataRecord(
        idempotency_key=key_of(fresh, "t"),
        status=RecordStatus.COMPLETED,
        expiry_timestamp=int(now) - 1,
        response_data=json.dumps("t by a caller long ago"),
        owner_token="long-ago",
    )
    client = await direct_store.client()
    await client.put_item(
        TableName=direct_store.table_name, Item=to_item(direct_store.schema, expired)
    )

    assert await fresh(job="t") == "t by fresh"

    assert runs.calls == ["fresh"]
    record = await stored(direct_store, key_of(fresh, "t"))
    assert record is not None
    assert record.owner_token != "long-ago"
    assert json.loads(record.response_data or "") == "t by fresh"
