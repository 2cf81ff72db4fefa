"""The observer hook and the decision log: every path reported once, with its facts.

On ``InMemoryStore`` (fast); ``test_otel.py`` runs the same paths on the moto server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.conftest import overwrite
from engine.observed_paths import PREFIX, SCENARIOS, engine
from idemstore import (
    DataRecord,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    InMemoryStore,
    RecordStatus,
)
from idemstore.observe import (
    CURRENT_CALL,
    BatchPrecheck,
    CallReport,
    CallStart,
    Event,
    LeaseRenewal,
    ReleaseFailed,
    RenewalResult,
    StaleRecord,
    TakeOver,
    emit,
    observers,
    observing,
)


@dataclass
class Scope:
    start: CallStart
    events: list[Event] = field(default_factory=list)
    report: CallReport | None = None

    def event(self, event: Event) -> None:
        self.events.append(event)

    def ended(self, report: CallReport) -> None:
        assert self.report is None, "ended twice"
        self.report = report


@dataclass
class Recorder:
    scopes: list[Scope] = field(default_factory=list)
    outside: list[Event] = field(default_factory=list)

    def call_started(self, call: CallStart) -> Scope:
        scope = Scope(call)
        self.scopes.append(scope)
        return scope

    def event(self, event: Event) -> None:
        self.outside.append(event)

    @property
    def reports(self) -> list[CallReport]:
        return [scope.report for scope in self.scopes if scope.report is not None]

    def decisions(self) -> list[str]:
        return sorted(report.decision.value for report in self.reports)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """A log record's idemstore fields, as a JSON formatter would emit them."""
    return {name: value for name, value in vars(record).items() if name.startswith("idemstore_")}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with observing(Recorder()) as installed:
        assert isinstance(installed, Recorder)
        yield installed
    assert not observers()


@pytest.mark.asyncio
@pytest.mark.parametrize("path", sorted(SCENARIOS))
async def test_each_path_is_reported_once_with_its_decision(path: str, recorder: Recorder) -> None:
    expected = await SCENARIOS[path](InMemoryStore())

    assert recorder.decisions() == sorted(expected)
    assert len(recorder.scopes) == len(expected)  # every call started ended
    for scope, report in zip(recorder.scopes, recorder.reports, strict=True):
        assert scope.start == CallStart(PREFIX, "memory")
        assert (report.function, report.store) == (PREFIX, "memory")
        assert report.duration_seconds >= 0
        assert (report.error_type is not None) == (
            report.decision.value
            in {"failed", "lease_lost", "store_error", "error", "cancelled"}
            | {"in_progress", "payload_mismatch"}
        )


@pytest.mark.asyncio
async def test_the_facts_count_requests_attempts_and_waits(recorder: Recorder) -> None:
    store = InMemoryStore()
    await SCENARIOS["replayed"](store)
    await SCENARIOS["waited"](InMemoryStore())
    await SCENARIOS["failed"](InMemoryStore())

    facts = {
        report.decision.value: (report.requests, report.attempts, report.wait_seconds > 0)
        for report in recorder.reports
    }
    # The round-trip budget, as the engine counts it.
    assert facts["executed"] == (2, 1, False)  # put + completion
    assert facts["replayed"] == (1, 1, False)  # the refused put
    assert facts["failed"] == (2, 1, False)  # put + release
    requests, attempts, waited = facts["waited"]
    assert (attempts, waited) == (1, True)
    assert requests >= 2  # the refused put, then at least one read
    assert {r.error_type for r in recorder.reports if r.decision.value == "failed"} == {
        "ValueError"
    }


@pytest.mark.asyncio
async def test_the_report_has_the_key_for_in_process_use(recorder: Recorder) -> None:
    orders = engine(InMemoryStore())
    await orders.process({"id": 1}, lambda: asyncio.sleep(0, "x"))
    identity = orders.identify({"id": 1})

    assert identity is not None
    assert [report.key for report in recorder.reports] == [identity.key]
    assert identity.key not in repr(recorder.reports[0])


