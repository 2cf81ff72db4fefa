"""The decision taxonomy, the observer registry and store kinds: pure, no server."""

from __future__ import annotations

import asyncio

import pytest

from idemstore import (
    IdempotencyAlreadyInProgressError,
    IdempotencyKeyError,
    IdempotencyLeaseLostError,
    IdempotencyTableNotFoundError,
    IdempotencyValidationError,
    InMemoryStore,
)
from idemstore.observe import (
    FAILURES,
    BatchPrecheck,
    CallDecision,
    CallFacts,
    CallReport,
    CallScope,
    CallStart,
    Event,
    ObserverRegistry,
    event_log_fields,
    store_kind,
)
from idemstore.outcome import OutcomeKind


class Quiet:
    def call_started(self, call: CallStart) -> CallScope | None:
        return None

    def event(self, event: Event) -> None:
        return None


def test_the_registry_installs_each_observer_once_and_removes_it() -> None:
    registry, first, second = ObserverRegistry(), Quiet(), Quiet()

    registry.add(first)
    registry.add(second)
    registry.add(first)
    assert registry.installed == (first, second)

    registry.remove(first)
    registry.remove(first)  # not installed: ignored
    assert list(registry.installed) == [second]


class Wrapper:
    def __init__(self, inner: object) -> None:
        self.inner = inner


class Named:
    store_kind = "dynamodb-global-table"


def test_store_kinds() -> None:
    assert store_kind(InMemoryStore()) == "memory"
    assert store_kind(Wrapper(Wrapper(InMemoryStore()))) == "memory"
    assert store_kind(Named()) == "dynamodb-global-table"
    assert store_kind(object()) == "object"


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (IdempotencyAlreadyInProgressError("busy"), CallDecision.IN_PROGRESS),
        (IdempotencyValidationError("other payload"), CallDecision.PAYLOAD_MISMATCH),
        (IdempotencyLeaseLostError("taken", idempotency_key="k"), CallDecision.LEASE_LOST),
        (
            IdempotencyTableNotFoundError("t", region_name=None, endpoint_url=None),
            CallDecision.STORE_ERROR,
        ),
        (IdempotencyKeyError("no key"), CallDecision.ERROR),
        (asyncio.CancelledError(), CallDecision.CANCELLED),
        (RuntimeError("engine bug"), CallDecision.ERROR),
    ],
)
def test_errors_map_to_decisions(error: BaseException, decision: CallDecision) -> None:
    assert CallFacts([]).decision(None, error) is decision


def test_what_the_function_raised_is_a_failure_whatever_its_type() -> None:
    facts = CallFacts([])
    error = IdempotencyValidationError("raised by a nested call inside the function")
    facts.function_error = error

    assert facts.decision(None, error) is CallDecision.FAILED


def test_outcomes_map_to_decisions() -> None:
    facts = CallFacts([])
    for kind in OutcomeKind:
        assert facts.decision(kind, None).value == kind.value
    facts.waited = True
    assert facts.decision(OutcomeKind.REPLAYED, None) is CallDecision.WAITED
    facts.unprotected = OutcomeKind.DISABLED
    assert facts.decision(None, ValueError()) is CallDecision.DISABLED


def test_failures_are_errors_and_refusals_are_not() -> None:
    report = CallReport("f", "memory", CallDecision.IN_PROGRESS, 1, 1, 0.0, 0.01, "E", key="k")

    assert not report.failed
    assert "key" not in str(report.log_fields())
    assert {d.value for d in FAILURES} == {
        "failed",
        "lease_lost",
        "store_error",
        "cancelled",
        "error",
    }


def test_batch_precheck_log_fields() -> None:
    assert event_log_fields(BatchPrecheck("f", "dynamodb", hits=3, misses=1)) == {
        "idemstore_event": "batch_precheck",
        "idemstore_function": "f",
        "idemstore_store": "dynamodb",
        "idemstore_hits": 3,
        "idemstore_misses": 1,
    }
