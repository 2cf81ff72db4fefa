"""Every idempotency decision in Powertools' structured logs and CloudWatch metrics.

    python examples/lambda_powertools_observability.py

An async Lambda handler whose idempotent calls are reported, through
idemstore's observer hook (``idemstore.observe``), to Powertools for AWS Lambda:
the Logger writes one JSON line per decision with its facts as keys
(``idemstore_outcome``, ``idemstore_requests``, ...), and Metrics writes
CloudWatch Embedded Metric Format to stdout, which Lambda ships to CloudWatch
as metrics. Run as a script, it invokes the handler twice with the same order,
with a fake context, against AWS_ENDPOINT_URL_DYNAMODB (or AWS_ENDPOINT_URL) or
a local server.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from dynamodb_endpoint import dynamodb_endpoint

from idemstore import IdempotencyConfig, RecordStore, create_table, idempotent, lambda_entry_point
from idemstore.observe import CallReport, CallStart, Event, LeaseRenewal, observing

TABLE_NAME = os.environ.get("IDEMPOTENCY_TABLE", "idemstore-orders")
NAMESPACE = "Orders"

CONFIG = IdempotencyConfig(event_key_jmespath="powertools_json(body).order_id")


class PowertoolsObserver:
    """Feeds each call's decision to a Powertools Logger and Metrics."""

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self.logger = logger
        self.metrics = metrics

    def call_started(self, call: CallStart) -> PowertoolsObserver:
        return self  # one scope serves every call: it keeps no per-call state

    def event(self, event: Event) -> None:
        if isinstance(event, LeaseRenewal) and event.result.value != "ok":
            self.logger.warning("idempotency lease renewal", extra={"result": event.result.value})

    def ended(self, report: CallReport) -> None:
        # The facts, never the key, the payload or the result.
        self.logger.info("idempotency decision", extra=report.log_fields())
        # One EMF document per call, so the outcome can be a dimension of this call alone.
        with single_metric(
            name="IdempotentCalls", unit=MetricUnit.Count, value=1, namespace=NAMESPACE
        ) as metric:
            metric.add_dimension(name="outcome", value=report.decision.value)
        # Flushed with the invocation's other metrics by ``log_metrics``.
        self.metrics.add_metric(
            name="IdempotencyStoreRequests", unit=MetricUnit.Count, value=report.requests
        )


ORDERS_CREATED: list[str] = []


def build_handler(store: RecordStore, metrics: Metrics) -> Any:
    @idempotent(persistence_store=store, config=CONFIG)
    async def create_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        ORDERS_CREATED.append(order["order_id"])
        return {"statusCode": 201, "body": json.dumps({"order_id": order["order_id"]})}

    entry_point = lambda_entry_point(create_order)
    # log_metrics prints the invocation's metrics as EMF when the handler returns.
    return entry_point, metrics.log_metrics(entry_point)


@dataclass
class FakeContext:
    function_name: str = "orders"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:orders"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float = field(default_factory=lambda: time.time() + 30)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def main() -> list[dict[str, Any]]:
    """Two invocations with the same order: executed, then replayed."""
    logger = Logger(service="orders")
    metrics = Metrics(namespace=NAMESPACE, service="orders")
    order_id = f"order-{uuid.uuid4().hex[:6]}"
    event = {"body": json.dumps({"order_id": order_id, "amount_cents": 1500})}
    with dynamodb_endpoint() as endpoint, observing(PowertoolsObserver(logger, metrics)):
        store = endpoint.store(TABLE_NAME)
        entry_point, handler = build_handler(store, metrics)
        entry_point.loop.run_until_complete(create_table(store))
        try:
            responses = [handler(event, FakeContext()) for _ in range(2)]
        finally:
            entry_point.loop.run_until_complete(store.aclose())
            entry_point.close()
    print(f"orders created for 2 invocations: {len(ORDERS_CREATED)}")
    return responses


if __name__ == "__main__":
    main()
