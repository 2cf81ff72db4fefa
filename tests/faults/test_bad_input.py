"""Bad input: each case ends in a typed error (or, where the input is valid, a
correct replay) and never leaves a record locked or overwrites one.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from botocore.exceptions import EndpointConnectionError
from pydantic import BaseModel

from faults.helpers import (
    FAULT_CLIENT_CONFIG,
    BodyRuns,
    item_count,
    key_of,
    raw_item,
    status_of,
    stored,
)
from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyPersistenceLayerError,
    IdempotencyResponseTooLargeError,
    IdempotencySerializationError,
    IdempotencyTableNotFoundError,
    InMemoryStore,
    RecordStatus,
    RecordStore,
    idempotent_function,
)
from idemstore.testing import MotoEndpoint

Echo = Callable[..., Coroutine[Any, Any, Any]]


def echo_function(
    store: RecordStore,
    runs: BodyRuns,
    result: Callable[[Any], Any],
    *,
    config: IdempotencyConfig | None = None,
) -> Echo:
    @idempotent_function(
        data_keyword_argument="payload", persistence_store=store, config=config, key_prefix="bad"
    )
    async def echo(payload: Any) -> Any:
        runs.record(payload)
        return result(payload)

    return echo


def random_text(size: int) -> str:
    """Text that zlib barely compresses (base64 of random bytes)."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


