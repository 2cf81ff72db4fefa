"""Results Powertools could have stored stay readable by Powertools; only a result too
large for an item as text is stored compressed, and replays in idemstore. Typed
results written by either library replay in the other.

Powertools' sync decorator runs in a worker thread against the same moto server and
table, on a function with the same module and qualname (the same keys).
"""

import asyncio
import dataclasses
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.serialization.dataclass import (
    DataclassSerializer as PowertoolsDataclassSerializer,
)
from powertools_twins import F, as_lambda_function, powertools_twin

from idemstore import AsyncDynamoStore, idempotent_function
from idemstore.testing import MotoEndpoint


@pytest.fixture(autouse=True)
def function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_lambda_function(monkeypatch, "reports-service")


def request_twin(twin: Callable[..., Any], layer: Any, **options: Any) -> Callable[[F], F]:
    """Powertools' twin of a function whose payload is its ``request`` argument."""
    return powertools_twin(twin, layer, data_keyword_argument="request", **options)


def report(size_bytes: int) -> dict[str, Any]:
    """A JSON result of about ``size_bytes``, compressible like most real results."""
    rows = [{"row": i, "status": "shipped", "note": "on time"} for i in range(size_bytes // 48)]
    return {"rows": rows}


async def stored_item(store: AsyncDynamoStore, function: Any, payload: Any) -> dict[str, Any]:
    key = function.idempotency_engine.identify(payload).key
    client = await store.client()
    response = await client.get_item(
        TableName=store.table_name, Key={"id": {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response["Item"]
    return item


@pytest.mark.asyncio
@pytest.mark.parametrize("size_bytes", [100_000, 300_000])
async def test_powertools_replays_a_large_result_stored_by_idemstore(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any, size_bytes: int
) -> None:
    runs: list[str] = []
    result = report(size_bytes)
    assert len(json.dumps(result)) > size_bytes * 0.9

    @idempotent_function(data_keyword_argument="request", persistence_store=dynamo_store)
    async def build_report(request: dict[str, Any]) -> dict[str, Any]:
        runs.append("idemstore")
        return result

    @request_twin(build_report, powertools_layer)
    def build_report_sync(request: dict[str, Any]) -> dict[str, Any]:
        runs.append("powertools")
        return {"unexpected": True}

    request = {"report": "monthly"}
    assert await build_report(request=request) == result
    item = await stored_item(dynamo_store, build_report, request)
    assert "data_zlib" not in item
    assert json.loads(item["data"]["S"]) == result

    replayed = await asyncio.to_thread(lambda: build_report_sync(request=request))
    assert replayed == result
    assert runs == ["idemstore"]


@pytest.mark.asyncio
async def test_a_result_too_large_as_text_is_stored_compressed_and_replays(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs: list[str] = []
    result = report(600_000)
    assert len(json.dumps(result)) > 500 * 1024

    @idempotent_function(data_keyword_argument="request", persistence_store=dynamo_store)
    async def build_report(request: dict[str, Any]) -> dict[str, Any]:
        runs.append("idemstore")
        return result

    request = {"report": "yearly"}
    assert await build_report(request=request) == result
    item = await stored_item(dynamo_store, build_report, request)
    assert "data" not in item
    assert len(item["data_zlib"]["B"]) < 100 * 1024
    assert await build_report(request=request) == result
    assert runs == ["idemstore"]


@pytest.mark.asyncio
async def test_an_explicit_threshold_compresses_smaller_results(
    moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore
) -> None:
    result = report(100_000)
    async with moto_server.store(
        dynamo_store.table_name, compress_threshold_bytes=32 * 1024
    ) as store:

        @idempotent_function(data_keyword_argument="request", persistence_store=store)
        async def build_report(request: dict[str, Any]) -> dict[str, Any]:
            return result

        request = {"report": "weekly"}
        await build_report(request=request)
        item = await stored_item(store, build_report, request)
        assert "data" not in item
        assert "data_zlib" in item
        assert await build_report(request=request) == result


@dataclasses.dataclass
class Shipment:
    shipment_id: str
    total: Decimal
    parcels: list[str]


SHIPMENT = Shipment(shipment_id="s-1", total=Decimal("10.50"), parcels=["p-1", "p-2"])


@pytest.mark.asyncio
async def test_typed_dataclass_results_replay_across_libraries(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any
) -> None:
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="request", persistence_store=dynamo_store)
    async def ship(request: dict[str, Any]) -> Shipment:
        runs.append("idemstore")
        return SHIPMENT

    @request_twin(ship, powertools_layer, output_serializer=PowertoolsDataclassSerializer)
    def ship_sync(request: dict[str, Any]) -> Shipment:
        runs.append("powertools")
        return SHIPMENT

    # Written by Powertools, replayed by idemstore with its field types.
    await asyncio.to_thread(lambda: ship_sync(request={"id": 1}))
    replayed = await ship(request={"id": 1})
    assert replayed == SHIPMENT
    assert type(replayed.total) is Decimal
    # Written by idemstore, replayed by Powertools, which types only the top level.
    await ship(request={"id": 2})
    by_powertools = await asyncio.to_thread(lambda: ship_sync(request={"id": 2}))
    assert dataclasses.asdict(by_powertools) == {**dataclasses.asdict(SHIPMENT), "total": "10.50"}
    assert runs == ["powertools", "idemstore"]