@pytest.mark.asyncio
async def test_lease_renewals_are_events_of_their_call(recorder: Recorder) -> None:
    orders = engine(InMemoryStore(), in_progress_lease_seconds=0.15)  # renewed every 0.05 s

    await orders.process({"id": 1}, lambda: asyncio.sleep(0.13, "slow"))

    (scope,) = recorder.scopes
    renewals = [event for event in scope.events if isinstance(event, LeaseRenewal)]
    assert renewals
    assert {event.result for event in renewals} == {RenewalResult.OK}
    assert scope.report is not None
    assert scope.report.requests == 2 + len(renewals)  # renewals are requests of the call


@pytest.mark.asyncio
async def test_a_lost_lease_is_an_event_a_warning_and_the_decision(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryStore()
    orders = engine(store, in_progress_lease_seconds=0.15)
    identity = orders.identify({"id": 1})
    assert identity is not None

    async def taken_over_while_running() -> str:
        ours = await store.get_record(identity.key)
        theirs = dataclasses.replace(ours, owner_token="another")
        await overwrite(store, theirs)
        await asyncio.sleep(0.1)  # the next renewal finds the lock gone
        return "late"

    with caplog.at_level(logging.WARNING, "idemstore"), pytest.raises(IdempotencyLeaseLostError):
        await orders.process({"id": 1}, taken_over_while_running)

    (scope,) = recorder.scopes
    assert [event.result for event in scope.events if isinstance(event, LeaseRenewal)] == [
        RenewalResult.LOST
    ]
    assert scope.report is not None
    assert scope.report.decision == "lease_lost"
    (warning,) = [r for r in caplog.records if getattr(r, "idemstore_event", None)]
    assert warning.levelno == logging.WARNING
    assert fields(warning) == {
        "idemstore_event": "lease_renewal",
        "idemstore_function": PREFIX,
        "idemstore_store": "memory",
        "idemstore_lease_result": "lost",
    }
    assert identity.key not in warning.getMessage()


class SkewedStore(InMemoryStore):
    """A table whose clock runs behind the engine's for the first put: the put is refused
    over a lock the engine already sees as stale (clock skew), so the engine retries."""

    def __init__(self) -> None:
        super().__init__()
        self.skewed_puts = 1

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        if self.skewed_puts:
            self.skewed_puts -= 1
            now -= 120
        await super().put_record(record, now=now)


@pytest.mark.asyncio
async def test_a_take_over_is_an_event_and_a_warning(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    store = SkewedStore()
    orders = engine(store)
    identity = orders.identify({"id": 1})
    assert identity is not None
    stale = DataRecord(
        idempotency_key=identity.key,
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=10**10,
        in_progress_expiry_timestamp=int(time.time() * 1000) - 60_000,  # lapsed a minute ago
        owner_token="crashed",
    )
    store.overwrite(stale)

    with caplog.at_level(logging.WARNING, "idemstore"):
        outcome = await orders.process({"id": 1}, lambda: asyncio.sleep(0, "ran"))

    assert outcome.value == "ran"
    (scope,) = recorder.scopes
    assert scope.events == [TakeOver(PREFIX, "memory", StaleRecord.STALE_LOCK)]
    assert scope.report is not None
    assert (scope.report.decision, scope.report.attempts) == ("executed", 2)
    (warning,) = [r for r in caplog.records if getattr(r, "idemstore_event", None)]
    assert fields(warning)["idemstore_event"] == "takeover"
    assert fields(warning)["idemstore_found"] == "stale_lock"


class FailingDeletes(InMemoryStore):
    async def delete_record(self, record: DataRecord) -> None:
        raise IdempotencyPersistenceLayerError("throttled")


@pytest.mark.asyncio
async def test_a_failed_release_is_an_event_and_a_warning(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    orders = engine(FailingDeletes())

    async def broken() -> str:
        raise ValueError("boom")

    with (
        caplog.at_level(logging.WARNING, "idemstore"),
        pytest.raises(IdempotencyPersistenceLayerError, match="after the function raised"),
    ):
        await orders.process({"id": 1}, broken)

    (scope,) = recorder.scopes
    assert scope.events == [ReleaseFailed(PREFIX, "memory", "IdempotencyPersistenceLayerError")]
    assert scope.report is not None
    assert scope.report.decision == "store_error"
    (warning,) = [r for r in caplog.records if getattr(r, "idemstore_event", None)]
    assert fields(warning)["idemstore_event"] == "release_failed"
    assert fields(warning)["idemstore_error_type"] == "IdempotencyPersistenceLayerError"


@pytest.mark.asyncio
async def test_events_outside_a_call_go_to_the_observers(recorder: Recorder) -> None:
    precheck = BatchPrecheck(PREFIX, "memory", hits=2, misses=3)

    emit(precheck)

    assert recorder.outside == [precheck]
    assert recorder.scopes == []


@pytest.mark.asyncio
async def test_one_debug_record_per_decision_with_the_facts_and_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No observer: DEBUG logging alone turns the reports on.
    orders = engine(InMemoryStore())
    with caplog.at_level(logging.DEBUG, "idemstore"):
        await orders.process({"id": 1, "card": "4111"}, lambda: asyncio.sleep(0, "secret-result"))
        await orders.process({"id": 1, "card": "4111"}, lambda: asyncio.sleep(0, "other"))

    records = [r for r in caplog.records if hasattr(r, "idemstore_outcome")]
    assert [fields(r)["idemstore_outcome"] for r in records] == ["executed", "replayed"]
    assert [r.levelno for r in records] == [logging.DEBUG] * 2
    first = fields(records[0])
    duration = first.pop("idemstore_duration_seconds")
    assert duration >= 0
    assert first == {
        "idemstore_outcome": "executed",
        "idemstore_function": PREFIX,
        "idemstore_store": "memory",
        "idemstore_requests": 2,
        "idemstore_attempts": 1,
        "idemstore_wait_seconds": 0.0,
        "idemstore_error_type": None,
    }
    identity = orders.identify({"id": 1, "card": "4111"})
    assert identity is not None
    digest = identity.key.rsplit("#", 1)[1]
    for record in records:
        text = repr(record.__dict__)
        assert digest not in text
        assert "4111" not in text
        assert "secret-result" not in text


@pytest.mark.asyncio
async def test_without_observers_or_debug_logging_no_call_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []
    orders = engine(InMemoryStore())

    async def call() -> str:
        seen.append(CURRENT_CALL.get())
        return "x"

    with caplog.at_level(logging.INFO, "idemstore"):
        await orders.process({"id": 1}, call)

    assert seen == [None]  # no per-call facts were made
    assert not [r for r in caplog.records if hasattr(r, "idemstore_outcome")]


class Broken:
    def call_started(self, call: CallStart) -> Scope:
        raise RuntimeError("observer bug")

    def event(self, event: Event) -> None:
        raise RuntimeError("observer bug")


@pytest.mark.asyncio
async def test_an_observer_that_raises_changes_nothing(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryStore()
    with observing(Broken()), caplog.at_level(logging.ERROR, "idemstore"):
        outcome = await engine(store).process({"id": 1}, lambda: asyncio.sleep(0, "fine"))
        emit(BatchPrecheck(PREFIX, "memory", hits=0, misses=1))

    assert outcome.value == "fine"
    assert [r.decision.value for r in recorder.reports] == ["executed"]
    assert {r.levelno for r in caplog.records} == {logging.ERROR}
    assert len(caplog.records) == 2
    (item,) = store.items().values()
    assert item["status"] == {"S": "COMPLETED"}  # no lock left behind


@pytest.mark.asyncio
async def test_nested_calls_are_reported_separately(recorder: Recorder) -> None:
    store = InMemoryStore()
    inner = engine(store)

    async def outer_call() -> str:
        value = await inner.process({"id": "inner"}, lambda: asyncio.sleep(0, "in"))
        return f"out:{value.value}"

    outer = engine(store, event_key_jmespath="id")
    await outer.process({"id": "outer"}, outer_call)

    assert [(r.decision.value, r.requests) for r in recorder.reports] == [
        ("executed", 2),  # the inner call ends first
        ("executed", 2),  # the outer call's own requests only
    ]
