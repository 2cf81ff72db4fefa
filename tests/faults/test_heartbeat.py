"""A function running longer than its lease: the heartbeat keeps the lock.

The lease here is 1.5 s and the function runs until the test lets it finish,
well past the first lease; a duplicate arriving then must not run.
"""

from __future__ import annotations

import asyncio

import pytest

from faults.helpers import BodyRuns, Job, gated_function, key_of, stored, until_lock_ends
from faults.proxy import FaultProxy
from idemstore import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    RecordStatus,
)
from idemstore.stores.dynamo import AsyncDynamoStore

LEASE = 1.5


def long_function(
    store: AsyncDynamoStore, runs: BodyRuns, started: asyncio.Event, finish: asyncio.Event
) -> Job:
    config = IdempotencyConfig(in_progress_lease_seconds=LEASE)
    return gated_function(store, runs, started, finish, config=config, key_prefix="long")


@pytest.mark.asyncio
async def test_heartbeat_keeps_the_lock_and_a_duplicate_does_not_run(
    fault_proxy: FaultProxy, faulty_store: AsyncDynamoStore, direct_store: AsyncDynamoStore
) -> None:
    runs, started, finish = BodyRuns(), asyncio.Event(), asyncio.Event()
    long_job = long_function(faulty_store, runs, started, finish)
    task = asyncio.create_task(long_job(job="report"))
    await started.wait()
    key = key_of(long_job, "report")
    first = await stored(direct_store, key)
    assert first is not None
    assert first.in_progress_expiry_timestamp is not None

    await until_lock_ends(first, margin=0.1)  # the first lease is over; the renewed one is not

    held = await stored(direct_store, key)
    assert held is not None
    assert held.status is RecordStatus.INPROGRESS
    assert held.owner_token == first.owner_token
    assert held.in_progress_expiry_timestamp is not None
    assert held.in_progress_expiry_timestamp > first.in_progress_expiry_timestamp
    renewals = fault_proxy.requests("UpdateItem")
    assert renewals, "the heartbeat renewed the lease"
    # A duplicate from another engine (another process, in effect) is refused.
    other = long_function(faulty_store, runs, asyncio.Event(), asyncio.Event())
    with pytest.raises(IdempotencyAlreadyInProgressError):
        await other(job="report")
    assert runs.count == 1

    finish.set()
    assert await task == "done report #1"
    assert runs.count == 1
    done = await stored(direct_store, key)
    assert done is not None
    assert done.status is RecordStatus.COMPLETED
    assert done.owner_token == first.owner_token
    assert await other(job="report") == "done report #1"
    assert runs.count == 1
    # Renewal requests are fenced: each carries the owner's token in its condition.
    assert first.owner_token is not None
    for request in renewals:
        assert first.owner_token in str(request.body["ExpressionAttributeValues"])
