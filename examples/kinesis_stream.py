"""Idempotent, in-order processing of a Kinesis batch with ``idemstore.batch``.

    python examples/kinesis_stream.py

A ledger applies account events from a Kinesis stream. Order matters, so the
records of a batch run one after the other; when one fails, the records after
it are reported failed without running, and Lambda retries from the first
failed sequence number (checkpoint semantics). Each event applies once per
event id: the producer sent one event twice, and the retry replays it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

from dynamodb_endpoint import dynamodb_endpoint

from idemstore import IdempotencyConfig, create_table
from idemstore.batch import process_partial_response

CONFIG = IdempotencyConfig(
    event_key_jmespath="powertools_json(powertools_base64(kinesis.data)).event_id"
)


class Ledger:
    def __init__(self, unavailable_once: set[str]) -> None:
        self.balance = 0
        self.applied: list[str] = []
        self.unavailable_once = unavailable_once  # events that fail on their first attempt

    async def apply(self, record: dict[str, Any]) -> int:
        event = json.loads(base64.b64decode(record["kinesis"]["data"]))
        if event["event_id"] in self.unavailable_once:
            self.unavailable_once.discard(event["event_id"])
            raise ConnectionError("ledger unavailable")
        sign = 1 if event["op"] == "deposit" else -1
        self.balance += sign * event["amount"]
        self.applied.append(f"{event['op']} {event['amount']}")
        return self.balance


def kinesis_record(sequence: int, event_id: str, op: str, amount: int) -> dict[str, Any]:
    data = json.dumps({"event_id": event_id, "op": op, "amount": amount})
    return {
        "eventSource": "aws:kinesis",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/ledger",
        "kinesis": {
            "sequenceNumber": str(sequence),
            "partitionKey": "account-1",
            "data": base64.b64encode(data.encode()).decode(),
        },
    }


async def main() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    run = uuid.uuid4().hex[:6]  # fresh event ids, so a rerun against a kept table applies too
    records = [
        kinesis_record(1, f"e-1-{run}", "deposit", 100),
        kinesis_record(2, f"e-2-{run}", "withdraw", 30),
        kinesis_record(3, f"e-3-{run}", "deposit", 5),
        kinesis_record(4, f"e-4-{run}", "withdraw", 50),
        kinesis_record(5, f"e-2-{run}", "withdraw", 30),  # event 2, sent again by its producer
    ]
    ledger = Ledger(unavailable_once={f"e-3-{run}"})
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store("idemstore-ledger") as store:
            await create_table(store)

            async def apply_event(record: dict[str, Any]) -> int:
                return await ledger.apply(record)

            async def invoke(batch: list[dict[str, Any]]) -> dict[str, Any]:
                return await process_partial_response(
                    {"Records": batch},
                    apply_event,
                    persistence_store=store,
                    config=CONFIG,
                    event_type="KinesisDataStreams",
                )

            first = await invoke(records)
            print(f"first attempt: {first}")
            # Lambda retries from the first failed sequence number.
            failed_from = first["batchItemFailures"][0]["itemIdentifier"]
            retry = [r for r in records if int(r["kinesis"]["sequenceNumber"]) >= int(failed_from)]
            second = await invoke(retry)
            print(f"retry from sequence {failed_from}: {second}")
    print(f"applied: {ledger.applied}; balance: {ledger.balance}")
    return first, second, ledger.applied


if __name__ == "__main__":
    asyncio.run(main())
