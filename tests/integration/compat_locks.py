"""In-flight locks across libraries, as a scenario each store's compatibility proof runs.

Whichever library holds the lock, the other is refused while the call runs, and then
replays its result: the protection survives a migration in either direction.
"""

import asyncio
import threading
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError as PowertoolsAlreadyInProgressError,
)
from powertools_twins import powertools_twin

from idemstore import (
    IdempotencyAlreadyInProgressError,
    RecordStatus,
    RecordStore,
    idempotent_function,
)


async def idemstore_lock_blocks_powertools(
    store: RecordStore, layer: Any, order: dict[str, Any]
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def process_order(order: dict[str, Any]) -> str:
        runs.append("idemstore")
        started.set()
        await release.wait()
        return "idemstore"

    @powertools_twin(process_order, layer)
    def process_order_sync(order: dict[str, Any]) -> str:
        runs.append("powertools")
        return "powertools"

    running = asyncio.create_task(process_order(order=order))
    await started.wait()
    try:
        with pytest.raises(PowertoolsAlreadyInProgressError):
            await asyncio.to_thread(lambda: process_order_sync(order=order))
    finally:
        release.set()
    assert await running == "idemstore"
    assert await asyncio.to_thread(lambda: process_order_sync(order=order)) == "idemstore"
    assert runs == ["idemstore"]


async def powertools_lock_blocks_idemstore(
    store: RecordStore, layer: Any, order: dict[str, Any]
) -> None:
    release = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def process_order(order: dict[str, Any]) -> str:
        runs.append("idemstore")
        return "idemstore"

    @powertools_twin(process_order, layer)
    def process_order_sync(order: dict[str, Any]) -> str:
        runs.append("powertools")
        started.set()
        release.wait(timeout=10)
        return "powertools"

    running = asyncio.create_task(asyncio.to_thread(lambda: process_order_sync(order=order)))
    assert await asyncio.to_thread(started.wait, 10)
    try:
        with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
            await process_order(order=order)
    finally:
        release.set()
    assert await running == "powertools"
    lock = caught.value.old_data_record
    assert lock is not None
    assert lock.status is RecordStatus.INPROGRESS
    assert await process_order(order=order) == "powertools"
    assert runs == ["powertools"]
