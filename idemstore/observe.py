"""Every decision visible: what each idempotent call came to, and the hook that receives it.

The engine reports each call to the observers installed in this process::

    observer.call_started(CallStart)  -> a CallScope (or None to skip the call)
        scope.event(LeaseRenewal | TakeOver | ReleaseFailed | BatchPrecheck)  during the call
        scope.ended(CallReport)        once, with the decision and the call's facts
    observer.event(...)                events outside any call (a batch helper's pre-check)

The registry is process-wide, as OpenTelemetry's instrumentors are: installing
an observer covers every decorated function, middleware and batch in the
process. With none installed and DEBUG logging off, a call costs the engine one
check. Nothing here does I/O or imports anything optional; a report never holds
the payload or the result, and its raw key is for in-process use only (the log
fields and the OpenTelemetry attributes leave it out).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeAlias, runtime_checkable

from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from idemstore.outcome import OutcomeKind

__all__ = [
    "BatchPrecheck",
    "CallDecision",
    "CallReport",
    "CallScope",
    "CallStart",
    "Event",
    "LeaseRenewal",
    "Observer",
    "ObserverRegistry",
    "ReleaseFailed",
    "TakeOver",
    "add_observer",
    "emit",
    "observers",
    "observing",
    "remove_observer",
    "store_kind",
]

logger = logging.getLogger("idemstore")


class CallDecision(StrEnum):
    """What one idempotent call came to: exactly one per call."""

    EXECUTED = "executed"
    """The function ran under the lock (its result stored, or released when ``Unstored``)."""
    REPLAYED = "replayed"
    """A completed record from the store was replayed."""
    CACHED = "cached"
    """A completed record from the local cache was replayed, with no request."""
    ATTACHED = "attached"
    """The same key's call running in this process finished first; its record was replayed."""
    WAITED = "waited"
    """Another caller held the lock; this call waited for it, then replayed its record."""
    IN_PROGRESS = "in_progress"
    """Another caller holds the lock: ``IdempotencyAlreadyInProgressError`` was raised."""
    PAYLOAD_MISMATCH = "payload_mismatch"
    """Same key, different validated payload: ``IdempotencyValidationError`` was raised."""
    FAILED = "failed"
    """The function raised; the lock was released so a retry runs it again."""
    LEASE_LOST = "lease_lost"
    """The lock was taken over while the function ran; its result was not stored."""
    UNPROTECTED = "unprotected"
    """The payload had no idempotency key: the function ran without a record."""
    DISABLED = "disabled"
    """``IDEMSTORE_DISABLED`` is set: the function ran without a record."""
    STORE_ERROR = "store_error"
    """The store failed (``IdempotencyPersistenceLayerError`` and its subclasses)."""
    CANCELLED = "cancelled"
    """The call was cancelled; a lock it held was released."""
    ERROR = "error"
    """Any other error: no key when one is required, a result that cannot be stored or read
    back, a record that kept changing. ``error_type`` names it."""


FAILURES = frozenset(
    {
        CallDecision.FAILED,
        CallDecision.LEASE_LOST,
        CallDecision.STORE_ERROR,
        CallDecision.CANCELLED,
        CallDecision.ERROR,
    }
)
"""Decisions that are errors. ``in_progress`` and ``payload_mismatch`` are not: they are
the protection working (a duplicate refused), as a 409 is for an HTTP server."""


@dataclass(frozen=True, slots=True)
class CallStart:
    """A call about to be decided: which function, on which store."""

    function: str
    """The engine's key prefix: ``{function name}.{module}.{qualname}`` by default."""
    store: str
    """The store's kind: ``dynamodb``, ``memory``, ``redis``, or its class name."""


@dataclass(frozen=True, slots=True)
class CallReport:
    """What a call came to and what it cost. Never the payload or the result."""

    function: str
    store: str
    decision: CallDecision
    requests: int
    """Store operations the engine issued for this call (each one request), renewals included."""
    attempts: int
    """Conditional puts made to take the lock (0 when none was tried)."""
    wait_seconds: float
    """Time spent waiting for another caller's lock or an in-process call with the same key."""
    duration_seconds: float
    error_type: str | None = None
    """The class name of the exception the call raised, when it raised."""
    key: str | None = field(default=None, repr=False)
    """The raw idempotency key, when one was derived: for in-process correlation only.
    Keys are hashes of often guessable data; export a keyed digest, never this."""

    @property
    def failed(self) -> bool:
        """Whether the decision is an error (see ``FAILURES``)."""
        return self.decision in FAILURES

    def log_fields(self) -> dict[str, Any]:
        """The report as ``extra`` fields of a log record (no key)."""
        return {
            "idemstore_outcome": self.decision.value,
            "idemstore_function": self.function,
            "idemstore_store": self.store,
            "idemstore_requests": self.requests,
            "idemstore_attempts": self.attempts,
            "idemstore_wait_seconds": self.wait_seconds,
            "idemstore_duration_seconds": self.duration_seconds,
            "idemstore_error_type": self.error_type,
        }


