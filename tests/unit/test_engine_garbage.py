"""Calls leave no reference cycles behind: what they allocate is freed at once, not left
for the garbage collector (whose runs are client CPU the caller pays for)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from idemstore import idempotent_function
from idemstore.stores.memory import InMemoryStore


@pytest.fixture
def collector_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.asyncio
@pytest.mark.usefixtures("collector_paused")
async def test_fresh_and_duplicate_calls_leave_no_cycles(memory_store: InMemoryStore) -> None:
    @idempotent_function(data_keyword_argument="order", persistence_store=memory_store)
    async def place(order: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": order["id"], "status": "accepted"}

    await place(order={"id": 0})  # first use: caches and lazily built state
    gc.collect()

    for i in range(1, 4):
        fresh = await place(order={"id": i})
        duplicate = await place(order={"id": i})
        assert duplicate == fresh

    assert gc.collect() == 0
