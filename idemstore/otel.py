"""OpenTelemetry for idemstore: a span per idempotent call, and metrics. Optional.

    pip install "idemstore[otel]"

    from idemstore.otel import IdempotencyInstrumentor
    IdempotencyInstrumentor().instrument()   # global tracer and meter providers

Shaped like OpenTelemetry's instrumentors (one instance per process,
``instrument``/``uninstrument`` idempotent, providers passed in or global), but
needing only ``opentelemetry-api``: it installs an ``idemstore.observe``
observer. Each call gets one INTERNAL span, ``idemstore <function>``, made
current before the call's first store request, so the DynamoDB client spans of
OpenTelemetry's aiobotocore instrumentation (lease renewals included) are its
children.

No raw idempotency key is ever recorded: keys are hashes of often guessable
data. ``key_digest_secret`` adds ``idemstore.key_digest``, an HMAC-SHA256 of the
key, to correlate calls without exposing it. Exception messages are not
recorded either (they may quote the key); ``error.type`` names the class.
"""

from __future__ import annotations

import hashlib
import hmac
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from idemstore import __version__
from idemstore.errors import IdempotencyConfigurationError
from idemstore.observe import (
    OBSERVERS,
    BatchPrecheck,
    CallReport,
    CallStart,
    Event,
    LeaseRenewal,
    ReleaseFailed,
    TakeOver,
)

__all__ = ["IdempotencyInstrumentor"]

INSTRUMENTATION_NAME = "idemstore"

# Attribute names: OpenTelemetry's ``error.type``, the rest in the library's namespace.
OUTCOME = "idemstore.outcome"
FUNCTION = "idemstore.function"
STORE = "idemstore.store"
REQUESTS = "idemstore.requests"
ATTEMPTS = "idemstore.acquire_attempts"
WAIT_TIME = "idemstore.wait_time"
KEY_DIGEST = "idemstore.key_digest"
ERROR_TYPE = "error.type"
LEASE_RESULT = "idemstore.lease.result"
FOUND = "idemstore.lock.found"
PRECHECK_RESULT = "idemstore.batch.precheck.result"

# The API's own flag that ``suppress_instrumentation`` sets: nothing is recorded under it.
_SUPPRESSED = otel_context._SUPPRESS_INSTRUMENTATION_KEY


