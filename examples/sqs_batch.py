"""Idempotent processing of an SQS batch, concurrently, with partial-failure reporting.

    python examples/sqs_batch.py

Each record is processed once per order id, whatever its message id: SQS
delivers at least once, and producers sometimes send the same order twice.
Failed records are reported in ``batchItemFailures`` so SQS redelivers only
those (the Lambda event source mapping needs ``ReportBatchItemFailures``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dynamodb_endpoint import dynamodb_endpoint
from pydantic import BaseModel

from idemstore import IdempotencyConfig, RecordStore, create_table, idempotent_function

SQSRecord = dict[str, Any]

CONFIG = IdempotencyConfig(
    event_key_jmespath="powertools_json(body).order_id",
    # Duplicates in one batch run side by side: wait for the first to finish, then
    # replay its result, instead of failing the duplicate as "in progress".
    wait_for_in_progress_seconds=10,
)


class Shipment(BaseModel):
    order_id: str
    tracking_number: str


ShipOrder = Callable[[SQSRecord], Awaitable[Shipment]]


def build_processor(store: RecordStore, shipped: list[str]) -> ShipOrder:
    @idempotent_function(data_keyword_argument="record", persistence_store=store, config=CONFIG)
    async def ship_order(record: SQSRecord) -> Shipment:
        order = json.loads(record["body"])
        if order["quantity"] <= 0:
            raise ValueError(f"order {order['order_id']} has no items")
        shipped.append(order["order_id"])  # the side effect that must happen once
        return Shipment(order_id=order["order_id"], tracking_number=uuid.uuid4().hex[:10])

    return ship_order


async def process_batch(event: dict[str, Any], ship_order: ShipOrder) -> dict[str, Any]:
    """Process every record at once; report the ones that failed."""
    records: list[SQSRecord] = event["Records"]
    outcomes = await asyncio.gather(*(ship_order(r) for r in records), return_exceptions=True)
    for record, outcome in zip(records, outcomes, strict=True):
        print(f"  {record['messageId']}: {outcome!r}")
    return {
        "batchItemFailures": [
            {"itemIdentifier": record["messageId"]}
            for record, outcome in zip(records, outcomes, strict=True)
            if isinstance(outcome, Exception)
        ]
    }


def sqs_record(message_id: str, order_id: str, quantity: int) -> SQSRecord:
    body = json.dumps({"order_id": order_id, "quantity": quantity})
    return {"messageId": message_id, "body": body, "eventSource": "aws:sqs"}


async def main() -> tuple[dict[str, Any], list[str]]:
    run = uuid.uuid4().hex[:6]  # fresh order ids, so a rerun against a kept table executes too
    event = {
        "Records": [
            sqs_record("msg-1", f"order-1-{run}", 2),
            sqs_record("msg-2", f"order-2-{run}", 1),
            sqs_record("msg-3", f"order-1-{run}", 2),  # order 1 sent twice by its producer
            sqs_record("msg-4", f"order-3-{run}", 0),  # cannot be shipped: fails
        ]
    }
    shipped: list[str] = []
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store("idemstore-shipments") as store:
            await create_table(store)
            print(f"processing {len(event['Records'])} records concurrently:")
            response = await process_batch(event, build_processor(store, shipped))
    print(f"orders shipped: {len(shipped)}; batch response: {response}")
    return response, shipped


if __name__ == "__main__":
    asyncio.run(main())
