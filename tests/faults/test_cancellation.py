"""Cancellation and timeouts, mid-function and mid-request.

The caller's cancellation always propagates. The lock is released (or never
taken); a result already computed is stored rather than thrown away. A request
already on the wire when the caller is cancelled is left to finish in the
background, so those tests poll the table for the settled state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from faults.helpers import (
    BodyRuns,
    completed_result,
    eventually,
    gated_function,
    key_of,
    status_of,
    stored,
)
from faults.proxy import FaultKind, FaultProxy
from idemstore import IdempotencyConfig, RecordStatus, idempotent_function
from idemstore.stores.dynamo import AsyncDynamoStore

Job = Callable[..., Coroutine[Any, Any, str]]


def job_function(
    store: AsyncDynamoStore, runs: BodyRuns, started: asyncio.Event, *, seconds: float = 30
) -> Job:
    @idempotent_function(data_keyword_argument="job", persistence_store=store, key_prefix="jobs")
    async def run_job(job: str) -> str:
        runs.record(job)
        started.set()
        await asyncio.sleep(seconds)
        return f"done {job}"

    return run_job


def gone(store: AsyncDynamoStore, key: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await stored(store, key) is None

    return check


@pytest.fixture
def started() -> asyncio.Event:
    """Set when a body starts."""
    return asyncio.Event()


@pytest.fixture
def run_job(faulty_store: AsyncDynamoStore, runs: BodyRuns, started: asyncio.Event) -> Job:
    """A 30-second job through the fault proxy, counted in ``runs``."""
    return job_function(faulty_store, runs, started)


GiveUp = Callable[[asyncio.Event, Coroutine[Any, Any, str]], Awaitable[None]]
"""A way for the caller to give up on ``call`` (once the event is set, if it waits for it)."""


async def cancel_once(reached: asyncio.Event, call: Coroutine[Any, Any, str]) -> None:
    """Start ``call`` and cancel it once ``reached`` is set: the caller sees the cancellation."""
    task = asyncio.create_task(call)
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def time_out_once(reached: asyncio.Event, call: Coroutine[Any, Any, str]) -> None:
    """Run ``call`` under an ``asyncio.timeout`` whose deadline passes once ``reached`` is set."""
    timeouts: list[asyncio.Timeout] = []

    async def call_with_timeout() -> str:
        async with asyncio.timeout(None) as timeout:
            timeouts.append(timeout)
            return await call

    task = asyncio.create_task(call_with_timeout())
    await reached.wait()
    timeouts[0].reschedule(asyncio.get_running_loop().time())  # the deadline passes now
    with pytest.raises(TimeoutError):
        await task


async def wait_for_times_out(reached: asyncio.Event, call: Coroutine[Any, Any, str]) -> None:
    """Give ``call`` 0.3 s with ``asyncio.wait_for``; a fixed deadline, not ``reached``:
    shorter than a stall, which lasts until the client's 1 s read timeout."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, timeout=0.3)


# --- mid-function ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "give_up", [cancel_once, time_out_once], ids=["task-cancel", "asyncio-timeout"]
)
async def test_giving_up_mid_function_releases_the_lock(
    give_up: GiveUp,
    fault_proxy: FaultProxy,
    run_job: Job,
    runs: BodyRuns,
    started: asyncio.Event,
    direct_store: AsyncDynamoStore,
) -> None:
    await give_up(started, run_job(job="a"))

    assert runs.count == 1
    assert fault_proxy.operations == ["PutItem", "DeleteItem"]
    # The release completed before the cancellation reached the caller.
    assert await stored(direct_store, key_of(run_job, "a")) is None


# --- mid-request -----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("applied", [False, True], ids=["held", "applied"])
@pytest.mark.parametrize(
    "give_up", [cancel_once, wait_for_times_out], ids=["task-cancel", "wait-for-timeout"]
)
async def test_giving_up_during_the_lock_put_leaves_no_lock(
    give_up: GiveUp,
    applied: bool,
    fault_proxy: FaultProxy,
    run_job: Job,
    runs: BodyRuns,
    faulty_store: AsyncDynamoStore,
    direct_store: AsyncDynamoStore,
) -> None:
    await faulty_store.client()  # the client exists: a deadline falls in the request
    stall = fault_proxy.inject(FaultKind.STALL, operation="PutItem", forward=applied)
    await give_up(stall.reached, run_job(job="c"))

    assert runs.count == 0
    key = key_of(run_job, "c")
    assert await eventually(gone(direct_store, key))
    # Not stuck: the next call takes the lock at once.
    quick = job_function(faulty_store, runs, asyncio.Event(), seconds=0)
    assert await quick(job="c") == "done c"
    assert runs.count == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("applied", [False, True], ids=["held", "applied"])
async def test_cancel_during_completion_still_stores_the_result(
    applied: bool,
    fault_proxy: FaultProxy,
    faulty_store: AsyncDynamoStore,
    runs: BodyRuns,
    started: asyncio.Event,
    direct_store: AsyncDynamoStore,
) -> None:
    run_job = job_function(faulty_store, runs, started, seconds=0)
    stall = fault_proxy.inject(FaultKind.STALL, operation="UpdateItem", forward=applied)
    await cancel_once(stall.reached, run_job(job="e"))

    assert runs.count == 1
    key = key_of(run_job, "e")

    async def completed() -> bool:
        return await status_of(direct_store, key) is RecordStatus.COMPLETED

    # The function ran: its result is stored (the stalled attempt times out and
    # is retried), not thrown away with a released lock that would run it again.
    assert await eventually(completed)
    assert await completed_result(direct_store, key) == "done e"
    assert await run_job(job="e") == "done e"
    assert runs.count == 1


@pytest.mark.asyncio
async def test_a_cancelled_leader_does_not_strand_its_waiters(
    faulty_store: AsyncDynamoStore, direct_store: AsyncDynamoStore
) -> None:
    runs, started, finish = BodyRuns(), asyncio.Event(), asyncio.Event()
    config = IdempotencyConfig(wait_for_in_progress_seconds=10)
    run_job = gated_function(faulty_store, runs, started, finish, config=config, key_prefix="jobs")

    leader = asyncio.create_task(run_job(job="f"))
    await started.wait()
    started.clear()
    waiters = [asyncio.create_task(run_job(job="f")) for _ in range(3)]
    await asyncio.sleep(0)  # the waiters attach to the leader's call

    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await started.wait()  # one waiter took the released lock and runs
    finish.set()

    assert await asyncio.gather(*waiters) == ["done f #2"] * 3
    assert runs.count == 2
    assert await status_of(direct_store, key_of(run_job, "f")) is RecordStatus.COMPLETED
