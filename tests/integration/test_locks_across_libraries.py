"""In-flight locks across libraries, on both stores Powertools shares with idemstore.

Whichever library holds the lock, the other is refused while the call runs, and then
replays its result: the protection survives a migration in either direction, on
DynamoDB (the moto server) and on Redis (the local server).
"""

import asyncio
import threading
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError as PowertoolsAlreadyInProgressError,
)
from powertools_twins import as_lambda_function, twins

from idemstore import IdempotencyAlreadyInProgressError, RecordStatus, RecordStore

ORDER = {"order_id": "o-1", "amount": 1050, "customer": "c-9"}

# The fixture of Powertools' layer on each store's table or server.
LAYERS = {"dynamo": "powertools_layer", "redis": "redis_powertools_layer"}


@pytest.fixture(autouse=True)
def function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_lambda_function(monkeypatch, "orders-service")


@pytest.fixture(params=list(LAYERS))
def backend(request: pytest.FixtureRequest) -> str:
    """Which store both libraries share: each test runs on both."""
    name: str = request.param
    return name


@pytest.fixture
def store(request: pytest.FixtureRequest, backend: str) -> RecordStore:
    """idemstore's store on the shared table or server."""
    found: RecordStore = request.getfixturevalue(f"{backend}_store")
    return found


@pytest.fixture
def layer(request: pytest.FixtureRequest, backend: str) -> Any:
    """Powertools' layer on the same table or server as ``store``."""
    return request.getfixturevalue(LAYERS[backend])


@pytest.mark.asyncio
async def test_an_idemstore_lock_blocks_powertools(store: RecordStore, layer: Any) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_open(order: dict[str, Any]) -> str:
        entered.set()
        await release.wait()
        return "idemstore"

    pair = twins(store, layer, idemstore_result=held_open)
    running = asyncio.create_task(pair.call("idemstore", ORDER))
    await entered.wait()
    try:
        with pytest.raises(PowertoolsAlreadyInProgressError):
            await pair.call("powertools", ORDER)
    finally:
        release.set()
    assert await running == "idemstore"
    assert await pair.call("powertools", ORDER) == "idemstore"
    assert pair.runs == ["idemstore"]


@pytest.mark.asyncio
async def test_a_powertools_lock_blocks_idemstore(store: RecordStore, layer: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    def held_open(order: dict[str, Any]) -> str:
        entered.set()
        release.wait(timeout=10)
        return "powertools"

    pair = twins(store, layer, powertools_result=held_open)
    running = asyncio.create_task(pair.call("powertools", ORDER))
    assert await asyncio.to_thread(entered.wait, 10)
    try:
        with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
            await pair.call("idemstore", ORDER)
    finally:
        release.set()
    assert await running == "powertools"
    lock = caught.value.old_data_record
    assert lock is not None
    assert lock.status is RecordStatus.INPROGRESS
    assert await pair.call("idemstore", ORDER) == "powertools"
    assert pair.runs == ["powertools"]
