"""A redelivered SQS batch of completed records: idemstore's batch processor against Powertools'.

    python -m benchmarks.batch                     # 100 records, 20 rounds, 5 ms per request
    python -m benchmarks.batch --quick             # 3 rounds, to check it works
    python -m benchmarks.batch --delay-ms 0 --out DIR

Every record of the batch was completed by an earlier delivery; the batch comes
back with ``ApproximateReceiveCount`` 2 (a visibility timeout that lapsed, a
function that timed out after its records were done). Contenders, on one table
of moto's server (in a process of its own, behind a proxy that delays each
request by ``--delay-ms`` to stand for the network):

- ``idemstore``: ``BatchProcessor`` with the batch read (the default);
- ``idemstore-no-precheck``: the same with ``precheck="never"`` (one conditional
  put per record, answered with the stored record);
- ``powertools``: Powertools' ``BatchProcessor`` and ``process_partial_response``
  with an ``idempotent_function`` record handler (sync, boto3).

All three replay the records the first delivery stored (the keys are shared).
Reported per contender: DynamoDB requests per batch (counted by the client),
handler runs (must be 0), and the batch's latency (median, p99 over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.processes import ServerProcess

TABLE_NAME = "idemstore-bench-batch"
RECORDS = 100
ENVIRONMENT = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # not a secret: the local server accepts anything
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_NAME": "bench-batch",
    "POWERTOOLS_IDEMPOTENCY_DISABLED": "false",
    "IDEMSTORE_DISABLED": "",
}


class FakeLambdaContext:
    """What both libraries read from the Lambda context: the time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def sqs_batch(count: int, receive_count: int) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{n:04d}",
                "receiptHandle": f"handle-{n}-{receive_count}",
                "body": json.dumps({"order_id": f"o-{n:04d}", "quantity": 1 + n % 3}),
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
                "awsRegion": "us-east-1",
            }
            for n in range(count)
        ]
    }


async def ship_order(record: dict[str, Any]) -> dict[str, Any]:
    """The record handler of every contender (Powertools' twin takes this name)."""
    RUNS["ship_order"] += 1
    order = json.loads(record["body"])
    return {"order_id": order["order_id"], "shipped": order["quantity"]}


RUNS: Counter[str] = Counter()
"""Handler runs by contender: a redelivered batch of completed records runs none."""


def summary(name: str, latencies_s: list[float], requests: list[int], runs: int) -> dict[str, Any]:
    ordered = sorted(latencies_s)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "contender": name,
        "rounds": len(latencies_s),
        "requests_per_batch": statistics.median(requests),
        "handler_runs": runs,
        "latency_median_ms": round(statistics.median(ordered) * 1000, 2),
        "latency_p99_ms": round(p99 * 1000, 2),
    }


# --- idemstore ------------------------------------------------------------------------


async def idemstore_rounds(url: str, rounds: int) -> tuple[list[dict[str, Any]], int]:
    from idemstore import AsyncDynamoStore, IdempotencyConfig, create_table
    from idemstore.batch import BatchProcessor, Precheck
    from idemstore.loopback import RequestLog

    config = IdempotencyConfig(event_key_jmespath="messageId")
    rows = []
    async with AsyncDynamoStore(TABLE_NAME, endpoint_url=url) as store:
        await create_table(store)
        first = await BatchProcessor(ship_order, persistence_store=store, config=config).process(
            sqs_batch(RECORDS, 1), FakeLambdaContext()
        )
        stored = sum(1 for r in first.results if r.outcome is not None and r.outcome.stored)
        log = RequestLog().attach(await store.client())
        prechecks: tuple[tuple[str, Precheck], ...] = (
            ("idemstore", "on_redelivery"),
            ("idemstore-no-precheck", "never"),
        )
        for name, precheck in prechecks:
            processor = BatchProcessor(
                ship_order, persistence_store=store, config=config, precheck=precheck
            )
            RUNS.clear()
            latencies: list[float] = []
            requests: list[int] = []
            for _ in range(rounds):
                log.clear()
                started = time.perf_counter()
                result = await processor.process(sqs_batch(RECORDS, 2), FakeLambdaContext())
                latencies.append(time.perf_counter() - started)
                requests.append(log.count)
                if result.failures:
                    raise RuntimeError(f"{name}: {len(result.failures)} records failed")
            rows.append(summary(name, latencies, requests, RUNS["ship_order"]))
    return rows, stored


# --- Powertools -------------------------------------------------------------------------


def powertools_rounds(url: str, rounds: int) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped]  # boto3 ships no type information
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    sent: list[str] = []
    client.meta.events.register(
        "before-send.dynamodb", lambda event_name, **_: sent.append(event_name)
    )
    layer = DynamoDBPersistenceLayer(table_name=TABLE_NAME, boto3_client=client)
    config = IdempotencyConfig(event_key_jmespath="messageId")
    fake: Any = FakeLambdaContext()  # duck-typed: only the remaining time is read
    config.register_lambda_context(fake)

    def ship_order_sync(record: Any) -> dict[str, Any]:
        RUNS["ship_order"] += 1
        return {"unexpected": True}

    # The same module and qualname as idemstore's handler: the same keys.
    ship_order_sync.__module__ = ship_order.__module__
    ship_order_sync.__qualname__ = ship_order.__qualname__
    handler: Callable[..., Any] = idempotent_function(
        ship_order_sync, data_keyword_argument="record", persistence_store=layer, config=config
    )
    RUNS.clear()
    latencies: list[float] = []
    requests: list[int] = []
    for _ in range(rounds):
        sent.clear()
        processor = BatchProcessor(event_type=EventType.SQS)
        started = time.perf_counter()
        response = process_partial_response(
            event=sqs_batch(RECORDS, 2),
            record_handler=handler,
            processor=processor,
            context=fake,
        )
        latencies.append(time.perf_counter() - started)
        requests.append(len(sent))
        if response["batchItemFailures"]:
            raise RuntimeError(f"powertools: {response['batchItemFailures']}")
    return summary("powertools", latencies, requests, RUNS["ship_order"])


# --- the run ------------------------------------------------------------------------------


def run(rounds: int, delay_ms: float) -> dict[str, Any]:
    os.environ.update(ENVIRONMENT)
    with (
        ServerProcess("benchmarks.moto_endpoint") as moto,
        ServerProcess(
            "benchmarks.latency_proxy", "--upstream", moto.url, "--delay-ms", str(delay_ms)
        ) as proxy,
    ):
        rows, stored = asyncio.run(idemstore_rounds(proxy.url, rounds))
        rows.append(powertools_rounds(proxy.url, rounds))
    return {
        "records": RECORDS,
        "records_stored_by_first_delivery": stored,
        "rounds": rounds,
        "delay_ms": delay_ms,
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Redelivered SQS batch of {report['records']} completed records",
        "",
        f"{report['rounds']} rounds, {report['delay_ms']} ms added per request (moto server).",
        "",
        "| contender | requests / batch | handler runs | median ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['contender']} | {row['requests_per_batch']} | {row['handler_runs']} "
            f"| {row['latency_median_ms']} | {row['latency_p99_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--out", type=Path, help="a directory for batch.json and batch.md")
    args = parser.parse_args(argv)
    report = run(3 if args.quick else args.rounds, args.delay_ms)
    text = markdown(report)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "batch.md").write_text(text)


if __name__ == "__main__":
    main()
