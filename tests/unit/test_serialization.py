"""Replays typed like the first result, for any annotation pydantic can validate.

The round trip is the one the engine makes: result -> ``to_dict`` -> JSON text
(stored) -> ``json.loads`` -> ``from_dict`` -> replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any, Literal, Optional

import pydantic
import pytest
from aws_lambda_powertools.shared.json_encoder import Encoder as PowertoolsEncoder
from aws_lambda_powertools.utilities.idempotency.serialization.dataclass import (
    DataclassSerializer as PowertoolsDataclassSerializer,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import (
    PydanticSerializer as PowertoolsPydanticSerializer,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_types import Colour, Item, Priority, Tier

from idemstore import (
    BaseIdempotencySerializer,
    DataclassSerializer,
    IdempotencySerializationError,
    NoOpSerializer,
    PydanticSerializer,
    idempotent_function,
)
from idemstore.keys import PayloadEncoder
from idemstore.serialization import TypeAdapterSerializer, json_exact, resolve_serializer
from idemstore.stores.memory import InMemoryStore


@dataclasses.dataclass(frozen=True)
class Line:
    item: Item
    quantity: int
    tags: tuple[str, ...]


@dataclasses.dataclass
class Order:
    order_id: uuid.UUID
    placed_at: dt.datetime
    lines: list[Line]
    totals: dict[str, Decimal]
    priority: Priority
    note: str | None = None


ORDER = Order(
    order_id=uuid.UUID(int=42),
    placed_at=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    lines=[
        Line(Item(sku="a", price=Decimal("9.99"), colour=Colour.RED), 2, ("gift",)),
        Line(Item(sku="b", price=Decimal("0.10"), colour=Colour.GREEN), 1, ()),
    ],
    totals={"net": Decimal("20.08"), "tax": Decimal("1E+1")},
    priority=Priority.HIGH,
)


def stored_text(serializer: BaseIdempotencySerializer, value: Any) -> str:
    """What the engine stores in ``data``."""
    return json.dumps(serializer.to_dict(value), cls=PayloadEncoder, sort_keys=True)


def replayed(serializer: BaseIdempotencySerializer, text: str) -> Any:
    return serializer.from_dict(json.loads(text))


def assert_same(replay: Any, original: Any) -> None:
    """Equal, and of the same types all the way down."""
    assert replay == original
    assert type(replay) is type(original)
    if isinstance(original, pydantic.BaseModel):
        for name in type(original).model_fields:
            assert_same(getattr(replay, name), getattr(original, name))
    elif dataclasses.is_dataclass(original):
        for field in dataclasses.fields(original):
            assert_same(getattr(replay, field.name), getattr(original, field.name))
    elif isinstance(original, list | tuple):
        for replay_item, original_item in zip(replay, original, strict=True):
            assert_same(replay_item, original_item)
    elif isinstance(original, dict):
        for (replay_key, replay_item), (key, item) in zip(
            sorted(replay.items(), key=repr), sorted(original.items(), key=repr), strict=True
        ):
            assert_same(replay_key, key)
            assert_same(replay_item, item)


def test_a_nested_result_replays_with_its_types() -> None:
    serializer = resolve_serializer(_returning(Order), None)
    text = stored_text(serializer, ORDER)
    assert_same(replayed(serializer, text), ORDER)


def test_the_stored_json_is_plain_json_with_fields_as_powertools_writes_them() -> None:
    serializer = resolve_serializer(_returning(Order), None)
    stored = json.loads(stored_text(serializer, ORDER))
    assert stored["order_id"] == "00000000-0000-0000-0000-00000000002a"
    assert stored["totals"] == {"net": "20.08", "tax": "1E+1"}
    assert stored["lines"][0] == {
        "item": {"sku": "a", "price": "9.99", "colour": "red"},
        "quantity": 2,
        "tags": ["gift"],
    }
    assert stored["priority"] == 2
    assert stored["placed_at"] == "2024-05-06T07:08:09.123456Z"


@dataclasses.dataclass
class Flat:
    """A dataclass Powertools itself can store: its encoder knows Decimal, not datetime."""

    name: str
    amount: Decimal
    count: int
    ratio: float
    flags: list[bool]


class Receipt(pydantic.BaseModel):
    receipt_id: uuid.UUID
    issued_at: dt.datetime
    total: Decimal
    lines: list[Item]


FLAT = Flat(name="n", amount=Decimal("3.50"), count=3, ratio=0.25, flags=[True, False])
RECEIPT = Receipt(
    receipt_id=uuid.UUID(int=9),
    issued_at=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    total=Decimal("12.30"),
    lines=[Item(sku="a", price=Decimal("12.30"), colour=Colour.RED)],
)


@pytest.mark.parametrize(
    ("value", "powertools", "powertools_replay"),
    [
        pytest.param(
            FLAT,
            PowertoolsDataclassSerializer(Flat),
            # Powertools types nothing below the top level: a Decimal field replays as its text.
            dataclasses.replace(FLAT, amount="3.50"),  # type: ignore[arg-type]  # what Powertools' own replay gives
            id="dataclass",
        ),
        pytest.param(RECEIPT, PowertoolsPydanticSerializer(Receipt), RECEIPT, id="model"),
    ],
)
def test_records_are_the_text_powertools_writes_and_read_both_ways(
    value: Any, powertools: Any, powertools_replay: Any
) -> None:
    ours = resolve_serializer(_returning(type(value)), None)
    powertools_text = json.dumps(powertools.to_dict(value), cls=PowertoolsEncoder, sort_keys=True)
    assert stored_text(ours, value) == powertools_text
    assert_same(replayed(ours, powertools_text), value)
    assert_same(powertools.from_dict(json.loads(stored_text(ours, value))), powertools_replay)


def _returning(result_type: Any) -> Any:
    async def function(payload: Any) -> Any:
        return payload

    function.__annotations__["return"] = result_type
    return function


@pytest.mark.parametrize(
    "result_type",
    [
        Any,
        dict,
        list,
        str,
        int,
        float,
        bool,
        None,
        dict[str, Any],
        object,
        dict[str, object],
        list[object],
        list[str],
        dict[str, int | None],
        Optional[list[dict[str, float]]],  # noqa: UP045  # the typing.Optional spelling too
        Literal["a", 1],
    ],
)
def test_results_json_gives_back_exactly_replay_as_json_data(result_type: Any) -> None:
    assert json_exact(result_type)
    assert isinstance(resolve_serializer(_returning(result_type), None), NoOpSerializer)


@pytest.mark.parametrize(
    "result_type",
    [
        dict[str, Decimal],
        dict[int, str],
        list[Item],
        tuple[int, str],
        Tier,
        Colour,
        dt.datetime,
        uuid.UUID,
        Item | None,
        Literal[Tier.FREE],
        Flat,
    ],
)
def test_results_json_changes_are_replayed_through_an_adapter(result_type: Any) -> None:
    assert not json_exact(result_type)
    assert isinstance(resolve_serializer(_returning(result_type), None), TypeAdapterSerializer)


def test_unannotated_and_unknown_types_replay_as_json_data() -> None:
    async def unannotated(payload):  # type: ignore[no-untyped-def]  # the case under test
        return payload

    class Opaque:
        pass

    assert isinstance(resolve_serializer(unannotated, None), NoOpSerializer)
    assert isinstance(resolve_serializer(_returning(Opaque), None), NoOpSerializer)
    never_defined = resolve_serializer(_returning("NoSuchName"), None)
    assert never_defined.to_dict({"id": uuid.UUID(int=1)}) == {"id": uuid.UUID(int=1)}
    assert never_defined.from_dict({"id": "1"}) == {"id": "1"}


def test_a_name_defined_after_the_function_is_resolved_on_first_use() -> None:
    namespace: dict[str, Any] = {}
    # A module whose class comes after the function that returns it.
    exec("async def issue(payload) -> 'Later': return payload", namespace)
    serializer = resolve_serializer(namespace["issue"], None)
    namespace["Later"] = Flat
    assert_same(replayed(serializer, stored_text(serializer, FLAT)), FLAT)


def test_explicit_serializers_win_and_powertools_names_build_from_the_annotation() -> None:
    explicit = NoOpSerializer()
    assert resolve_serializer(_returning(Order), explicit) is explicit
    by_type = resolve_serializer(_returning(Any), Order)
    assert_same(replayed(by_type, stored_text(by_type, ORDER)), ORDER)
    by_name = resolve_serializer(_returning(Receipt), PydanticSerializer)
    assert_same(replayed(by_name, stored_text(by_name, RECEIPT)), RECEIPT)
    nested = DataclassSerializer(Order)
    assert_same(replayed(nested, stored_text(nested, ORDER)), ORDER)
    with pytest.raises(TypeError, match="neither a pydantic model nor a dataclass"):
        resolve_serializer(_returning(Any), int)
    with pytest.raises(TypeError, match="needs a return annotation"):
        resolve_serializer(_returning(Any), DataclassSerializer)


def test_none_replays_as_none_whatever_the_type() -> None:
    serializer = resolve_serializer(_returning(Order), None)
    assert serializer.from_dict(None) is None


def test_a_value_pydantic_cannot_dump_is_a_value_error() -> None:
    class Opaque:
        pass

    serializer = resolve_serializer(_returning(list[Decimal]), None)
    with pytest.raises(ValueError, match="Unable to serialize"):
        serializer.to_dict([Opaque()])


# --- property: any nesting of the supported types round-trips exactly ---------------

Leaf = tuple[Any, st.SearchStrategy[Any]]

LEAVES: list[Leaf] = [
    (int, st.integers()),
    (str, st.text()),
    (bool, st.booleans()),
    (float, st.floats(allow_nan=False, allow_infinity=False)),
    (Decimal, st.decimals(allow_nan=False, allow_infinity=False)),
    (dt.datetime, st.datetimes(timezones=st.none() | st.just(dt.UTC))),
    (dt.date, st.dates()),
    (uuid.UUID, st.uuids()),
    (Colour, st.sampled_from(Colour)),
    (Priority, st.sampled_from(Priority)),
    (Tier, st.sampled_from(Tier)),
]


def _nest(children: st.SearchStrategy[Leaf]) -> st.SearchStrategy[Leaf]:
    def wrap(child: Leaf, shape: str, number: int) -> Leaf:
        tp, values = child
        if shape == "list":
            return list[tp], st.lists(values, max_size=3)  # type: ignore[valid-type]  # built at run time
        if shape == "tuple":
            return tuple[tp, ...], st.lists(values, max_size=3).map(tuple)  # type: ignore[valid-type]  # built at run time
        if shape == "pair":
            return tuple[tp, int], st.tuples(values, st.integers())  # type: ignore[valid-type]  # built at run time
        if shape == "dict":
            return dict[str, tp], st.dictionaries(st.text(max_size=4), values, max_size=3)  # type: ignore[valid-type]  # built at run time
        if shape == "int-keys":
            return dict[int, tp], st.dictionaries(st.integers(), values, max_size=3)  # type: ignore[valid-type]  # built at run time
        if shape == "optional":
            return tp | None, st.none() | values
        if shape == "model":
            model = pydantic.create_model(f"Model{number}", value=(tp, ...))
            return model, values.map(lambda v: model(value=v))
        cls = dataclasses.make_dataclass(f"Data{number}", [("value", tp), ("label", str)])
        return cls, st.builds(cls, values, st.text(max_size=3))

    shapes = ["list", "tuple", "pair", "dict", "int-keys", "optional", "model", "dataclass"]
    return st.builds(wrap, children, st.sampled_from(shapes), st.integers(0, 10**6))


TYPED_VALUES = st.recursive(st.sampled_from(LEAVES), _nest, max_leaves=4)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), typed=TYPED_VALUES)
def test_any_nesting_round_trips_through_stored_json(data: st.DataObject, typed: Leaf) -> None:
    result_type, values = typed
    value = data.draw(values)
    serializer = resolve_serializer(_returning(result_type), None)
    text = stored_text(serializer, value)
    json.loads(text, parse_constant=_no_constants)  # plain JSON: no NaN or Infinity
    assert_same(replayed(serializer, text), value)


def _no_constants(name: str) -> Any:
    raise AssertionError(f"stored JSON holds {name}")


# --- end to end: a decorated function on the in-memory store -------------------------


@pytest.mark.asyncio
async def test_a_duplicate_call_returns_what_the_first_call_returned() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="order_id", persistence_store=store)
    async def place(order_id: str) -> tuple[Order, dict[str, Decimal], list[Tier]]:
        runs.append(order_id)
        return ORDER, {"fee": Decimal("0.30")}, [Tier.PAID]

    first = await place(order_id="o-1")
    duplicate = await place(order_id="o-1")
    assert runs == ["o-1"]
    assert duplicate is not first
    assert_same(duplicate, first)


@pytest.mark.asyncio
async def test_a_result_that_cannot_be_dumped_is_an_error_and_leaves_no_lock() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    class Opaque:
        pass

    @idempotent_function(data_keyword_argument="order_id", persistence_store=store)
    async def price(order_id: str) -> list[Decimal]:
        runs.append(order_id)
        return [Decimal("1.5"), Opaque()]  # type: ignore[list-item]  # the mistake under test

    for _ in range(2):
        with pytest.raises(IdempotencySerializationError, match="cannot be stored"):
            await price(order_id="o-1")
    assert runs == ["o-1", "o-1"]  # the lock was released: the retry ran again
    assert store.items() == {}


class BuiltOnFirstUse(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(defer_build=True)

    amount: Decimal
    at: dt.date


def test_a_model_whose_schema_is_built_on_first_use_round_trips() -> None:
    value = BuiltOnFirstUse(amount=Decimal("2.50"), at=dt.date(2024, 2, 29))
    for result_type, result in ((BuiltOnFirstUse, value), (list[BuiltOnFirstUse], [value])):
        serializer = resolve_serializer(_returning(result_type), None)
        assert_same(replayed(serializer, stored_text(serializer, result)), result)
