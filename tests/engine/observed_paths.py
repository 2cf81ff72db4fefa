"""Every decision path of the engine as a small scenario, for the observability tests.

Each scenario makes its calls on one function (key prefix ``PREFIX``) of the
store given, checks what the caller saw, and returns the decisions its calls
must be reported with (in any order). Shared by the hook tests (memory) and the
OpenTelemetry tests (the moto server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.conftest import overwrite
from engine.delegating import DelegatingStore
from idemstore import (
    DataRecord,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyEngine,
    IdempotencyKeyError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
    IdempotencyWarning,
    RecordStore,
)
from idemstore.engine import DISABLED_ENV, DISABLED_NOTICE

PREFIX = "orders.charge"

Scenario = Callable[[RecordStore], Awaitable[list[str]]]


def engine(store: RecordStore, **options: Any) -> IdempotencyEngine:
    return IdempotencyEngine(store, IdempotencyConfig(**options), key_prefix=PREFIX)


async def ok() -> str:
    return "done"


class Gate:
    """A call that runs until opened, so a duplicate can arrive while it holds the lock."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.open = asyncio.Event()

    async def call(self) -> str:
        self.running.set()
        await self.open.wait()
        return "leader"


async def executed(store: RecordStore) -> list[str]:
    assert (await engine(store).process({"id": 1}, ok)).value == "done"
    return ["executed"]


async def replayed(store: RecordStore) -> list[str]:
    orders = engine(store)
    await orders.process({"id": 1}, ok)
    assert (await orders.process({"id": 1}, ok)).replayed
    return ["executed", "replayed"]


async def cached(store: RecordStore) -> list[str]:
    orders = engine(store, use_local_cache=True)
    await orders.process({"id": 1}, ok)
    await orders.process({"id": 1}, ok)
    return ["executed", "cached"]


async def attached(store: RecordStore) -> list[str]:
    orders, gate = engine(store, wait_for_in_progress_seconds=5), Gate()
    leader = asyncio.create_task(orders.process({"id": 1}, gate.call))
    await gate.running.wait()
    duplicate = asyncio.create_task(orders.process({"id": 1}, ok))
    for _ in range(3):
        await asyncio.sleep(0)  # the duplicate finds the leader in flight and attaches
    gate.open.set()
    assert (await duplicate).value == (await leader).value == "leader"
    return ["executed", "attached"]


async def waited(store: RecordStore) -> list[str]:
    # Two engines of one function, as two processes: the second polls the store.
    first, second, gate = engine(store), engine(store, wait_for_in_progress_seconds=5), Gate()
    leader = asyncio.create_task(first.process({"id": 1}, gate.call))
    await gate.running.wait()
    duplicate = asyncio.create_task(second.process({"id": 1}, ok))
    await asyncio.sleep(0.02)  # before its first poll
    gate.open.set()
    assert (await duplicate).value == (await leader).value == "leader"
    return ["executed", "waited"]


async def in_progress(store: RecordStore) -> list[str]:
    orders, gate = engine(store), Gate()
    leader = asyncio.create_task(orders.process({"id": 1}, gate.call))
    await gate.running.wait()
    with pytest.raises(IdempotencyAlreadyInProgressError):
        await orders.process({"id": 1}, ok)
    gate.open.set()
    await leader
    return ["executed", "in_progress"]


async def payload_mismatch(store: RecordStore) -> list[str]:
    orders = engine(store, event_key_jmespath="id", payload_validation_jmespath="amount")
    await orders.process({"id": 1, "amount": 10}, ok)
    with pytest.raises(IdempotencyValidationError):
        await orders.process({"id": 1, "amount": 99}, ok)
    return ["executed", "payload_mismatch"]


async def failed(store: RecordStore) -> list[str]:
    async def broken() -> str:
        raise ValueError("card declined")

    with pytest.raises(ValueError, match="card declined"):
        await engine(store).process({"id": 1}, broken)
    return ["failed"]


async def lease_lost(store: RecordStore) -> list[str]:
    orders = engine(store)
    identity = orders.identify({"id": 1})
    assert identity is not None

    async def taken_over() -> str:
        ours = await store.get_record(identity.key)
        assert ours.in_progress_expiry_timestamp is not None
        expiry = ours.in_progress_expiry_timestamp + 60_000
        theirs = dataclasses.replace(
            ours, owner_token="another", in_progress_expiry_timestamp=expiry
        )
        await overwrite(store, theirs)
        return "late"

    with pytest.raises(IdempotencyLeaseLostError):
        await orders.process({"id": 1}, taken_over)
    return ["lease_lost"]


async def unprotected(store: RecordStore) -> list[str]:
    with pytest.warns(IdempotencyWarning, match="No idempotency key"):
        outcome = await engine(store, event_key_jmespath="id").process({"other": 1}, ok)
    assert outcome.kind == "unprotected"
    return ["unprotected"]


async def disabled(store: RecordStore) -> list[str]:
    DISABLED_NOTICE.reset()
    os.environ[DISABLED_ENV] = "1"
    try:
        with pytest.warns(IdempotencyWarning, match=DISABLED_ENV):
            outcome = await engine(store).process({"id": 1}, ok)
    finally:
        del os.environ[DISABLED_ENV]
        DISABLED_NOTICE.reset()
    assert outcome.kind == "disabled"
    return ["disabled"]


class FailingPuts(DelegatingStore):
    """A store whose lock puts fail as an unreachable table's would."""

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        raise IdempotencyPersistenceLayerError("the table cannot be reached")


async def store_error(store: RecordStore) -> list[str]:
    with pytest.raises(IdempotencyPersistenceLayerError, match="cannot be reached"):
        await engine(FailingPuts(store)).process({"id": 1}, ok)
    return ["store_error"]


async def key_error(store: RecordStore) -> list[str]:
    orders = engine(store, event_key_jmespath="id", raise_on_no_idempotency_key=True)
    with pytest.raises(IdempotencyKeyError):
        await orders.process({"other": 1}, ok)
    return ["error"]


async def cancelled(store: RecordStore) -> list[str]:
    orders, gate = engine(store), Gate()
    leader = asyncio.create_task(orders.process({"id": 1}, gate.call))
    await gate.running.wait()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    # The lock was released: the next call runs the function.
    assert (await orders.process({"id": 1}, ok)).value == "done"
    return ["cancelled", "executed"]


SCENARIOS: dict[str, Scenario] = {
    scenario.__name__: scenario
    for scenario in (
        executed,
        replayed,
        cached,
        attached,
        waited,
        in_progress,
        payload_mismatch,
        failed,
        lease_lost,
        unprotected,
        disabled,
        store_error,
        key_error,
        cancelled,
    )
}
