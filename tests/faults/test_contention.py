"""Contention across OS processes: 4 processes x 50 tasks on the same 20 keys.

Each body run leaves a marker file, so executions are counted outside the
processes that made them. (And in one process: 4 engines x 10 tasks over a slow
network.) Every key must run exactly once; every other caller
gets the owner's result replayed, or (without waiting) is told the call is in
progress.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from faults.helpers import (
    BodyRuns,
    completed_result,
    key_of,
    order_function,
    status_of,
    worker_processes,
)
from faults.proxy import FaultKind, FaultProxy
from idemstore import IdempotencyConfig
from idemstore.keys import make_key
from idemstore.records import RecordStatus
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.testing import MotoEndpoint

PROCESSES = 4
TASKS = 50
KEYS = 20


async def run_contention(
    moto_server: MotoEndpoint, table: str, marks: Path, wait_seconds: float
) -> list[dict[str, Any]]:
    args = [
        "contend",
        f"--endpoint={moto_server.url}",
        f"--table={table}",
        f"--marks={marks}",
        f"--keys={KEYS}",
        f"--tasks={TASKS}",
        f"--wait={wait_seconds}",
    ]
    outcomes: list[dict[str, Any]] = []
    async with worker_processes(PROCESSES, *args) as processes:
        for process in processes:
            assert process.stdout is not None
            assert await process.stdout.readline() == b"ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        for process in processes:
            out, err = await process.communicate()
            assert process.returncode == 0, err.decode()
            outcomes += json.loads(out)["outcomes"]
    return outcomes


def marker_names(marks: Path) -> list[str]:
    return [marker.name for marker in marks.iterdir()]


@pytest.mark.asyncio
@pytest.mark.parametrize("wait_seconds", [0.0, 15.0], ids=["raise-in-progress", "wait"])
async def test_every_key_runs_exactly_once_across_processes(
    wait_seconds: float,
    moto_server: MotoEndpoint,
    direct_store: AsyncDynamoStore,
    tmp_path: Path,
) -> None:
    outcomes = await run_contention(moto_server, direct_store.table_name, tmp_path, wait_seconds)

    # (a) every key's body ran exactly once, in one of the processes
    runs = [name.split(".") for name in marker_names(tmp_path)]
    assert Counter(key for key, _, _ in runs) == {f"key-{i:02d}": 1 for i in range(KEYS)}
    owner = {key: int(pid) for key, pid, _ in runs}
    # (b) every caller got the owner's result, or (without waiting) "in progress"
    assert len(outcomes) == PROCESSES * TASKS
    kinds = Counter(outcome["outcome"] for outcome in outcomes)
    if wait_seconds:
        assert kinds == {"result": PROCESSES * TASKS}
    else:
        assert set(kinds) <= {"result", "in_progress"}, [
            o for o in outcomes if o["outcome"] == "error"
        ]
    for outcome in outcomes:
        if outcome["outcome"] == "result":
            key = outcome["key"]
            assert outcome["result"] == {"key": key, "pid": owner[key]}
    # (c) the table holds one completed record per key, with the owner's result
    for key, pid in owner.items():
        stored_result = await completed_result(direct_store, make_key("contend", key, "md5"))
        assert stored_result == {"key": key, "pid": pid}


@pytest.mark.asyncio
async def test_concurrent_callers_on_a_slow_network_run_once(
    fault_proxy: FaultProxy, faulty_store: AsyncDynamoStore, direct_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    config = IdempotencyConfig(wait_for_in_progress_seconds=10)
    engines = [order_function(faulty_store, runs, config=config) for _ in range(4)]
    fault_proxy.inject(FaultKind.LATENCY, delay=0.02, times=None)  # every request

    results = await asyncio.gather(*(engines[i % 4](order={"id": 1, "qty": 1}) for i in range(40)))

    assert runs.count == 1
    assert results == [{"order": 1, "total": 10}] * 40
    assert (
        await status_of(direct_store, key_of(engines[0], {"id": 1, "qty": 1}))
        is RecordStatus.COMPLETED
    )