# --- results that cannot be stored -------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "unstorable",
    [object(), {"tags": {"a", "b"}}, {"when": time}],
    ids=["object", "set", "module"],
)
async def test_a_result_that_is_not_json_is_a_serialization_error(
    unstorable: Any, dynamo_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    echo = echo_function(dynamo_store, runs, lambda _: unstorable)

    with pytest.raises(IdempotencySerializationError):
        await echo(payload={"id": 1})

    assert runs.count == 1
    assert await stored(dynamo_store, key_of(echo, {"id": 1})) is None  # released


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "big",
    [
        pytest.param(
            {"rows": [f"lorem ipsum dolor sit amet {i}" for i in range(20_000)]},
            id="compressible",
        ),
        pytest.param(random_text(420 * 1024), id="barely-compressible"),  # ~320 KB compressed
    ],
)
async def test_a_result_over_400_kb_that_fits_compressed_is_stored_compressed(
    big: Any, dynamo_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    assert len(json.dumps(big)) > 400 * 1024
    echo = echo_function(dynamo_store, runs, lambda _: big)

    assert await echo(payload={"id": 2}) == big
    assert await echo(payload={"id": 2}) == big

    assert runs.count == 1
    item = await raw_item(dynamo_store, key_of(echo, {"id": 2}))
    assert item is not None
    assert set(item) >= {"data_zlib", "status"}
    assert "data" not in item
    assert item["status"] == {"S": "COMPLETED"}


@pytest.mark.asyncio
async def test_a_result_over_the_limit_even_compressed_is_too_large(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    echo = echo_function(dynamo_store, runs, lambda _: random_text(600 * 1024))

    with pytest.raises(IdempotencyResponseTooLargeError) as caught:
        await echo(payload={"id": 4})

    assert caught.value.size_bytes > caught.value.limit_bytes
    assert runs.count == 1
    assert await stored(dynamo_store, key_of(echo, {"id": 4})) is None  # released


# --- payloads and keys ---------------------------------------------------------------


class Line(BaseModel):
    sku: str
    price: Decimal


class Customer(BaseModel):
    name: str
    tags: list[str]


class Order(BaseModel):
    customer: Customer
    lines: list[Line]


class Receipt(BaseModel):
    order: Order
    total: Decimal


@pytest.mark.asyncio
async def test_nested_pydantic_payloads_and_results_replay_typed(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()

    @idempotent_function(data_keyword_argument="order", persistence_store=dynamo_store)
    async def checkout(order: Order) -> Receipt:
        runs.record(order)
        return Receipt(order=order, total=sum((line.price for line in order.lines), Decimal(0)))

    order = Order(
        customer=Customer(name="Zoë", tags=["vip"]),
        lines=[Line(sku="a", price=Decimal("1.10")), Line(sku="b", price=Decimal("2.05"))],
    )
    first = await checkout(order=order)
    again = await checkout(order=order.model_copy(deep=True))

    assert again == first
    assert isinstance(again, Receipt)
    assert again.total == Decimal("3.15")
    assert runs.count == 1


@pytest.mark.asyncio
async def test_nan_infinity_and_decimal_payloads_have_stable_keys(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    echo = echo_function(dynamo_store, runs, lambda p: {"seen": p["x"], "n": p["n"]})
    payload = {"x": float("nan"), "y": float("inf"), "n": Decimal("10.50")}

    first = await echo(payload=payload)
    again = await echo(payload=dict(payload))

    assert runs.count == 1
    assert math.isnan(first["seen"])
    assert math.isnan(again["seen"])
    assert first["n"] == Decimal("10.50")
    # JSON has no Decimal: a replay without a typed output model gives its text.
    assert again["n"] == "10.50"
    # Decimal NaN encodes as float NaN: the same key.
    assert key_of(echo, {**payload, "x": Decimal("NaN")}) == key_of(echo, payload)


@pytest.mark.asyncio
async def test_unicode_and_10_kb_keys_are_hashed_into_a_short_key(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    config = IdempotencyConfig(event_key_jmespath="[customer, note]")
    echo = echo_function(dynamo_store, runs, lambda p: p, config=config)
    payload = {
        "customer": "Zoë Ångström 東京 🚀 \u202e\u0000",
        "note": "ж" * 10 * 1024,
        "lone": "\ud800",
    }

    first = await echo(payload=payload)
    again = await echo(payload={**payload, "lone": "ignored: not part of the key"})

    assert first == payload
    assert again == payload
    assert runs.count == 1
    key = key_of(echo, payload)
    assert len(key.encode()) < 100  # far below DynamoDB's 2048-byte key limit
    assert await status_of(dynamo_store, key) is RecordStatus.COMPLETED


# --- corrupt items in the table --------------------------------------------------------

FUTURE = str(int(time.time()) + 3600)

CORRUPT_ITEMS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown status": ({"status": {"S": "DONE"}, "expiration": {"N": FUTURE}}, "status"),
    "status of the wrong type": ({"status": {"N": "1"}, "expiration": {"N": FUTURE}}, "status"),
    "missing status and expiry": ({"data": {"S": '"x"'}}, "status"),
    "result of the wrong type": (
        {"status": {"S": "COMPLETED"}, "expiration": {"N": FUTURE}, "data": {"N": "5"}},
        "data",
    ),
    "garbage compressed result": (
        {"status": {"S": "COMPLETED"}, "expiration": {"N": FUTURE}, "data_zlib": {"B": b"\x00"}},
        "data_zlib",
    ),
}

MISTYPED_NUMBERS: dict[str, tuple[dict[str, Any], str]] = {
    "expiry of the wrong type": (
        {"status": {"S": "COMPLETED"}, "expiration": {"S": "tomorrow"}, "data": {"S": "1"}},
        "expiration",
    ),
    "lock end of the wrong type": (
        {
            "status": {"S": "INPROGRESS"},
            "expiration": {"N": FUTURE},
            "in_progress_expiration": {"S": "later"},
        },
        "in_progress_expiration",
    ),
}
"""Items the acquire condition compares with a number of the wrong type. DynamoDB
evaluates such a comparison as false; the local server fails with HTTP 500
instead, so these run against the in-memory store, which evaluates as DynamoDB."""


async def plant(store: AsyncDynamoStore | InMemoryStore, item: dict[str, Any]) -> None:
    """Write ``item`` as it is, past the store's encoding: a record the store did not write."""
    if isinstance(store, InMemoryStore):
        store._items[item["id"]["S"]] = dict(item)  # planting a corrupt item needs the raw map
    else:
        client = await store.client()
        await client.put_item(TableName=store.table_name, Item=item)


async def table_items(store: AsyncDynamoStore | InMemoryStore) -> dict[str, dict[str, Any]]:
    """Every item the table holds, by key, as stored."""
    if isinstance(store, InMemoryStore):
        return store.items()
    client = await store.client()
    scanned = await client.scan(TableName=store.table_name, ConsistentRead=True)
    return {item["id"]["S"]: item for item in scanned["Items"]}


async def check_reported_and_left_alone(
    store: AsyncDynamoStore | InMemoryStore, attributes: dict[str, Any], bad_attribute: str
) -> None:
    """Plant an item of ``attributes`` where a call's record goes, then make the call: it
    fails naming ``bad_attribute`` and the key, the body never runs, the item stays as is."""
    runs = BodyRuns()
    echo = echo_function(store, runs, lambda p: p)
    key = key_of(echo, {"id": 5})
    planted = {"id": {"S": key}, **attributes}
    await plant(store, planted)

    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        await echo(payload={"id": 5})

    assert caught.value.attribute == bad_attribute
    assert caught.value.idempotency_key == key
    assert runs.count == 0
    assert await table_items(store) == {key: planted}  # nothing overwritten


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(CORRUPT_ITEMS))
async def test_a_corrupt_item_is_reported_and_left_alone(
    case: str, dynamo_store: AsyncDynamoStore
) -> None:
    await check_reported_and_left_alone(dynamo_store, *CORRUPT_ITEMS[case])


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(MISTYPED_NUMBERS))
async def test_a_mistyped_number_is_reported_and_left_alone(case: str) -> None:
    await check_reported_and_left_alone(InMemoryStore(), *MISTYPED_NUMBERS[case])


@pytest.mark.asyncio
async def test_a_stored_result_that_is_not_json_is_a_serialization_error(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    echo = echo_function(dynamo_store, runs, lambda p: p)
    key = key_of(echo, {"id": 6})
    planted = {
        "id": {"S": key},
        "status": {"S": "COMPLETED"},
        "expiration": {"N": FUTURE},
        "data": {"S": "{not json"},
    }
    await plant(dynamo_store, planted)

    with pytest.raises(IdempotencySerializationError):
        await echo(payload={"id": 6})

    assert runs.count == 0
    assert await raw_item(dynamo_store, key) == planted


# --- the wrong table, region, endpoint or layout -----------------------------------------

ErrorT = TypeVar("ErrorT", bound=BaseException)


async def refused_before_running(
    store: AsyncDynamoStore, expected: type[ErrorT], payload: dict[str, Any]
) -> ErrorT:
    """The ``expected`` error a call through ``store`` raises before its body runs
    (``store`` is closed afterwards)."""
    runs = BodyRuns()
    async with store:
        echo = echo_function(store, runs, lambda p: p)
        with pytest.raises(expected) as caught:
            await echo(payload=payload)
    assert runs.count == 0
    return caught.value


@pytest.mark.asyncio
async def test_a_missing_table_is_named(moto_server: MotoEndpoint) -> None:
    missing = moto_server.store("no-such-table")
    error = await refused_before_running(missing, IdempotencyTableNotFoundError, {"id": 7})

    assert error.table_name == "no-such-table"
    assert error.endpoint_url == moto_server.url


@pytest.mark.asyncio
async def test_the_wrong_region_does_not_find_the_table(
    moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore
) -> None:
    elsewhere = AsyncDynamoStore(
        dynamo_store.table_name,
        endpoint_url=moto_server.url,
        region_name="eu-west-3",
        session=moto_server.session(),
    )
    error = await refused_before_running(elsewhere, IdempotencyTableNotFoundError, {"id": 8})

    assert error.region_name == "eu-west-3"
    assert await item_count(dynamo_store) == 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.asyncio
async def test_an_unreachable_endpoint_is_a_persistence_error(
    moto_server: MotoEndpoint,
) -> None:
    nowhere = AsyncDynamoStore(
        "any-table",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name=moto_server.region_name,
        session=moto_server.session(),
        client_config=FAULT_CLIENT_CONFIG,
    )
    error = await refused_before_running(nowhere, IdempotencyPersistenceLayerError, {"id": 9})

    assert isinstance(error.__cause__, EndpointConnectionError)


@pytest.mark.asyncio
async def test_a_record_written_with_other_attribute_names_is_not_overwritten(
    moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    writer = echo_function(dynamo_store, runs, lambda p: "first")
    assert await writer(payload={"id": 10}) == "first"
    key = key_of(writer, {"id": 10})
    before = await raw_item(dynamo_store, key)
    renamed = moto_server.store(
        dynamo_store.table_name, status_attr="state", expiry_attr="ttl", data_attr="result"
    )

    error = await refused_before_running(renamed, IdempotencyCorruptRecordError, {"id": 10})

    assert error.attribute == "state"
    assert runs.count == 1
    assert await raw_item(dynamo_store, key) == before


@pytest.mark.asyncio
async def test_a_key_attribute_the_table_lacks_is_a_persistence_error(
    moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore
) -> None:
    wrong_key = moto_server.store(dynamo_store.table_name, key_attr="pk")
    error = await refused_before_running(wrong_key, IdempotencyPersistenceLayerError, {"id": 11})

    assert "ValidationException" in str(error)
    assert await item_count(dynamo_store) == 0


def test_a_jmespath_that_does_not_parse_is_a_configuration_error() -> None:
    with pytest.raises(IdempotencyConfigurationError):
        IdempotencyConfig(event_key_jmespath="a) OR attribute_exists(b")