class RenewalResult(StrEnum):
    OK = "ok"
    FAILED = "failed"
    """The renewal request failed; the heartbeat tries again."""
    LOST = "lost"
    """The lock was taken over; the heartbeat stops."""


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """The heartbeat renewed (or failed to renew) a running call's lease."""

    kind: ClassVar[str] = "lease_renewal"
    function: str
    store: str
    result: RenewalResult


class StaleRecord(StrEnum):
    STALE_LOCK = "stale_lock"
    """An INPROGRESS lock whose lease had lapsed: its holder crashed or stalled."""
    EXPIRED = "expired"
    """A completed record past its expiry."""


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The acquire found a stale lock or an expired record, and is retried over it.

    A first put that takes such a record over silently (PutItem does not say
    what it replaced) is not reported.
    """

    kind: ClassVar[str] = "takeover"
    function: str
    store: str
    found: StaleRecord


@dataclass(frozen=True, slots=True)
class ReleaseFailed:
    """A lock could not be released; it blocks its key until its lease lapses."""

    kind: ClassVar[str] = "release_failed"
    function: str
    store: str
    error_type: str


@dataclass(frozen=True, slots=True)
class BatchPrecheck:
    """A batch looked its records up before running them: ``hits`` were already done."""

    kind: ClassVar[str] = "batch_precheck"
    function: str
    store: str
    hits: int
    misses: int


Event: TypeAlias = LeaseRenewal | TakeOver | ReleaseFailed | BatchPrecheck


@runtime_checkable
class CallScope(Protocol):
    """One observer's view of one call, from ``Observer.call_started`` to ``ended``."""

    def event(self, event: Event) -> None: ...

    def ended(self, report: CallReport) -> None: ...


@runtime_checkable
class Observer(Protocol):
    """Receives every call's decision and every event, in the process it is installed in.

    ``call_started`` runs before the call's first store request, in the caller's
    context (a span made current there is the parent of the store's requests);
    ``ended`` runs in that same context. An observer that raises is logged and
    skipped: it never changes what the call does.
    """

    def call_started(self, call: CallStart) -> CallScope | None: ...

    def event(self, event: Event) -> None:
        """An event outside any call, such as a batch's pre-check."""


class ObserverRegistry:
    """The observers installed; ``installed`` is the tuple the engine checks per call."""

    def __init__(self) -> None:
        self.installed: tuple[Observer, ...] = ()

    def add(self, observer: Observer) -> None:
        """Install ``observer``; installing it again does nothing."""
        if not any(known is observer for known in self.installed):
            self.installed = (*self.installed, observer)

    def remove(self, observer: Observer) -> None:
        """Uninstall ``observer``; one not installed is ignored."""
        self.installed = tuple(known for known in self.installed if known is not observer)


OBSERVERS = ObserverRegistry()
"""The process's observers: process-wide on purpose, like OpenTelemetry's instrumentors."""


def add_observer(observer: Observer) -> None:
    OBSERVERS.add(observer)


def remove_observer(observer: Observer) -> None:
    OBSERVERS.remove(observer)


def observers() -> tuple[Observer, ...]:
    return OBSERVERS.installed


@contextmanager
def observing(observer: Observer) -> Iterator[Observer]:
    """Install ``observer`` for the length of a ``with`` block."""
    OBSERVERS.add(observer)
    try:
        yield observer
    finally:
        OBSERVERS.remove(observer)


_STORE_KINDS = {
    "AsyncDynamoStore": "dynamodb",
    "InMemoryStore": "memory",
    "AsyncRedisStore": "redis",
}


def store_kind(store: object) -> str:
    """A store's kind, as reports name it: its ``store_kind`` attribute, the kind of a
    known store class (or of the store a wrapper's ``inner`` holds), else its class name."""
    for _ in range(8):  # wrappers of wrappers, bounded
        kind = getattr(store, "store_kind", None)
        if isinstance(kind, str):
            return kind
        for cls in type(store).__mro__:
            if cls.__name__ in _STORE_KINDS:
                return _STORE_KINDS[cls.__name__]
        inner = getattr(store, "inner", None)
        if inner is None:
            break
        store = inner
    return type(store).__name__


