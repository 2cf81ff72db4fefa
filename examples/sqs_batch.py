"""Idempotent processing of an SQS batch with ``idemstore.batch``.

    python examples/sqs_batch.py

Each record is processed once per order id, whatever its message id: SQS
delivers at least once, and producers sometimes send the same order twice. The
batch processor runs the records concurrently, runs a duplicate order once and
gives the other record its result, and reports the failed record in
``batchItemFailures`` so SQS redelivers only that one (the Lambda event source
mapping needs ``ReportBatchItemFailures``). The redelivered batch is answered
by one read for the completed records.

In a Lambda function the same processor is called from the handler::

    processor = BatchProcessor(ship_order, persistence_store=store, config=CONFIG)

    @lambda_entry_point
    async def handler(event, context):
        return await processor.process_partial_response(event, context)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from dynamodb_endpoint import dynamodb_endpoint
from pydantic import BaseModel

from idemstore import IdempotencyConfig, RecordStore, create_table
from idemstore.batch import BatchProcessor, BatchResult
from idemstore.loopback import RequestLog

CONFIG = IdempotencyConfig(event_key_jmespath="powertools_json(body).order_id")


class Shipment(BaseModel):
    order_id: str
    tracking_number: str


class FakeLambdaContext:
    """The part of the Lambda context the processor reads: the time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def build_processor(store: RecordStore, shipped: list[str]) -> BatchProcessor:
    async def ship_order(record: dict[str, Any]) -> Shipment:
        order = json.loads(record["body"])
        if order["quantity"] <= 0:
            raise ValueError(f"order {order['order_id']} has no items")
        shipped.append(order["order_id"])  # the side effect that must happen once
        return Shipment(order_id=order["order_id"], tracking_number=uuid.uuid4().hex[:10])

    return BatchProcessor(ship_order, persistence_store=store, config=CONFIG)


def show(result: BatchResult) -> None:
    for item in result.results:
        if item.outcome is not None:
            print(f"  {item.identifier}: {item.outcome.kind} {item.outcome.value!r}")
        else:
            print(f"  {item.identifier}: failed {item.error!r}")


def sqs_record(message_id: str, order_id: str, quantity: int, receive_count: int) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "body": json.dumps({"order_id": order_id, "quantity": quantity}),
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:shipments",
    }


def sqs_event(run: str, receive_count: int) -> dict[str, Any]:
    return {
        "Records": [
            sqs_record("msg-1", f"order-1-{run}", 2, receive_count),
            sqs_record("msg-2", f"order-2-{run}", 1, receive_count),
            sqs_record("msg-3", f"order-1-{run}", 2, receive_count),  # order 1 sent twice
            sqs_record("msg-4", f"order-3-{run}", 0, receive_count),  # cannot be shipped: fails
        ]
    }


async def main() -> tuple[dict[str, Any], list[str], list[str]]:
    run = uuid.uuid4().hex[:6]  # fresh order ids, so a rerun against a kept table executes too
    shipped: list[str] = []
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store("idemstore-shipments") as store:
            await create_table(store)
            processor = build_processor(store, shipped)
            print("first delivery, 4 records:")
            result = await processor.process(sqs_event(run, 1), FakeLambdaContext())
            show(result)
            response = result.response()
            print(f"orders shipped: {len(shipped)}; batch response: {response}")

            log = RequestLog().attach(await store.client())
            print("the same batch redelivered:")
            show(await processor.process(sqs_event(run, 2), FakeLambdaContext()))
            print(f"requests for the redelivery: {log.operations}")
    return response, shipped, log.operations


if __name__ == "__main__":
    asyncio.run(main())
