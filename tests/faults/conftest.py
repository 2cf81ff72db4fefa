"""Fixtures for the fault, crash and contention proofs.

Each test gets a fresh table, a fault proxy in front of the session's server,
a store that talks through the proxy (short timeouts, three attempts), and a
store that talks to the server directly, to read and plant records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from botocore.retries.standard import ExponentialBackoff

from faults.helpers import BodyRuns, PlaceOrder, new_table_name, order_function, proxied_store
from faults.proxy import FaultProxy
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.tables import create_table
from idemstore.testing import MotoEndpoint

BACKOFF_SCALE = 0.05


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten botocore's jittered retry waits (up to 1, 2, 4 s) twentyfold.

    Retries keep their number, order and exponential shape; only the wait
    shrinks, so that faults that exhaust the retry budget keep the suite fast.
    """
    delay_amount = ExponentialBackoff.delay_amount

    def scaled(self: ExponentialBackoff, context: Any) -> float:
        return float(delay_amount(self, context)) * BACKOFF_SCALE

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", scaled)


@pytest_asyncio.fixture
async def fault_proxy(moto_server: MotoEndpoint) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the session's server, stopped (stalls ended) after the test."""
    async with FaultProxy(moto_server.url) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def direct_store(moto_server: MotoEndpoint) -> AsyncIterator[AsyncDynamoStore]:
    """A fresh table, reached without the proxy: the ground truth of each test."""
    async with moto_server.store(new_table_name()) as store:
        await create_table(store)
        yield store


@pytest_asyncio.fixture
async def faulty_store(
    moto_server: MotoEndpoint, fault_proxy: FaultProxy, direct_store: AsyncDynamoStore
) -> AsyncIterator[AsyncDynamoStore]:
    """The same table as ``direct_store``, reached through the fault proxy."""
    async with proxied_store(moto_server, fault_proxy, direct_store.table_name) as store:
        yield store


@pytest.fixture
def runs() -> BodyRuns:
    """The body runs of this test's ``place_order``."""
    return BodyRuns()


@pytest.fixture
def place_order(faulty_store: AsyncDynamoStore, runs: BodyRuns) -> PlaceOrder:
    """An idempotent ``place_order(order=...)`` through the fault proxy, counted in ``runs``."""
    return order_function(faulty_store, runs)
