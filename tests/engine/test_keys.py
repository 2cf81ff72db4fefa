"""Idempotency keys (the same as Powertools makes) and calls whose payload has no key."""

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import boto3  # type: ignore[import-untyped]  # boto3 ships no type information
import pydantic
import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
)
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig as PowertoolsConfig,
)
from aws_lambda_powertools.utilities.idempotency.base import _prepare_data

from engine.conftest import key_of, order_function, request_log
from idemstore import (
    IdempotencyConfig,
    IdempotencyItemNotFoundError,
    IdempotencyKeyError,
    IdempotencyWarning,
    InMemoryStore,
    RecordStatus,
    RecordStore,
    idempotent_function,
)
from idemstore.testing import MotoEndpoint


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Order(pydantic.BaseModel):
    order_id: str
    amount: Decimal
    placed_at: dt.datetime
    colour: Colour


@dataclasses.dataclass
class Shipment:
    shipment_id: uuid.UUID
    weight: Decimal
    day: dt.date
    size: Size
    order: Order


PLACED_AT = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
ORDER = Order(order_id="o-1", amount=Decimal("10.50"), placed_at=PLACED_AT, colour=Colour.RED)
SHIPMENT = Shipment(
    shipment_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    weight=Decimal("1.250"),
    day=dt.date(2024, 5, 6),
    size=Size.LARGE,
    order=ORDER,
)

PAYLOADS: dict[str, Any] = {
    "plain dict": {"order_id": "o-1", "items": [1, 2, 3], "gift": False},
    "unordered keys": {"b": 2, "a": {"z": 1, "y": None}},
    "decimal values": {"amount": Decimal("10.50"), "tax": Decimal("0.0")},
    "datetime, date, time": {"at": PLACED_AT, "day": dt.date(2024, 1, 2), "t": dt.time(3, 4)},
    "naive datetime": {"at": dt.datetime(2024, 1, 2, 3, 4, 5)},
    "uuid": {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    "enums": {"colour": Colour.BLUE, "size": Size.SMALL},
    "nested model": {"order": ORDER},
    "nested dataclass": {"shipment": SHIPMENT},
    "model": ORDER,
    "dataclass": SHIPMENT,
    "bare decimal": Decimal("3.14"),
    "bare string": "order-42",
    "bare number": 42,
    "unicode": {"name": "Zoë ✓"},
}


POWERTOOLS_TABLE = "idempotency"
"""Powertools only derives keys here; its table is never used."""


@pytest.fixture(scope="module")
def powertools_client(moto_server: MotoEndpoint) -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # not a secret: the local server accepts anything
        endpoint_url=moto_server.url,
    )


@pytest.fixture(autouse=True)
def outside_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)


def powertools_key(
    client: Any,
    table_name: str,
    payload: Any,
    function: Any,
    **config: Any,
) -> str | None:
    """The key Powertools' DynamoDB layer derives for ``payload`` in ``function``."""
    layer = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)
    layer.configure(
        PowertoolsConfig(**config), function_name=f"{function.__module__}.{function.__qualname__}"
    )
    key: str | None = layer._get_hashed_idempotency_key(_prepare_data(payload))
    return key


