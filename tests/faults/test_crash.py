"""Crashes and late finishers: an owner SIGKILLed mid-function, and one frozen past its lease.

The dead owner's lock holds until its lease ends, then the next call runs the
function again; whatever the old owner does afterwards is fenced off by its
token, so it can neither complete nor release the new owner's record.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from faults.helpers import BodyRuns, stored, until_lock_ends, worker_processes
from idemstore import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyLeaseLostError,
    RecordStatus,
    idempotent_function,
)
from idemstore.config import Clock
from idemstore.keys import make_key
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.testing import MotoEndpoint

LEASE = "1"
KEY = make_key("crash", "job", "md5")
"""The key the workers lock: prefix ``crash``, payload ``"job"``."""

Retry = Callable[..., Awaitable[str]]


def retry_function(store: AsyncDynamoStore, runs: BodyRuns, clock: Clock = time.time) -> Retry:
    """The same function as the worker's (same key prefix), run in this process."""

    @idempotent_function(
        data_keyword_argument="key",
        persistence_store=store,
        config=IdempotencyConfig(clock=clock),
        key_prefix="crash",
    )
    async def work(key: str) -> str:
        runs.record(key)
        return "retried result"

    return work


def marker_count(marks: Path) -> int:
    return sum(1 for _ in marks.iterdir())


@pytest.mark.asyncio
async def test_sigkilled_owner_keeps_the_lock_until_its_lease_ends(
    moto_server: MotoEndpoint, direct_store: AsyncDynamoStore, tmp_path: Path
) -> None:
    args = ["hold", f"--endpoint={moto_server.url}", f"--table={direct_store.table_name}"]
    async with worker_processes(1, *args, f"--marks={tmp_path}", f"--lease={LEASE}") as (owner,):
        assert owner.stdout is not None
        assert await owner.stdout.readline() == b"running\n"
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
    assert owner.returncode == -signal.SIGKILL
    dead = await stored(direct_store, KEY)
    assert dead is not None
    assert dead.status is RecordStatus.INPROGRESS
    assert dead.in_progress_expiry_timestamp is not None
    runs = BodyRuns()

    # Before the lease ends (a clock just short of it): still in progress.
    just_before = dead.in_progress_expiry_timestamp / 1000 - 0.5
    early = retry_function(direct_store, runs, clock=lambda: just_before)
    with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
        await early(key="job")
    assert caught.value.old_data_record == dead
    assert runs.count == 0

    # After it: the function runs again, once.
    await until_lock_ends(dead)
    retry = retry_function(direct_store, runs)
    assert await retry(key="job") == "retried result"
    assert runs.count == 1
    assert marker_count(tmp_path) == 1  # the killed owner's one run
    now_held = await stored(direct_store, KEY)
    assert now_held is not None
    assert now_held.status is RecordStatus.COMPLETED
    assert now_held.owner_token != dead.owner_token

    # The dead owner's token is fenced off: it can neither complete, renew nor release.
    late = replace(dead, status=RecordStatus.COMPLETED, response_data=json.dumps("late"))
    with pytest.raises(IdempotencyLeaseLostError) as lost:
        await direct_store.update_record(late)
    assert lost.value.current_record == now_held
    with pytest.raises(IdempotencyLeaseLostError):
        await direct_store.renew_lease(dead, in_progress_expiry_timestamp=2**42)
    with pytest.raises(IdempotencyLeaseLostError):
        await direct_store.delete_record(dead)
    assert await stored(direct_store, KEY) == now_held
    assert await retry(key="job") == "retried result"
    assert runs.count == 1


@pytest.mark.asyncio
async def test_owner_frozen_past_its_lease_cannot_complete_late(
    moto_server: MotoEndpoint, direct_store: AsyncDynamoStore, tmp_path: Path
) -> None:
    args = ["pause", f"--endpoint={moto_server.url}", f"--table={direct_store.table_name}"]
    async with worker_processes(
        1, *args, f"--marks={tmp_path}", f"--lease={LEASE}", "--body-seconds=0.5"
    ) as (owner,):
        assert owner.stdout is not None
        assert await owner.stdout.readline() == b"running\n"
        owner.send_signal(signal.SIGSTOP)  # a stop-the-world pause: no heartbeat either
        try:
            frozen = await stored(direct_store, KEY)
            assert frozen is not None
            await until_lock_ends(frozen)
            runs = BodyRuns()
            assert await retry_function(direct_store, runs)(key="job") == "retried result"
            taken_over = await stored(direct_store, KEY)
        finally:
            owner.send_signal(signal.SIGCONT)
        out, err = await owner.communicate()
    assert owner.returncode == 0, err.decode()

    assert taken_over is not None
    assert taken_over.owner_token != frozen.owner_token
    assert runs.count == 1
    assert marker_count(tmp_path) == 1
    # The thawed owner finished its body, but its completion was fenced off.
    assert json.loads(out) == {
        "outcome": "lease_lost",
        "result": "late result",
        "current_owner": taken_over.owner_token,
        "current_status": "COMPLETED",
    }
    assert await stored(direct_store, KEY) == taken_over
