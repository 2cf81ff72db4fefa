"""Replays are typed like the first result: inferred from the return annotation, or given."""

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from engine.conftest import assert_replays_a_copy, key_of, order_function, request_log
from idemstore import (
    DataclassSerializer,
    IdempotencySerializationError,
    RecordStore,
)


class Receipt(pydantic.BaseModel):
    order_id: str
    total: Decimal
    issued_at: dt.datetime
    lines: list[str]


@dataclasses.dataclass(frozen=True)
class Parcel:
    parcel_id: str
    weight_grams: int
    tracking: list[str]


RECEIPT = Receipt(
    order_id="o-1",
    total=Decimal("12.30"),
    issued_at=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    lines=["a", "b"],
)
PARCEL = Parcel(parcel_id="p-1", weight_grams=250, tracking=["t1"])


async def receipt(order: dict[str, Any]) -> Receipt:
    return RECEIPT


async def parcel(order: dict[str, Any]) -> Parcel:
    return PARCEL


async def unannotated_receipt(order: dict[str, Any]):  # type: ignore[no-untyped-def]  # unannotated on purpose
    return RECEIPT


async def any_parcel(order: dict[str, Any]) -> Any:
    return PARCEL


async def parcel_annotated_as_receipt(order: dict[str, Any]) -> Receipt:
    return PARCEL  # type: ignore[return-value]  # the serializer, not the annotation, decides


@pytest.mark.asyncio
@pytest.mark.server
async def test_pydantic_result_is_inferred_from_the_annotation(store: RecordStore) -> None:
    await assert_replays_a_copy(order_function(store)(receipt), RECEIPT)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("function", "output_serializer", "result"),
    [
        pytest.param(parcel, None, PARCEL, id="dataclass inferred from the annotation"),
        pytest.param(unannotated_receipt, Receipt, RECEIPT, id="model type as output_serializer"),
        pytest.param(any_parcel, Parcel, PARCEL, id="dataclass type as output_serializer"),
        pytest.param(
            parcel_annotated_as_receipt,
            DataclassSerializer(Parcel),
            PARCEL,
            id="explicit serializer wins over the annotation",
        ),
    ],
)
async def test_replay_is_typed_like_the_first_result(
    store: RecordStore,
    function: Callable[..., Coroutine[Any, Any, Any]],
    output_serializer: Any,
    result: Any,
) -> None:
    await assert_replays_a_copy(
        order_function(store, output_serializer=output_serializer)(function), result
    )


@pytest.mark.asyncio
async def test_optional_model_result_replays_none_and_models(store: RecordStore) -> None:
    @order_function(store)
    async def lookup(order: dict[str, Any]) -> Receipt | None:
        return RECEIPT if order["found"] else None

    for found in (True, False):
        await lookup(order={"found": found})
    assert await lookup(order={"found": True}) == RECEIPT
    assert await lookup(order={"found": False}) is None


@pytest.mark.asyncio
async def test_explicit_serializer_object(store: RecordStore) -> None:
    class MoneySerializer:
        """Cents on the wire, Decimal in the program."""

        def to_dict(self, data: Any) -> Any:
            return {"cents": int(data * 100)}

        def from_dict(self, data: Any) -> Any:
            return Decimal(data["cents"]) / 100

    @order_function(store, output_serializer=MoneySerializer())
    async def total(order: dict[str, Any]) -> Decimal:
        return Decimal("12.34")

    await total(order={"id": 1})
    assert (await store.get_record(key_of(total, {"id": 1}))).response_data == '{"cents": 1234}'
    assert await total(order={"id": 1}) == Decimal("12.34")


@pytest.mark.asyncio
async def test_unannotated_result_replays_as_json_data(store: RecordStore) -> None:
    @order_function(store)
    async def process(order: dict[str, Any]) -> Any:
        return {"when": dt.date(2024, 1, 2), "id": uuid.UUID(int=7), "n": Decimal("1.5")}

    await process(order={"id": 1})
    assert await process(order={"id": 1}) == {
        "when": "2024-01-02",
        "id": "00000000-0000-0000-0000-000000000007",
        "n": "1.5",
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("result", [{}, [], 0, "", False, None, 0.0])
async def test_falsy_results_replay_as_themselves(store: RecordStore, result: Any) -> None:
    log = await request_log(store)
    runs: list[int] = []

    @order_function(store)
    async def process(order: dict[str, Any]) -> Any:
        runs.append(1)
        return result

    assert await process(order={"id": 1}) is result
    log.clear()
    replayed = await process(order={"id": 1})
    assert replayed == result
    assert type(replayed) is type(result)
    assert runs == [1]
    assert log.operations == ["PutItem"]


@pytest.mark.asyncio
async def test_stored_result_that_no_longer_fits_the_model_is_a_serialization_error(
    store: RecordStore,
) -> None:
    @order_function(store)
    async def before(order: dict[str, Any]) -> dict[str, Any]:
        return {"unexpected": True}

    @order_function(
        store,
        key_prefix=before.idempotency_engine.key_prefix,  # type: ignore[attr-defined]  # set by the decorator
    )
    async def after(order: dict[str, Any]) -> Receipt:
        return RECEIPT

    await before(order={"id": 1})
    with pytest.raises(IdempotencySerializationError, match="cannot be read back"):
        await after(order={"id": 1})