@pytest.mark.asyncio
@pytest.mark.server
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
async def test_record_is_stored_under_the_powertools_key(
    memory_store: InMemoryStore, powertools_client: Any, payload: Any
) -> None:
    @order_function(memory_store)
    async def process(order: Any) -> str:
        return "done"

    expected = powertools_key(powertools_client, POWERTOOLS_TABLE, payload, process)
    assert expected is not None
    assert expected.startswith(f"test-func.{__name__}.")
    assert key_of(process, payload) == expected
    assert await process(order=payload) == "done"
    record = await memory_store.get_record(expected)
    assert record.status is RecordStatus.COMPLETED


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("config", "payload"),
    [
        ({"event_key_jmespath": "order_id"}, {"order_id": "o-1", "noise": 1}),
        ({"event_key_jmespath": "[order_id, customer]"}, {"order_id": "o", "customer": "c"}),
        ({"event_key_jmespath": "{o: order_id, c: customer}"}, {"order_id": 1, "customer": None}),
        (
            {"event_key_jmespath": "powertools_json(body).order_id"},
            {"body": '{"order_id": "o-9"}'},
        ),
        ({"hash_function": "sha256"}, {"order_id": "o-1"}),
        ({"hash_function": "sha3_512"}, {"order_id": "o-1"}),
    ],
)
async def test_configured_keys_match_powertools(
    memory_store: InMemoryStore,
    powertools_client: Any,
    config: dict[str, Any],
    payload: Any,
) -> None:
    @order_function(memory_store, IdempotencyConfig(**config))
    async def process(order: Any) -> None:
        return None

    expected = powertools_key(powertools_client, POWERTOOLS_TABLE, payload, process, **config)
    assert key_of(process, payload) == expected


@pytest.mark.asyncio
async def test_payload_hash_matches_powertools(
    memory_store: InMemoryStore, powertools_client: Any
) -> None:
    config: dict[str, Any] = {
        "event_key_jmespath": "order_id",
        "payload_validation_jmespath": "[amount, at]",
    }
    payload = {"order_id": "o-1", "amount": Decimal("9.99"), "at": PLACED_AT}

    @order_function(memory_store, IdempotencyConfig(**config))
    async def process(order: Any) -> None:
        return None

    layer = DynamoDBPersistenceLayer(table_name=POWERTOOLS_TABLE, boto3_client=powertools_client)
    layer.configure(PowertoolsConfig(**config), function_name="unused")
    identity = process.idempotency_engine.identify(payload)  # type: ignore[attr-defined]  # set by the decorator
    assert identity.payload_hash == layer._get_hashed_payload(payload)


