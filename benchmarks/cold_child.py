"""One cold start, in a fresh interpreter: import, INIT, first and second invocation.

    python -m benchmarks.cold_child CONTENDER ORDER_ID

Run by ``benchmarks.cold_start``, never imported by it: this module imports
only the standard library's ``sys``, ``time`` and ``json`` before the clock
starts, so everything a contender imports is counted as its own. The endpoint
comes from ``AWS_ENDPOINT_URL_DYNAMODB``, which every AWS SDK here reads, so
each contender builds its client exactly as a Lambda function would: no
endpoint argument, no session of its own. Prints one JSON object with the CPU
time (``time.process_time()``, all threads) and wall time of each phase.
"""

from __future__ import annotations

import json
import sys
import time

TYPE_CHECKING = False  # typing itself is not imported before the clock starts
if TYPE_CHECKING:
    from typing import Any

TABLE_NAME = "idemstore-bench"
CONTENDERS = ("idemstore", "idemstore-lazy-client", "raw-aiobotocore", "powertools")


class FakeContext:
    """The part of Lambda's context the libraries read."""

    aws_request_id = "cold-start"
    function_name = "cold-start"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def event(order_id: str) -> dict[str, object]:
    """The same small order as the other workloads' (``benchmarks.contenders.order``)."""
    return {
        "order_id": order_id,
        "customer": "c-1029",
        "amount": 4200,
        "currency": "EUR",
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    }


def result_of(order: dict[str, object]) -> dict[str, object]:
    return {"order_id": order["order_id"], "status": "accepted", "total": order["amount"]}


class Phases:
    """CPU and wall time of consecutive phases, from one starting point."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, float]] = {}
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def mark(self, phase: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.times[phase] = {
            "cpu_ms": (cpu - self._cpu) * 1000,
            "wall_ms": (wall - self._wall) * 1000,
        }
        self._cpu, self._wall = cpu, wall


def idemstore_start(phases: Phases, order_id: str, *, open_at_init: bool) -> None:
    from idemstore import AsyncDynamoStore, idempotent, lambda_entry_point

    phases.mark("import")
    store = AsyncDynamoStore(TABLE_NAME)

    @idempotent(persistence_store=store)
    async def handle(event: dict[str, object], context: object) -> dict[str, object]:
        return result_of(event)

    handler = lambda_entry_point(handle, open_stores=[store] if open_at_init else ())
    phases.mark("init")
    handler(event(order_id), FakeContext())
    phases.mark("first_invocation")
    handler(event(order_id + "-2"), FakeContext())
    phases.mark("second_invocation")
    handler.loop.run_until_complete(store.aclose())  # after the clock: Lambda never closes
    handler.close()


def raw_aiobotocore_start(phases: Phases, order_id: str) -> None:
    """The floor: idemstore's two requests written by hand (as ``RawAiobotocoreContender``
    sends them), on a client made at INIT on one persistent loop."""
    import asyncio
    import uuid

    import aiobotocore.session

    phases.mark("import")
    loop = asyncio.new_event_loop()
    context = aiobotocore.session.get_session().create_client("dynamodb")
    client = loop.run_until_complete(context.__aenter__())
    phases.mark("init")

    async def handle(order: dict[str, object]) -> dict[str, object]:
        key = {"id": {"S": f"test-func.cold.handle#{order['order_id']}"}}
        token = uuid.uuid4().hex
        now = time.time()
        await client.put_item(
            TableName=TABLE_NAME,
            Item={
                **key,
                "expiration": {"N": str(int(now) + 3600)},
                "in_progress_expiration": {"N": str(int(now * 1000) + 30_000)},
                "status": {"S": "INPROGRESS"},
                "owner_token": {"S": token},
            },
            ConditionExpression=(
                "attribute_not_exists(#n0) OR #n1 < :v0 OR "
                "#n2 = :v1 AND attribute_exists(#n3) AND #n3 < :v2"
            ),
            ExpressionAttributeNames={
                "#n0": "id",
                "#n1": "expiration",
                "#n2": "status",
                "#n3": "in_progress_expiration",
            },
            ExpressionAttributeValues={
                ":v0": {"N": str(int(now))},
                ":v1": {"S": "INPROGRESS"},
                ":v2": {"N": str(int(now * 1000))},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        result = result_of(order)
        await client.update_item(
            TableName=TABLE_NAME,
            Key=key,
            ConditionExpression="#n0 = :v0 AND #n1 = :v1",
            UpdateExpression="SET #n0 = :v2, #n2 = :v3, #n3 = :v4 REMOVE #n4",
            ExpressionAttributeNames={
                "#n0": "status",
                "#n1": "owner_token",
                "#n2": "expiration",
                "#n3": "data",
                "#n4": "data_zlib",
            },
            ExpressionAttributeValues={
                ":v0": {"S": "INPROGRESS"},
                ":v1": {"S": token},
                ":v2": {"S": "COMPLETED"},
                ":v3": {"N": str(int(time.time()) + 3600)},
                ":v4": {"S": json.dumps(result, sort_keys=True)},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return result

    loop.run_until_complete(handle(event(order_id)))
    phases.mark("first_invocation")
    loop.run_until_complete(handle(event(order_id + "-2")))
    phases.mark("second_invocation")
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


def powertools_start(phases: Phases, order_id: str) -> None:
    """The Powertools utility as documented: the persistence layer builds its boto3 client."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        idempotent,
    )

    phases.mark("import")
    layer = DynamoDBPersistenceLayer(table_name=TABLE_NAME)

    @idempotent(persistence_store=layer)
    def handler(event: dict[str, object], context: Any) -> dict[str, object]:
        return result_of(event)

    phases.mark("init")
    handler(event(order_id), FakeContext())
    phases.mark("first_invocation")
    handler(event(order_id + "-2"), FakeContext())
    phases.mark("second_invocation")


def main() -> None:
    contender, order_id = sys.argv[1], sys.argv[2]
    if contender not in CONTENDERS:
        raise SystemExit(f"unknown contender {contender!r}; known: {', '.join(CONTENDERS)}")
    phases = Phases()
    if contender == "raw-aiobotocore":
        raw_aiobotocore_start(phases, order_id)
    elif contender == "powertools":
        powertools_start(phases, order_id)
    else:
        idemstore_start(phases, order_id, open_at_init=contender == "idemstore")
    modules = sorted(sys.modules)
    print(json.dumps({"contender": contender, "phases": phases.times, "modules": len(modules)}))


if __name__ == "__main__":
    main()
