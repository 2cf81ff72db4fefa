"""OpenTelemetry: the real SDK's in-memory exporters, against the moto server.

One ``idemstore <function>`` span per call, its outcome on every path, the
DynamoDB client spans of OpenTelemetry's aiobotocore instrumentation (lease
renewals included) as its children, metrics by outcome, and no raw key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from engine.observed_paths import PREFIX, SCENARIOS, engine
from idemstore import AsyncDynamoStore, IdempotencyConfigurationError
from idemstore.integrations.asgi import HttpIdempotencyConfig, IdempotencyMiddleware
from idemstore.observe import BatchPrecheck, ReleaseFailed, StaleRecord, TakeOver, emit, observers
from idemstore.otel import IdempotencyInstrumentor

SECRET = b"correlate-but-do-not-expose"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def calls(self) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name.startswith("idemstore ")]

    def outcomes(self) -> list[str]:
        return sorted(str(_attrs(span)["idemstore.outcome"]) for span in self.calls())

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            span
            for span in self.finished()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _instrument(digest_secret: bytes | None) -> Iterator[Telemetry]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    aiobotocore = AiobotocoreInstrumentor()  # type: ignore[no-untyped-call]  # unannotated
    aiobotocore.instrument(tracer_provider=tracer_provider)
    IdempotencyInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        key_digest_secret=digest_secret,
    )
    try:
        yield Telemetry(spans, reader, tracer_provider)
    finally:
        IdempotencyInstrumentor().uninstrument()
        aiobotocore.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    assert not observers()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    yield from _instrument(None)


@pytest.fixture
def telemetry_with_digest() -> Iterator[Telemetry]:
    yield from _instrument(SECRET)


@pytest.mark.asyncio
@pytest.mark.parametrize("path", sorted(SCENARIOS))
async def test_one_span_per_call_with_its_outcome(
    path: str, telemetry: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    expected = await SCENARIOS[path](dynamo_store)

    assert telemetry.outcomes() == sorted(expected)
    for span in telemetry.calls():
        attributes = _attrs(span)
        assert span.name == f"idemstore {PREFIX}"
        assert span.kind is SpanKind.INTERNAL
        assert attributes["idemstore.function"] == PREFIX
        assert attributes["idemstore.store"] == "dynamodb"
        failure = attributes["idemstore.outcome"] in {
            "failed",
            "lease_lost",
            "store_error",
            "cancelled",
            "error",
        }
        assert (span.status.status_code is StatusCode.ERROR) == failure
        assert ("error.type" in attributes) == failure
        # Each DynamoDB request the engine made is a child of its call's span.
        requests = [
            child for child in telemetry.children(span) if child.name.startswith("DynamoDB")
        ]
        if path == "lease_lost":  # the function itself reads and overwrites its record
            assert len(requests) == attributes["idemstore.requests"] + 2
        elif path != "store_error":  # whose store double refuses puts without a request
            assert len(requests) == attributes["idemstore.requests"]


@pytest.mark.asyncio
async def test_dynamodb_spans_nest_under_the_call_and_keys_stay_out(
    telemetry: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    orders = engine(dynamo_store)
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as handler:
        await orders.process({"id": 1}, lambda: asyncio.sleep(0, "done"))
        await orders.process({"id": 1}, lambda: asyncio.sleep(0, "again"))

    fresh, duplicate = telemetry.calls()
    assert fresh.parent is not None
    assert fresh.parent.span_id == handler.get_span_context().span_id
    assert [span.name for span in telemetry.children(fresh)] == [
        "DynamoDB.PutItem",
        "DynamoDB.UpdateItem",
    ]
    (refused_put,) = telemetry.children(duplicate)
    # A replay's refused conditional put is an error span of the client instrumentation;
    # the parent call span says what it meant.
    assert refused_put.name == "DynamoDB.PutItem"
    assert refused_put.status.status_code is StatusCode.ERROR
    assert _attrs(duplicate)["idemstore.outcome"] == "replayed"
    assert duplicate.status.status_code is StatusCode.UNSET

    identity = orders.identify({"id": 1})
    assert identity is not None
    digest = identity.key.rsplit("#", 1)[1]
    for span in telemetry.calls():
        assert "idemstore.key_digest" not in _attrs(span)
        assert not any(digest in str(value) for value in _attrs(span).values())
        assert not any(digest in str(event.attributes) for event in span.events)


@pytest.mark.asyncio
async def test_lease_renewals_nest_under_the_call(
    telemetry: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    orders = engine(dynamo_store, in_progress_lease_seconds=0.3)  # renewed every 0.1 s

    await orders.process({"id": 1}, lambda: asyncio.sleep(0.25, "slow"))

    (call,) = telemetry.calls()
    names = [span.name for span in telemetry.children(call)]
    renewals = [event for event in call.events if event.name == "idemstore.lease_renewal"]
    assert renewals
    # The lock's put, the renewals, the completion; a renewal still on the wire when the
    # call ends (a loaded machine) has its span but no event, hence at least, not exactly.
    assert names[0] == "DynamoDB.PutItem"
    assert set(names[1:]) == {"DynamoDB.UpdateItem"}
    assert len(names[1:]) >= len(renewals) + 1
    assert {dict(event.attributes or {})["idemstore.lease.result"] for event in renewals} == {"ok"}
    (renewed,) = telemetry.points("idemstore.lease.renewals")
    assert renewed.value == len(renewals)
    assert dict(renewed.attributes)["idemstore.lease.result"] == "ok"


@pytest.mark.asyncio
async def test_the_opt_in_key_digest_is_a_keyed_hmac(
    telemetry_with_digest: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    orders = engine(dynamo_store)
    await orders.process({"id": 1}, lambda: asyncio.sleep(0, "done"))

    identity = orders.identify({"id": 1})
    assert identity is not None
    (call,) = telemetry_with_digest.calls()
    expected = hmac.new(SECRET, identity.key.encode(), hashlib.sha256).hexdigest()
    assert _attrs(call)["idemstore.key_digest"] == expected


@pytest.mark.asyncio
async def test_metrics_by_outcome(telemetry: Telemetry, dynamo_store: AsyncDynamoStore) -> None:
    await SCENARIOS["waited"](dynamo_store)
    await engine(dynamo_store).process({"id": 1}, lambda: asyncio.sleep(0, "again"))
    emit(BatchPrecheck(PREFIX, "dynamodb", hits=3, misses=2))

    durations = {
        dict(point.attributes)["idemstore.outcome"]: point
        for point in telemetry.points("idemstore.call.duration")
    }
    assert set(durations) == {"executed", "replayed", "waited"}
    assert all(isinstance(point, HistogramDataPoint) for point in durations.values())
    assert durations["executed"].count == durations["replayed"].count == 1
    assert durations["waited"].count == 1
    requests = {
        dict(point.attributes)["idemstore.outcome"]: point.sum
        for point in telemetry.points("idemstore.call.requests")
    }
    assert requests["executed"] == 2  # put + completion
    assert requests["replayed"] == 1
    (waits,) = telemetry.points("idemstore.call.wait_time")
    assert dict(waits.attributes)["idemstore.outcome"] == "waited"
    assert waits.sum > 0
    precheck = {
        dict(point.attributes)["idemstore.batch.precheck.result"]: point.value
        for point in telemetry.points("idemstore.batch.precheck.records")
    }
    assert precheck == {"hit": 3, "miss": 2}


def test_take_overs_and_failed_releases_are_counted_with_their_attributes(
    telemetry: Telemetry,
) -> None:
    emit(TakeOver(PREFIX, "memory", StaleRecord.STALE_LOCK))
    emit(TakeOver(PREFIX, "memory", StaleRecord.STALE_LOCK))
    emit(ReleaseFailed(PREFIX, "dynamodb", "IdempotencyPersistenceLayerError"))

    (takeovers,) = telemetry.points("idemstore.lock.takeovers")
    assert takeovers.value == 2
    assert dict(takeovers.attributes) == {
        "idemstore.function": PREFIX,
        "idemstore.store": "memory",
        "idemstore.lock.found": "stale_lock",
    }
    (failures,) = telemetry.points("idemstore.lock.release_failures")
    assert failures.value == 1
    assert dict(failures.attributes) == {
        "idemstore.function": PREFIX,
        "idemstore.store": "dynamodb",
        "error.type": "IdempotencyPersistenceLayerError",
    }


def instrumented() -> bool:
    return IdempotencyInstrumentor().is_instrumented_by_opentelemetry


def test_instrument_is_idempotent_and_uninstrument_stops_it(
    telemetry: Telemetry,
) -> None:
    instrumentor = IdempotencyInstrumentor()
    assert instrumentor is IdempotencyInstrumentor()  # one per process
    assert instrumented()
    installed = observers()

    instrumentor.instrument()  # again: nothing changes
    assert observers() == installed

    instrumentor.uninstrument()
    instrumentor.uninstrument()
    assert not instrumented()
    assert observers() == ()


@pytest.mark.parametrize("secret", [b"short", "not-bytes-but-long-enough"])
def test_a_weak_digest_secret_is_refused(secret: Any) -> None:
    with pytest.raises(IdempotencyConfigurationError, match="key_digest_secret"):
        IdempotencyInstrumentor().instrument(key_digest_secret=secret)
    assert not instrumented()


@pytest.mark.asyncio
async def test_suppressed_instrumentation_records_nothing(
    telemetry: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    with suppress_instrumentation():
        await engine(dynamo_store).process({"id": 1}, lambda: asyncio.sleep(0, "quiet"))

    assert telemetry.calls() == []
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.asyncio
async def test_the_http_middleware_gets_one_span_per_request(
    telemetry: Telemetry, dynamo_store: AsyncDynamoStore
) -> None:
    app = FastAPI()
    app.add_middleware(IdempotencyMiddleware, store=dynamo_store, config=HttpIdempotencyConfig())

    @app.post("/payments")
    async def pay() -> dict[str, str]:
        return {"payment": "p-1"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = [
            await client.post("/payments", headers={"Idempotency-Key": "k-1"}, json={})
            for _ in range(2)
        ]

    assert [answer.json() for answer in answers] == [{"payment": "p-1"}] * 2
    assert [_attrs(span)["idemstore.outcome"] for span in telemetry.calls()] == [
        "executed",
        "replayed",
    ]
    fresh, duplicate = telemetry.calls()
    assert [span.name for span in telemetry.children(fresh)] == [
        "DynamoDB.PutItem",
        "DynamoDB.UpdateItem",
    ]
    assert [span.name for span in telemetry.children(duplicate)] == ["DynamoDB.PutItem"]
