"""Shared pieces of the fault proofs: counting body runs, reading the table directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig

from faults.proxy import FaultProxy
from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine
from idemstore.errors import IdempotencyItemNotFoundError
from idemstore.idempotency import idempotent_function
from idemstore.records import DataRecord, RecordStatus
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.testing import MotoEndpoint

RETRIES = 3
ATTEMPTS = RETRIES + 1
"""botocore's ``max_attempts`` counts retries: each request is sent at most four times."""

FAULT_CLIENT_CONFIG = AioConfig(
    connect_timeout=1,
    read_timeout=1,
    retries={"mode": "standard", "max_attempts": RETRIES},
)
"""Short timeouts so stalls are noticed quickly; the standard retry mode."""


def new_table_name() -> str:
    return f"idemstore-faults-{uuid.uuid4().hex[:12]}"


def proxied_store(
    moto_server: MotoEndpoint, proxy: FaultProxy, table_name: str, **kwargs: Any
) -> AsyncDynamoStore:
    return AsyncDynamoStore(
        table_name,
        endpoint_url=proxy.url,
        region_name=moto_server.region_name,
        session=moto_server.session(),
        client_config=FAULT_CLIENT_CONFIG,
        **kwargs,
    )


@dataclass
class BodyRuns:
    """How many times a function body started, by payload."""

    calls: list[Any] = field(default_factory=list)

    def record(self, payload: Any) -> None:
        self.calls.append(payload)

    @property
    def count(self) -> int:
        return len(self.calls)


async def stored(store: AsyncDynamoStore, key: str) -> DataRecord | None:
    """The record for ``key`` as the table holds it now (consistent read), or None."""
    try:
        return await store.get_record(key)
    except IdempotencyItemNotFoundError:
        return None


async def completed_result(store: AsyncDynamoStore, key: str) -> Any:
    """The result the record for ``key`` stores; fails unless that record is COMPLETED."""
    record = await stored(store, key)
    assert record is not None, f"no record for {key}"
    assert record.status is RecordStatus.COMPLETED, record
    return json.loads(record.response_data or "")


async def status_of(store: AsyncDynamoStore, key: str) -> RecordStatus | None:
    """The status of the record for ``key`` as the table holds it now, or None if there is none."""
    record = await stored(store, key)
    return None if record is None else record.status


async def raw_item(store: AsyncDynamoStore, key: str) -> dict[str, Any] | None:
    """The item for ``key`` in DynamoDB's typed form, without decoding it."""
    client = await store.client()
    response = await client.get_item(
        TableName=store.table_name, Key=store.schema.key(key), ConsistentRead=True
    )
    item: dict[str, Any] | None = response.get("Item")
    return item


async def item_count(store: AsyncDynamoStore) -> int:
    client = await store.client()
    response = await client.scan(TableName=store.table_name, Select="COUNT")
    return int(response.get("Count", 0))


def engine_of(function: Callable[..., Any]) -> IdempotencyEngine:
    """The engine behind a decorated function."""
    engine: IdempotencyEngine = vars(function)["idempotency_engine"]
    return engine


def key_of(function: Callable[..., Any], payload: Any) -> str:
    """The idempotency key a decorated function derives from ``payload``."""
    identity = engine_of(function).identify(payload)
    assert identity is not None, "the payload has an idempotency key"
    return identity.key


PlaceOrder = Callable[..., Awaitable[dict[str, int]]]


def order_function(
    store: AsyncDynamoStore,
    runs: BodyRuns,
    *,
    fail: bool = False,
    config: IdempotencyConfig | None = None,
    key_prefix: str = "orders",
) -> PlaceOrder:
    """An idempotent ``place_order(order=...)`` that counts its runs (and may decline)."""

    @idempotent_function(
        data_keyword_argument="order", persistence_store=store, config=config, key_prefix=key_prefix
    )
    async def place_order(order: dict[str, int]) -> dict[str, int]:
        runs.record(order)
        if fail:
            raise ValueError("payment declined")
        return {"order": order["id"], "total": order["qty"] * 10}

    return place_order


Job = Callable[..., Coroutine[Any, Any, str]]


def gated_function(
    store: AsyncDynamoStore,
    runs: BodyRuns,
    started: asyncio.Event,
    finish: asyncio.Event,
    *,
    config: IdempotencyConfig,
    key_prefix: str,
) -> Job:
    """An idempotent ``job(job=...)`` that sets ``started`` and runs until ``finish`` is set;
    it returns ``done <job> #<runs so far>``, so a result tells which run made it."""

    @idempotent_function(
        data_keyword_argument="job", persistence_store=store, config=config, key_prefix=key_prefix
    )
    async def job(job: str) -> str:
        runs.record(job)
        started.set()
        await finish.wait()
        return f"done {job} #{runs.count}"

    return job


async def until_lock_ends(record: DataRecord, *, margin: float = 0.01) -> None:
    """Sleep until ``margin`` seconds past the end of ``record``'s lock (by the wall clock)."""
    assert record.in_progress_expiry_timestamp is not None, "the record holds a lock"
    await asyncio.sleep(max(0.0, record.in_progress_expiry_timestamp / 1000 - time.time()) + margin)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass: for work left running after
    a cancellation, whose end the caller cannot await."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


WORKERS = Path(__file__).with_name("workers.py")


@contextlib.asynccontextmanager
async def worker_processes(
    count: int, *args: str
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Start ``count`` worker processes (warnings are errors there too); always reap them."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(count):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-W",
                    "error",
                    str(WORKERS),
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
        for process in processes:
            await process.communicate()