@pytest.mark.asyncio
async def test_prefix_uses_the_lambda_function_name(
    memory_store: InMemoryStore, powertools_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-prod")

    @order_function(memory_store)
    async def process(order: Any) -> None:
        return None

    payload = {"order_id": "o-1"}
    key = key_of(process, payload)
    assert key.startswith(f"orders-prod.{__name__}.")
    assert key == powertools_key(powertools_client, POWERTOOLS_TABLE, payload, process)


@pytest.mark.asyncio
async def test_key_prefix_replaces_the_derived_prefix(
    memory_store: InMemoryStore, powertools_client: Any
) -> None:
    @order_function(memory_store, key_prefix="orders")
    async def process(order: Any) -> None:
        return None

    payload = {"order_id": "o-1"}
    layer = DynamoDBPersistenceLayer(table_name=POWERTOOLS_TABLE, boto3_client=powertools_client)
    layer.configure(PowertoolsConfig(), function_name="ignored", key_prefix="orders")
    key = key_of(process, payload)
    assert key.startswith("orders#")
    assert key == layer._get_hashed_idempotency_key(payload)


@pytest.mark.asyncio
async def test_a_function_mutating_its_payload_completes_the_original_record(
    store: RecordStore,
) -> None:
    runs: list[str] = []

    @order_function(store, IdempotencyConfig(event_key_jmespath="order_id"))
    async def process(order: dict[str, Any]) -> str:
        runs.append(order["order_id"])
        order["order_id"] = "rewritten"
        return "done"

    engine = process.idempotency_engine  # type: ignore[attr-defined]  # set by the decorator
    original_key = engine.identify({"order_id": "o-1"}).key
    rewritten_key = engine.identify({"order_id": "rewritten"}).key

    assert await process(order={"order_id": "o-1"}) == "done"

    assert (await store.get_record(original_key)).status is RecordStatus.COMPLETED
    with pytest.raises(IdempotencyItemNotFoundError):
        await store.get_record(rewritten_key)
    assert await process(order={"order_id": "o-1"}) == "done"
    assert runs == ["o-1"]


def run_counting_handler(
    store: RecordStore, **options: Any
) -> tuple[Callable[..., Coroutine[Any, Any, str]], list[Any]]:
    """An idempotent ``handle(event=...)`` configured by ``options``, which returns ``"ran"``,
    and the list of the events it ran on."""
    runs: list[Any] = []

    @idempotent_function(
        data_keyword_argument="event",
        persistence_store=store,
        config=IdempotencyConfig(**options),
    )
    async def handle(event: Any) -> str:
        runs.append(event)
        return "ran"

    return handle, runs


MISSING_KEYS = [
    pytest.param("order_id", {"other": 1}, id="absent"),
    pytest.param("order_id", {"order_id": None}, id="none"),
    pytest.param("order_id", {"order_id": ""}, id="empty string"),
    pytest.param("[order_id, customer]", {"order_id": None}, id="all-none list"),
    pytest.param("{o: order_id, c: customer}", {}, id="all-none dict"),
]


@pytest.mark.parametrize(("jmespath", "payload"), MISSING_KEYS)
class TestMissingKey:
    """A payload with no value where the key expression points, on each of MISSING_KEYS."""

    @pytest.mark.asyncio
    async def test_raises_when_configured(
        self, store: RecordStore, jmespath: str, payload: dict[str, Any]
    ) -> None:
        log = await request_log(store)
        handle, runs = run_counting_handler(
            store, event_key_jmespath=jmespath, raise_on_no_idempotency_key=True
        )

        with pytest.raises(IdempotencyKeyError, match="No data found"):
            await handle(event=payload)
        assert runs == []
        assert log.operations == []

    @pytest.mark.asyncio
    async def test_warns_and_runs_unprotected(
        self, store: RecordStore, jmespath: str, payload: dict[str, Any]
    ) -> None:
        log = await request_log(store)
        handle, runs = run_counting_handler(store, event_key_jmespath=jmespath)

        for _ in range(2):
            with pytest.warns(IdempotencyWarning, match="No idempotency key value found"):
                assert await handle(event=payload) == "ran"
        assert runs == [payload, payload]
        assert log.operations == []


@pytest.mark.asyncio
async def test_falsy_but_present_keys_are_keys(store: RecordStore) -> None:
    runs: list[Any] = []

    @idempotent_function(
        data_keyword_argument="event",
        persistence_store=store,
        config=IdempotencyConfig(event_key_jmespath="n", raise_on_no_idempotency_key=True),
    )
    async def handle(event: Any) -> int:
        runs.append(event["n"])
        return len(runs)

    assert await handle(event={"n": 0}) == 1
    assert await handle(event={"n": 0}) == 1
    assert await handle(event={"n": False}) == 2
    assert runs == [0, False]


@pytest.mark.asyncio
async def test_unhashable_payload_is_a_key_error(store: RecordStore) -> None:
    log = await request_log(store)

    @idempotent_function(data_keyword_argument="event", persistence_store=store)
    async def handle(event: Any) -> None:
        raise AssertionError("must not run")

    with pytest.raises(IdempotencyKeyError, match="cannot be hashed"):
        await handle(event={"tags": {"a", "b"}})
    assert log.operations == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("expression", "payload"),
    [
        ("powertools_json(b)", {"b": "{x"}),
        ("powertools_base64(b)", {"b": "/w=="}),
        ("powertools_base64_gzip(b)", {"b": "eA=="}),
        ("nope(b)", {"b": "x"}),
    ],
    ids=["json", "base64", "gzip", "unknown-function"],
)
async def test_an_expression_failing_on_the_payload_is_a_key_error(
    store: RecordStore, expression: str, payload: dict[str, str]
) -> None:
    log = await request_log(store)

    @idempotent_function(
        data_keyword_argument="event",
        persistence_store=store,
        config=IdempotencyConfig(event_key_jmespath=expression),
    )
    async def handle(event: Any) -> None:
        raise AssertionError("must not run")

    with pytest.raises(IdempotencyKeyError, match="cannot extract the idempotency key"):
        await handle(event=payload)
    assert log.operations == []
