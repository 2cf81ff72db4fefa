"""The engine's contract: every call ends in a typed ``Outcome``, on ``InMemoryStore``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from idemstore import (
    IdempotencyConfig,
    IdempotencyResponseTooLargeError,
    IdempotencySerializationError,
    IdempotencyValidationError,
    InMemoryStore,
    RecordStatus,
)
from idemstore.engine import DISABLED_NOTICE, IdempotencyEngine, IdempotencyWarning
from idemstore.outcome import Outcome, OutcomeKind, Unstored

INCOMPRESSIBLE = random.Random(0).randbytes(600_000).hex()
"""Over an item's limit even compressed."""


def engine_for(store: InMemoryStore, **options: Any) -> IdempotencyEngine:
    return IdempotencyEngine(store, IdempotencyConfig(**options), key_prefix="outcomes")


class Calls:
    def __init__(self, result: Any = "done") -> None:
        self.count = 0
        self.result = result

    async def __call__(self) -> Any:
        self.count += 1
        return self.result


@pytest.mark.asyncio
async def test_a_fresh_call_is_executed_and_stored() -> None:
    store = InMemoryStore()
    outcome = await engine_for(store).process({"id": 1}, Calls())
    assert outcome.kind is OutcomeKind.EXECUTED
    assert outcome.value == "done"
    assert outcome.stored is True
    assert outcome.executed
    assert not outcome.replayed
    assert outcome.record is not None
    assert outcome.record.status is RecordStatus.COMPLETED
    assert outcome.identity is not None
    assert outcome.record.idempotency_key == outcome.identity.key


@pytest.mark.asyncio
async def test_a_duplicate_is_replayed_from_the_store_with_its_record() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    calls = Calls()
    first = await engine.process({"id": 1}, calls)
    second = await engine.process({"id": 1}, calls)
    assert second.kind is OutcomeKind.REPLAYED
    assert second.replayed
    assert not second.executed
    assert (second.value, second.stored, calls.count) == ("done", False, 1)
    assert second.record == first.record


@pytest.mark.asyncio
async def test_a_duplicate_with_the_local_cache_is_cached_and_sends_nothing() -> None:
    store = InMemoryStore()
    engine = engine_for(store, use_local_cache=True)
    calls = Calls()
    await engine.process({"id": 1}, calls)
    requests = store.requests
    outcome = await engine.process({"id": 1}, calls)
    assert outcome.kind is OutcomeKind.CACHED
    assert store.requests == requests
    assert calls.count == 1


@pytest.mark.asyncio
async def test_a_concurrent_duplicate_in_process_is_attached() -> None:
    store = InMemoryStore()
    engine = engine_for(store, wait_for_in_progress_seconds=5)
    release = asyncio.Event()
    runs: list[int] = []

    async def slow() -> str:
        runs.append(1)
        await release.wait()
        return "done"

    leader = asyncio.ensure_future(engine.process({"id": 1}, slow))
    await asyncio.sleep(0)
    follower = asyncio.ensure_future(engine.process({"id": 1}, slow))
    await asyncio.sleep(0)
    release.set()
    led, attached = await asyncio.gather(leader, follower)
    assert (led.kind, attached.kind) == (OutcomeKind.EXECUTED, OutcomeKind.ATTACHED)
    assert attached.value == "done"
    assert attached.record == led.record
    assert runs == [1]


@pytest.mark.asyncio
async def test_a_payload_without_key_runs_unprotected() -> None:
    store = InMemoryStore()
    engine = engine_for(store, event_key_jmespath="order_id")
    with pytest.warns(IdempotencyWarning, match="No idempotency key"):
        outcome = await engine.process({"other": 1}, Calls())
    assert outcome.kind is OutcomeKind.UNPROTECTED
    assert (outcome.value, outcome.record, outcome.identity) == ("done", None, None)
    assert store.requests == 0


@pytest.mark.asyncio
async def test_the_kill_switch_runs_unprotected_and_warns_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDEMSTORE_DISABLED", "1")
    DISABLED_NOTICE.reset()
    store = InMemoryStore()
    engine = engine_for(store)
    with pytest.warns(IdempotencyWarning, match="IDEMSTORE_DISABLED"):
        first = await engine.process({"id": 1}, Calls())
    second = await engine_for(store).process_keyed({"k": 1}, None, Calls())
    assert (first.kind, second.kind) == (OutcomeKind.DISABLED, OutcomeKind.DISABLED)
    assert store.requests == 0


@pytest.mark.asyncio
async def test_unstored_without_a_replacement_releases_the_lock() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    calls = Calls(Unstored("streamed", "not held"))
    outcome = await engine.process({"id": 1}, calls)
    assert outcome.kind is OutcomeKind.EXECUTED
    assert (outcome.value, outcome.stored, outcome.record) == ("streamed", False, None)
    assert outcome.unstored_reason == "not held"
    assert store.items() == {}
    again = await engine.process({"id": 1}, calls)
    assert again.kind is OutcomeKind.EXECUTED
    assert calls.count == 2


@pytest.mark.asyncio
async def test_unstored_with_a_replacement_records_it_and_duplicates_replay_it() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    calls = Calls(Unstored("the real value", "too large", record_as={"unreplayable": True}))
    outcome = await engine.process({"id": 1}, calls)
    assert (outcome.value, outcome.stored) == ("the real value", False)
    assert outcome.record is not None
    assert outcome.record.status is RecordStatus.COMPLETED
    duplicate = await engine.process({"id": 1}, calls)
    assert duplicate.kind is OutcomeKind.REPLAYED
    assert duplicate.value == {"unreplayable": True}
    assert calls.count == 1


@pytest.mark.asyncio
async def test_an_unstorable_result_goes_through_the_policy() -> None:
    store = InMemoryStore()
    seen: list[type[Exception]] = []

    def policy(result: Any, error: Exception) -> Unstored[Any]:
        seen.append(type(error))
        return Unstored(result, str(error), record_as="too large to replay")

    engine = IdempotencyEngine(store, IdempotencyConfig(), key_prefix="outcomes", unstorable=policy)
    outcome: Outcome[Any] = await engine.process({"id": 1}, Calls(INCOMPRESSIBLE))
    assert seen == [IdempotencyResponseTooLargeError]
    assert outcome.value == INCOMPRESSIBLE
    assert (await engine.process({"id": 1}, Calls())).value == "too large to replay"


@pytest.mark.asyncio
async def test_without_a_policy_an_unstorable_result_raises_and_releases() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    with pytest.raises(IdempotencyResponseTooLargeError):
        await engine.process({"id": 1}, Calls(INCOMPRESSIBLE))
    assert store.items() == {}


@pytest.mark.asyncio
async def test_explicit_key_data_shares_the_identity_rules() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    first = await engine.process_keyed({"key": "k"}, {"body": 1}, Calls())
    assert first.identity is not None
    assert first.identity.payload_hash is not None
    assert first.identity == engine.identity_of({"key": "k"}, {"body": 1})
    with pytest.raises(IdempotencyValidationError):
        await engine.process_keyed({"key": "k"}, {"body": 2}, Calls())


@pytest.mark.asyncio
async def test_a_replacement_that_is_not_json_releases_the_lock() -> None:
    store = InMemoryStore()
    engine = engine_for(store)
    calls = Calls(Unstored("value", "not held", record_as={"at": object()}))
    with pytest.raises(IdempotencySerializationError) as caught:
        await engine.process({"id": 1}, calls)
    assert caught.value.function_ran is True
    assert caught.value.result == "value"
    assert store.items() == {}
