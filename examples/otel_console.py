"""OpenTelemetry traces of an idempotent function, printed to the console.

    pip install "idemstore[otel]" opentelemetry-sdk opentelemetry-instrumentation-botocore
    python examples/otel_console.py

Each call is one ``idemstore <function>`` span saying what was decided
(``idemstore.outcome``: executed, replayed, ...); the DynamoDB requests it made,
traced by OpenTelemetry's aiobotocore instrumentation, are its children. The
same two instrumentors trace the FastAPI app (examples/fastapi_app.py): with
``opentelemetry-instrumentation-fastapi`` the request's server span becomes
the parent of the idemstore span. Records go to AWS_ENDPOINT_URL_DYNAMODB (or
AWS_ENDPOINT_URL) or a local server started for the run.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from dynamodb_endpoint import dynamodb_endpoint
from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from idemstore import AsyncDynamoStore, create_table, idempotent_function
from idemstore.otel import IdempotencyInstrumentor


async def charge_twice(store: AsyncDynamoStore) -> None:
    await create_table(store)

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def charge(order: dict[str, str]) -> dict[str, str]:
        return {"order_id": order["order_id"], "charge_id": f"ch_{uuid.uuid4().hex[:8]}"}

    order = {"order_id": f"order-{uuid.uuid4().hex[:6]}"}
    await charge(order=order)
    await charge(order=order)  # a retry: replayed


def span_tree(spans: list[ReadableSpan]) -> list[str]:
    """Each idemstore span with its outcome, and the client spans under it."""
    lines = []
    for span in spans:
        attributes = dict(span.attributes or {})
        if "idemstore.outcome" not in attributes or span.context is None:
            continue
        lines.append(f"{span.name}: {attributes['idemstore.outcome']}")
        parent_id = span.context.span_id
        children = [s for s in spans if s.parent is not None and s.parent.span_id == parent_id]
        lines.extend(f"  {child.name} ({child.status.status_code.name})" for child in children)
    return lines


def main() -> list[str]:
    # Providers passed in rather than set globally, so the example leaves no trace behind.
    provider = TracerProvider()
    # The exporter's default stream is the sys.stdout of the SDK's import; name the current one.
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    kept = InMemorySpanExporter()  # for the summary printed at the end
    provider.add_span_processor(SimpleSpanProcessor(kept))
    aiobotocore = AiobotocoreInstrumentor()  # type: ignore[no-untyped-call]  # unannotated
    aiobotocore.instrument(tracer_provider=provider)
    IdempotencyInstrumentor().instrument(tracer_provider=provider)
    try:
        with dynamodb_endpoint() as endpoint:

            async def run() -> None:
                async with endpoint.store("idemstore-otel") as store:
                    await charge_twice(store)

            asyncio.run(run())
    finally:
        IdempotencyInstrumentor().uninstrument()
        aiobotocore.uninstrument()
        provider.shutdown()
    tree = span_tree(list(kept.get_finished_spans()))
    print("\n".join(tree))
    return tree


if __name__ == "__main__":
    main()
