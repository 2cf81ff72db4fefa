"""Worker processes for the contention and crash proofs, run as ``python workers.py ...``.

``contend``: many tasks call one idempotent function on shared keys; waits for
``go`` on stdin so every process starts at once; prints one JSON line of outcomes.
``hold``: takes the lock on one key with a short lease, prints ``running`` and
sleeps until it is killed.
``pause``: the same, but its body returns after ``--body-seconds``; the parent
freezes it (SIGSTOP) past its lease and thaws it, making it a late finisher; it
prints one JSON line saying how its completion ended.

Every body run leaves a marker file (created exclusively), so the parent
counts executions across processes without trusting any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from idemstore import (
    AsyncDynamoStore,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyLeaseLostError,
    idempotent_function,
)
from idemstore.testing import DUMMY_REGION, isolated_session

BODY_SECONDS = 0.2


def mark_run(marks: Path, key: str) -> None:
    """Leave one file per body run: ``<key>.<pid>.<random>``."""
    name = f"{key}.{os.getpid()}.{uuid.uuid4().hex}"
    os.close(os.open(marks / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))


def open_store(endpoint: str, table: str) -> AsyncDynamoStore:
    return AsyncDynamoStore(
        table, endpoint_url=endpoint, region_name=DUMMY_REGION, session=isolated_session()
    )


async def contend(args: argparse.Namespace) -> None:
    store = open_store(args.endpoint, args.table)
    marks = Path(args.marks)
    config = IdempotencyConfig(
        wait_for_in_progress_seconds=args.wait, in_progress_lease_seconds=args.lease
    )

    @idempotent_function(
        data_keyword_argument="key", persistence_store=store, config=config, key_prefix="contend"
    )
    async def work(key: str) -> dict[str, Any]:
        mark_run(marks, key)
        await asyncio.sleep(BODY_SECONDS)
        return {"key": key, "pid": os.getpid()}

    async def one(index: int) -> dict[str, Any]:
        key = f"key-{index % args.keys:02d}"
        try:
            return {"key": key, "outcome": "result", "result": await work(key=key)}
        except IdempotencyAlreadyInProgressError:
            return {"key": key, "outcome": "in_progress"}
        except Exception as exc:  # reported to the parent, which fails the test on it
            return {"key": key, "outcome": "error", "error": f"{type(exc).__name__}: {exc}"}

    await store.client()  # connect before the start signal, so the start is simultaneous
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    outcomes = await asyncio.gather(*(one(i) for i in range(args.tasks)))
    await store.aclose()
    print(json.dumps({"pid": os.getpid(), "outcomes": outcomes}), flush=True)


def crash_function(
    store: AsyncDynamoStore, args: argparse.Namespace, seconds: float, result: str
) -> Callable[..., Awaitable[str]]:
    """The function the crash proofs lock: marks its run, says so, then runs ``seconds``."""
    marks = Path(args.marks)
    config = IdempotencyConfig(in_progress_lease_seconds=args.lease)

    @idempotent_function(
        data_keyword_argument="key", persistence_store=store, config=config, key_prefix="crash"
    )
    async def work(key: str) -> str:
        mark_run(marks, key)
        print("running", flush=True)
        await asyncio.sleep(seconds)
        return result

    return work


async def hold(args: argparse.Namespace) -> None:
    store = open_store(args.endpoint, args.table)
    work = crash_function(store, args, seconds=3600, result="unreachable")  # until killed
    await work(key=args.key)


async def pause(args: argparse.Namespace) -> None:
    store = open_store(args.endpoint, args.table)
    work = crash_function(store, args, seconds=args.body_seconds, result="late result")
    try:
        report: dict[str, Any] = {"outcome": "result", "result": await work(key=args.key)}
    except IdempotencyLeaseLostError as exc:
        current = exc.current_record
        report = {
            "outcome": "lease_lost",
            "result": exc.result,
            "current_owner": current.owner_token if current else None,
            "current_status": current.status.value if current else None,
        }
    await store.aclose()
    print(json.dumps(report), flush=True)


MODES = {"contend": contend, "hold": hold, "pause": pause}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--marks", required=True)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--key", default="job")
    parser.add_argument("--body-seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(MODES[args.mode](args))


if __name__ == "__main__":
    main()
