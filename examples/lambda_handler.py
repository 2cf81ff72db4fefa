"""An async Lambda handler behind API Gateway that creates each order once.

    python examples/lambda_handler.py

Deployed, Lambda's handler setting is ``lambda_handler.handler``. Run as a
script, it invokes the handler a few times the way a warm execution environment
would, with a fake context, against AWS_ENDPOINT_URL_DYNAMODB (or
AWS_ENDPOINT_URL) or a local server.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dynamodb_endpoint import dynamodb_endpoint

from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    LambdaEntryPoint,
    RecordStore,
    create_table,
    idempotent,
    lambda_entry_point,
)

TABLE_NAME = os.environ.get("IDEMPOTENCY_TABLE", "idemstore-orders")

# The key is the order id in the JSON body: a client retrying with new headers
# or a new request id still gets the first response.
CONFIG = IdempotencyConfig(event_key_jmespath="powertools_json(body).order_id")

ORDERS_CREATED: list[str] = []
"""Stands in for the orders database: the side effect that must happen once per order."""


def build_handler(store: RecordStore) -> LambdaEntryPoint[dict[str, Any]]:
    """The sync handler Lambda calls, around the idempotent async one."""

    @idempotent(persistence_store=store, config=CONFIG)
    async def create_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        ORDERS_CREATED.append(order["order_id"])
        body = {"order_id": order["order_id"], "confirmation": uuid.uuid4().hex[:8]}
        return {"statusCode": 201, "body": json.dumps(body)}

    # One event loop for the whole execution environment: warm invocations reuse
    # the store's DynamoDB client and its open connections.
    return lambda_entry_point(create_order)


# What Lambda calls, built once per execution environment at import. The store
# opens no connection until the first invocation.
handler = build_handler(AsyncDynamoStore(TABLE_NAME))


@dataclass
class FakeContext:
    """The part of Lambda's context object idemstore reads: the time left."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float = field(default_factory=lambda: time.time() + 30)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def api_gateway_event(order_id: str, amount_cents: int) -> dict[str, Any]:
    """A proxy-integration event; each delivery has its own request id."""
    return {
        "httpMethod": "POST",
        "path": "/orders",
        "requestContext": {"requestId": str(uuid.uuid4())},
        "body": json.dumps({"order_id": order_id, "amount_cents": amount_cents}),
    }


def main() -> list[dict[str, Any]]:
    """Four warm invocations: order A, A retried, order B, A retried again."""
    run = uuid.uuid4().hex[:6]  # fresh order ids, so a rerun against a kept table executes too
    events = [api_gateway_event(f"order-{name}-{run}", 1500) for name in ("a", "a", "b", "a")]
    with dynamodb_endpoint() as endpoint:
        store = endpoint.store(TABLE_NAME)
        local_handler = build_handler(store)
        loop = local_handler.loop  # the entry point's persistent loop, reused by every call
        loop.run_until_complete(create_table(store))
        responses = []
        try:
            for number, event in enumerate(events, start=1):
                created = len(ORDERS_CREATED)
                response = local_handler(event, FakeContext())  # sync, as Lambda calls it
                how = "executed" if len(ORDERS_CREATED) > created else "replayed"
                print(f"invocation {number}: {how}  {response['body']}")
                responses.append(response)
        finally:
            loop.run_until_complete(store.aclose())
            local_handler.close()
    print(f"orders created for {len(events)} invocations: {len(ORDERS_CREATED)}")
    return responses


if __name__ == "__main__":
    main()