# --- the call in progress (used by the engine) ------------------------------------


class CallFacts:
    """What the engine learns about one call while it runs; shared with the call's tasks.

    Held in a ContextVar, so the shielded writes and the heartbeat, which run
    in tasks copying the caller's context, count into the same object.
    """

    __slots__ = (
        "attempts",
        "function_error",
        "requests",
        "scopes",
        "unprotected",
        "wait_seconds",
        "waited",
    )

    def __init__(self, scopes: list[CallScope]) -> None:
        self.scopes = scopes
        self.requests = 0
        self.attempts = 0
        self.wait_seconds = 0.0
        self.waited = False
        """Whether this call polled another caller's lock."""
        self.function_error: BaseException | None = None
        """What the function raised, to tell it from the engine's own errors."""
        self.unprotected: OutcomeKind | None = None
        """Why the function ran without a record, once the engine has decided it does."""

    def decision(self, kind: OutcomeKind | None, error: BaseException | None) -> CallDecision:
        """The call's decision, from its outcome's kind or the error it raised."""
        if error is None and kind is not None:
            if kind is OutcomeKind.REPLAYED and self.waited:
                return CallDecision.WAITED
            return CallDecision(kind.value)
        if self.unprotected is not None:
            return CallDecision(self.unprotected.value)
        if isinstance(error, asyncio.CancelledError):
            return CallDecision.CANCELLED
        if error is not None and error is self.function_error:
            return CallDecision.FAILED
        for error_class, decision in _DECISIONS_BY_ERROR:
            if isinstance(error, error_class):
                return decision
        return CallDecision.ERROR


_DECISIONS_BY_ERROR: tuple[tuple[type[BaseException], CallDecision], ...] = (
    (IdempotencyAlreadyInProgressError, CallDecision.IN_PROGRESS),
    (IdempotencyValidationError, CallDecision.PAYLOAD_MISMATCH),
    (IdempotencyLeaseLostError, CallDecision.LEASE_LOST),
    (IdempotencyPersistenceLayerError, CallDecision.STORE_ERROR),
)


CURRENT_CALL: ContextVar[CallFacts | None] = ContextVar("idemstore_call", default=None)


def start_scopes(start: CallStart) -> list[CallScope]:
    """Each installed observer's scope for a call; an observer that raises is skipped."""
    scopes: list[CallScope] = []
    for observer in OBSERVERS.installed:
        try:
            scope = observer.call_started(start)
        except Exception:
            logger.exception("observer %r failed at the start of a call", observer)
            continue
        if scope is not None:
            scopes.append(scope)
    return scopes


def end_scopes(scopes: list[CallScope], report: CallReport) -> None:
    """End each scope with the report, the last started first (as nested contexts end)."""
    for scope in reversed(scopes):
        try:
            scope.ended(report)
        except Exception:
            logger.exception("observer scope %r failed at the end of a call", scope)


def emit(event: Event) -> None:
    """Report an event: to the current call's scopes when it happens in a call, else to
    every observer's ``event`` (a batch helper reports its pre-check this way)."""
    facts = CURRENT_CALL.get()
    targets: tuple[Observer, ...] | list[CallScope] = (
        facts.scopes if facts is not None else OBSERVERS.installed
    )
    for target in targets:
        try:
            target.event(event)
        except Exception:
            logger.exception("observer %r failed on a %s event", target, event.kind)


def count_request(*, attempt: bool = False) -> None:
    """Count a store operation (``attempt``: a lock's put) into the current call, if watched."""
    facts = CURRENT_CALL.get()
    if facts is not None:
        facts.requests += 1
        if attempt:
            facts.attempts += 1


def event_log_fields(event: Event) -> dict[str, Any]:
    """An event as ``extra`` fields of a log record."""
    fields: dict[str, Any] = {
        "idemstore_event": event.kind,
        "idemstore_function": event.function,
        "idemstore_store": event.store,
    }
    if isinstance(event, LeaseRenewal):
        fields["idemstore_lease_result"] = event.result.value
    elif isinstance(event, TakeOver):
        fields["idemstore_found"] = event.found.value
    elif isinstance(event, ReleaseFailed):
        fields["idemstore_error_type"] = event.error_type
    else:
        fields["idemstore_hits"] = event.hits
        fields["idemstore_misses"] = event.misses
    return fields
