"""Batch processing on the moto server: the request budget, and Powertools interop both ways.

Request counts are those the store's client sends over HTTP. Powertools runs in a
worker thread (its batch processor and idempotent record handler are sync and do
blocking I/O through boto3); both libraries use one table of the server.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import BatchProcessor as PowertoolsBatchProcessor
from aws_lambda_powertools.utilities.batch import EventType
from aws_lambda_powertools.utilities.batch import (
    process_partial_response as powertools_process_partial_response,
)
from powertools_twins import (
    FakeLambdaContext,
    Twins,
    as_lambda_function,
    powertools_config,
    powertools_twin,
)

from idemstore import AsyncDynamoStore, IdempotencyConfig
from idemstore.batch import BatchProcessor, process_partial_response
from idemstore.outcome import OutcomeKind
from idemstore.testing import RequestLog

CONFIG = IdempotencyConfig(event_key_jmespath="messageId")


def sqs(message_id: str, *, receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}-{receive_count}",
        "body": json.dumps({"order_id": message_id}),
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:orders",
        "awsRegion": "eu-west-1",
    }


def batch(count: int, *, receive_count: int = 1) -> dict[str, Any]:
    return {"Records": [sqs(f"m-{n}", receive_count=receive_count) for n in range(count)]}


@pytest.fixture(autouse=True)
def function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_lambda_function(monkeypatch, "orders-service")


# --- the request budget ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_first_delivery_sends_two_requests_per_record_and_no_batch_read(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs: list[str] = []

    async def ship(record: dict[str, Any]) -> dict[str, str]:
        runs.append(record["messageId"])
        return {"shipped": record["messageId"]}

    log = RequestLog().attach(await dynamo_store.client())
    response = await process_partial_response(
        batch(5), ship, persistence_store=dynamo_store, config=CONFIG, context=FakeLambdaContext()
    )

    assert response == {"batchItemFailures": []}
    assert sorted(runs) == [f"m-{n}" for n in range(5)]
    assert sorted(log.operations) == ["PutItem"] * 5 + ["UpdateItem"] * 5


@pytest.mark.asyncio
@pytest.mark.parametrize("count", [5, 150])
async def test_a_redelivered_batch_of_completed_records_costs_one_read_per_hundred(
    dynamo_store: AsyncDynamoStore, count: int
) -> None:
    runs: list[str] = []

    async def ship(record: dict[str, Any]) -> dict[str, str]:
        runs.append(record["messageId"])
        return {"shipped": record["messageId"]}

    processor = BatchProcessor(ship, persistence_store=dynamo_store, config=CONFIG)
    await processor.process(batch(count), FakeLambdaContext())
    log = RequestLog().attach(await dynamo_store.client())

    result = await processor.process(batch(count, receive_count=2), FakeLambdaContext())

    assert log.operations == ["BatchGetItem"] * math.ceil(count / 100)
    assert result.response() == {"batchItemFailures": []}
    assert len(runs) == count  # the redelivery ran nothing
    assert [r.outcome.value for r in result.results if r.outcome] == [
        {"shipped": f"m-{n}"} for n in range(count)
    ]
    assert {r.outcome.kind for r in result.results if r.outcome} == {OutcomeKind.REPLAYED}


@pytest.mark.asyncio
async def test_a_redelivered_batch_runs_only_what_did_not_complete(
    dynamo_store: AsyncDynamoStore,
) -> None:
    failing = {"m-1"}
    runs: list[str] = []

    async def ship(record: dict[str, Any]) -> dict[str, str]:
        runs.append(record["messageId"])
        if record["messageId"] in failing:
            raise RuntimeError("downstream unavailable")
        return {"shipped": record["messageId"]}

    processor = BatchProcessor(ship, persistence_store=dynamo_store, config=CONFIG)
    first = await processor.process(batch(3), FakeLambdaContext())
    failing.clear()
    log = RequestLog().attach(await dynamo_store.client())

    again = await processor.process(batch(3, receive_count=2), FakeLambdaContext())

    assert first.response() == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert again.response() == {"batchItemFailures": []}
    assert sorted(log.operations) == ["BatchGetItem", "PutItem", "UpdateItem"]
    assert sorted(runs) == ["m-0", "m-1", "m-1", "m-2"]


# --- interop with Powertools' batch processor ------------------------------------------------


def record_twins(
    layer: Any,
    *,
    idemstore_result: Callable[[dict[str, Any]], Any] = lambda record: "idemstore",
    powertools_result: Callable[[Any], Any] = lambda record: "powertools",
) -> Twins:
    """A record handler for idemstore's batch processor and its Powertools twin on ``layer``.

    The twin is Powertools' idempotent record handler, named like the handler: the same
    handler before migrating (same module and qualname, so the same keys). Each appends
    its library's name to ``runs`` and returns its own result for the record (by default
    its name): idemstore's handler gets the record as a dict, Powertools' as its
    ``SQSRecord``.
    """
    runs: list[str] = []

    async def ship(record: dict[str, Any]) -> Any:
        runs.append("idemstore")
        return idemstore_result(record)

    @powertools_twin(
        ship,
        layer,
        data_keyword_argument="record",
        config=powertools_config(event_key_jmespath="messageId"),
    )
    def ship_sync(record: Any) -> Any:
        runs.append("powertools")
        return powertools_result(record)

    return Twins(ship, ship_sync, runs)


def run_powertools_batch(event: dict[str, Any], record_handler: Callable[..., Any]) -> Any:
    """Powertools' batch processor over ``event``: its response and each handler's result."""
    results: list[Any] = []

    def noting_results(record: Any) -> Any:
        result = record_handler(record=record)
        results.append(result)
        return result

    processor = PowertoolsBatchProcessor(event_type=EventType.SQS)
    response = powertools_process_partial_response(
        event=event,
        record_handler=noting_results,
        processor=processor,
        context=FakeLambdaContext(),  # type: ignore[arg-type]  # duck-typed: only the time left is read
    )
    return response, results


@pytest.mark.asyncio
async def test_idemstore_replays_a_batch_powertools_processed(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any
) -> None:
    handlers = record_twins(
        powertools_layer,
        powertools_result=lambda record: {"shipped": record.message_id, "body": record.json_body},
    )

    response, _ = await asyncio.to_thread(run_powertools_batch, batch(3), handlers.powertools)
    assert response == {"batchItemFailures": []}
    log = RequestLog().attach(await dynamo_store.client())

    result = await BatchProcessor(
        handlers.idemstore, persistence_store=dynamo_store, config=CONFIG
    ).process(batch(3, receive_count=2), FakeLambdaContext())

    assert handlers.runs == ["powertools"] * 3
    assert result.response() == {"batchItemFailures": []}
    assert [r.outcome.value for r in result.results if r.outcome] == [
        {"shipped": f"m-{n}", "body": {"order_id": f"m-{n}"}} for n in range(3)
    ]
    assert log.operations == ["BatchGetItem"]


@pytest.mark.asyncio
async def test_powertools_replays_a_batch_idemstore_processed(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any
) -> None:
    handlers = record_twins(
        powertools_layer, idemstore_result=lambda record: {"shipped": record["messageId"]}
    )

    first = await process_partial_response(
        batch(3),
        handlers.idemstore,
        persistence_store=dynamo_store,
        config=CONFIG,
        context=FakeLambdaContext(),
    )
    response, results = await asyncio.to_thread(
        run_powertools_batch, batch(3, receive_count=2), handlers.powertools
    )

    assert first == response == {"batchItemFailures": []}
    assert handlers.runs == ["idemstore"] * 3
    assert results == [{"shipped": f"m-{n}"} for n in range(3)]