class _Instruments:
    """The tracer and the metric instruments of one ``instrument()``."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider)
        self.call_duration = meter.create_histogram(
            "idemstore.call.duration",
            unit="s",
            description="Duration of idempotent calls, by outcome.",
        )
        self.wait_time = meter.create_histogram(
            "idemstore.call.wait_time",
            unit="s",
            description="Time calls waited for another caller's lock or an in-process call.",
        )
        self.requests = meter.create_histogram(
            "idemstore.call.requests",
            unit="{request}",
            description="Store requests made per idempotent call.",
        )
        self.renewals = meter.create_counter(
            "idemstore.lease.renewals",
            unit="{renewal}",
            description="Lease renewals of running calls, by result (ok, failed, lost).",
        )
        self.takeovers = meter.create_counter(
            "idemstore.lock.takeovers",
            unit="{takeover}",
            description="Stale locks and expired records found and taken over.",
        )
        self.release_failures = meter.create_counter(
            "idemstore.lock.release_failures",
            unit="{failure}",
            description="Locks that could not be released and hold until their lease lapses.",
        )
        self.precheck = meter.create_counter(
            "idemstore.batch.precheck.records",
            unit="{record}",
            description="Batch records looked up before running, by result (hit, miss).",
        )
        self._counters: dict[type[Event], metrics.Counter] = {
            LeaseRenewal: self.renewals,
            TakeOver: self.takeovers,
            ReleaseFailed: self.release_failures,
        }

    def count_event(self, event: Event) -> None:
        where = {FUNCTION: event.function, STORE: event.store}
        if isinstance(event, BatchPrecheck):
            self.precheck.add(event.hits, {**where, PRECHECK_RESULT: "hit"})
            self.precheck.add(event.misses, {**where, PRECHECK_RESULT: "miss"})
            return
        # One count, with the span event's attributes plus where it happened.
        self._counters[type(event)].add(1, {**where, **_event_attributes(event)})


def _event_attributes(event: Event) -> dict[str, Any]:
    if isinstance(event, LeaseRenewal):
        return {LEASE_RESULT: event.result.value}
    if isinstance(event, TakeOver):
        return {FOUND: event.found.value}
    if isinstance(event, ReleaseFailed):
        return {ERROR_TYPE: event.error_type}
    return {
        "idemstore.batch.precheck.hits": event.hits,
        "idemstore.batch.precheck.misses": event.misses,
    }


class _CallSpan:
    """One call's span, current from the call's start to its end."""

    def __init__(self, observer: _SpanObserver, span: trace.Span, token: Token[Context]) -> None:
        self._observer = observer
        self._span = span
        self._token = token
        self._ended = False

    def event(self, event: Event) -> None:
        self._observer.instruments.count_event(event)
        if not self._ended:  # a cleanup may report after the call has ended
            self._span.add_event(f"idemstore.{event.kind}", _event_attributes(event))

    def ended(self, report: CallReport) -> None:
        self._ended = True
        span = self._span
        try:
            attributes: dict[str, Any] = {
                OUTCOME: report.decision.value,
                REQUESTS: report.requests,
                ATTEMPTS: report.attempts,
            }
            if report.wait_seconds > 0:
                attributes[WAIT_TIME] = report.wait_seconds
            digest = self._observer.digest(report.key)
            if digest is not None:
                attributes[KEY_DIGEST] = digest
            if report.failed and report.error_type is not None:
                attributes[ERROR_TYPE] = report.error_type
                span.set_status(Status(StatusCode.ERROR, report.error_type))
            span.set_attributes(attributes)
            span.end()
            self._observer.record(report)
        finally:
            otel_context.detach(self._token)


class _SpanObserver:
    """The ``idemstore.observe`` observer an ``instrument()`` installs."""

    def __init__(self, instruments: _Instruments, key_digest_secret: bytes | None) -> None:
        self.instruments = instruments
        self._secret = key_digest_secret

    def call_started(self, call: CallStart) -> _CallSpan | None:
        if otel_context.get_value(_SUPPRESSED):
            return None
        span = self.instruments.tracer.start_span(
            f"idemstore {call.function}",
            kind=SpanKind.INTERNAL,
            attributes={FUNCTION: call.function, STORE: call.store},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return _CallSpan(self, span, token)

    def event(self, event: Event) -> None:
        self.instruments.count_event(event)

    def digest(self, key: str | None) -> str | None:
        if self._secret is None or key is None:
            return None
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def record(self, report: CallReport) -> None:
        where: dict[str, Any] = {
            OUTCOME: report.decision.value,
            FUNCTION: report.function,
            STORE: report.store,
        }
        if report.failed and report.error_type is not None:
            where[ERROR_TYPE] = report.error_type
        self.instruments.call_duration.record(report.duration_seconds, where)
        self.instruments.requests.record(report.requests, where)
        if report.wait_seconds > 0:
            self.instruments.wait_time.record(report.wait_seconds, where)


class IdempotencyInstrumentor:
    """Traces and measures idempotent calls. One instance per process, as OpenTelemetry's
    instrumentors are: ``IdempotencyInstrumentor()`` always returns it."""

    _instance: IdempotencyInstrumentor | None = None
    _observer: _SpanObserver | None

    def __new__(cls) -> IdempotencyInstrumentor:
        if cls._instance is None:
            instance = super().__new__(cls)
            instance._observer = None
            cls._instance = instance
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._observer is not None

    def instrument(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        key_digest_secret: bytes | None = None,
    ) -> None:
        """Start tracing and measuring; the global providers when none are given.

        ``key_digest_secret`` (at least 16 bytes) adds ``idemstore.key_digest``,
        HMAC-SHA256 of the key under it. Instrumenting again does nothing:
        ``uninstrument`` first to change the providers.
        """
        if self._observer is not None:
            return
        if key_digest_secret is not None and (
            not isinstance(key_digest_secret, bytes) or len(key_digest_secret) < 16
        ):
            raise IdempotencyConfigurationError(
                "key_digest_secret must be bytes, at least 16 of them"
            )
        observer = _SpanObserver(_Instruments(tracer_provider, meter_provider), key_digest_secret)
        OBSERVERS.add(observer)
        self._observer = observer

    def uninstrument(self) -> None:
        """Stop; calls already running finish their spans. Doing it twice does nothing."""
        if self._observer is None:
            return
        OBSERVERS.remove(self._observer)
        self._observer = None
