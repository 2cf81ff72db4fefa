"""Keys and payload hashes: the same bytes and digests as Powertools computes."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import jmespath
import pydantic
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.persistence.base import (
    BasePersistenceLayer,
    # Private, but it is the very encoder behind the hash we must reproduce.
    _IdempotencyKeyEncoder,
)
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import (
    DynamoDBPersistenceLayer,
)
from aws_lambda_powertools.utilities.jmespath_utils import PowertoolsFunctions
from sample_types import Colour, Item, Priority, Tier

from idemstore.keys import (
    CompatFunctions,
    canonical_json,
    compile_jmespath,
    hash_data,
    is_missing_key,
    key_prefix,
    make_key,
    search,
    to_json_data,
)


class Price(Decimal, enum.Enum):
    """A Decimal mixed with Enum: Powertools encodes it as a Decimal."""

    LOW = Decimal("1.50")


class Order(pydantic.BaseModel):
    order_id: uuid.UUID
    placed_at: dt.datetime
    lines: list[Item]
    note: str | None = None


@dataclasses.dataclass
class Parcel:
    weight: Decimal
    day: dt.date
    priority: Priority
    path: PurePosixPath
    order: Order


ORDER_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
PLACED_AT = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
ORDER = Order(
    order_id=ORDER_ID,
    placed_at=PLACED_AT,
    lines=[Item(sku="a", price=Decimal("9.90"), colour=Colour.RED)],
)
PARCEL = Parcel(Decimal("2.500"), dt.date(2024, 1, 2), Priority.HIGH, PurePosixPath("/a/b"), ORDER)

PAYLOADS = [
    pytest.param({"b": 1, "a": [1, 2.5, None, True], "c": {"z": "é", "y": ""}}, id="dict"),
    pytest.param([3, 1, 2], id="list"),
    pytest.param("order-1", id="string"),
    pytest.param(0, id="zero"),
    pytest.param({"amount": Decimal("1.10"), "nan": Decimal("NaN")}, id="decimal"),
    pytest.param(ORDER, id="pydantic"),
    pytest.param(PARCEL, id="dataclass"),
    pytest.param([Colour.RED, Priority.HIGH, Tier.PAID, Price.LOW], id="enum"),
    pytest.param(
        {
            "date": dt.date(2024, 2, 29),
            "naive": dt.datetime(2024, 2, 29, 23, 59, 59),
            "aware": PLACED_AT,
            "offset": dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "time": dt.time(12, 30, 1, 5),
        },
        id="dates",
    ),
    pytest.param({"id": ORDER_ID}, id="uuid"),
    pytest.param(
        {"rel": Path("x/y.txt"), "posix": PurePosixPath("/tmp/a"), "win": PureWindowsPath("C:/a")},
        id="paths",
    ),
    pytest.param(
        {"orders": [ORDER, {"parcel": PARCEL, "when": dt.date(2024, 3, 1)}], "n": Decimal("-0")},
        id="nested",
    ),
]


def powertools_layer(hash_function: str) -> BasePersistenceLayer:
    layer = DynamoDBPersistenceLayer("idempotency", boto3_client=object())
    layer.configure(IdempotencyConfig(hash_function=hash_function), function_name="mod.f")
    return layer


@pytest.mark.parametrize("data", PAYLOADS)
def test_canonical_json_is_the_powertools_text(data: Any) -> None:
    assert canonical_json(data) == json.dumps(data, cls=_IdempotencyKeyEncoder, sort_keys=True)


@pytest.mark.parametrize("hash_function", ["md5", "sha256", "sha1", "blake2b"])
@pytest.mark.parametrize("data", PAYLOADS)
def test_hash_is_the_powertools_hash(data: Any, hash_function: str) -> None:
    assert hash_data(data, hash_function) == powertools_layer(hash_function)._generate_hash(data)


def test_hash_is_stable_and_order_independent() -> None:
    assert hash_data({"a": 1, "b": 2}, "md5") == hash_data({"b": 2, "a": 1}, "md5")
    assert hash_data({"a": 1}, "md5") != hash_data({"a": 2}, "md5")
    assert hash_data(Decimal("1.0"), "md5") != hash_data(Decimal("1.00"), "md5")  # text, as sent


@pytest.mark.parametrize("data", [{1, 2}, object(), {"a": frozenset()}], ids=repr)
def test_unencodable_payloads_fail_as_in_powertools(data: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(data)
    with pytest.raises(TypeError):
        powertools_layer("md5")._generate_hash(data)


@pytest.mark.parametrize("function_name", [None, "orders-fn"])
def test_key_is_the_powertools_key(
    function_name: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if function_name is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", function_name)
    layer = DynamoDBPersistenceLayer("idempotency", boto3_client=object())
    layer.configure(
        IdempotencyConfig(event_key_jmespath="powertools_json(body).order"),
        function_name="shop.handlers.charge",
    )
    event = {"body": json.dumps({"order": {"id": 7, "lines": [1, 2]}})}
    prefix = key_prefix(function_name, "shop.handlers", "charge")
    assert prefix == f"{function_name or 'test-func'}.shop.handlers.charge"
    data = search(
        compile_jmespath("powertools_json(body).order"),
        event,
        jmespath.Options(custom_functions=CompatFunctions()),
    )
    assert make_key(prefix, data, "md5") == layer._get_hashed_idempotency_key(event)


def test_to_json_data() -> None:
    assert to_json_data(ORDER) == ORDER.model_dump(mode="json")
    assert to_json_data(PARCEL) == dataclasses.asdict(PARCEL)
    payload = {"a": ORDER}
    assert to_json_data(payload) is payload  # already JSON-shaped at the top
    assert to_json_data(None) is None


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        (None, True),
        ({}, True),
        ({"a": None}, True),
        ({"a": None, "b": None}, True),
        ({"a": None, "b": 0}, False),
        ([], True),
        ([None, None], True),
        ((None,), True),
        ([None, 1], False),
        ("", True),
        ("x", False),
        (0, False),
        (0.0, False),
        (False, False),
        (True, False),
        ({"a": ""}, False),
    ],
)
def test_is_missing_key(data: Any, missing: bool) -> None:
    assert is_missing_key(data) is missing
    assert bool(BasePersistenceLayer.is_missing_idempotency_key(data)) is missing


GZIPPED = base64.b64encode(gzip.compress(b'{"id": "g-1"}')).decode()
EVENT = {
    "body": '{"x": {"y": [1, 2]}, "id": "b-1"}',
    "b64": base64.b64encode(b'{"id": "64-1"}').decode(),
    "gz": GZIPPED,
    "plain": "text",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("powertools_json(body).x", {"y": [1, 2]}),
        ("powertools_json(body).x.y[1]", 2),
        ("[powertools_json(body).id, plain]", ["b-1", "text"]),
        ("powertools_base64(b64)", '{"id": "64-1"}'),
        ("powertools_json(powertools_base64(b64)).id", "64-1"),
        ("powertools_base64_gzip(gz)", '{"id": "g-1"}'),
        ("powertools_json(powertools_base64_gzip(gz)).id", "g-1"),
        ("powertools_json(body).missing", None),
    ],
)
def test_compat_functions_match_powertools(expression: str, expected: Any) -> None:
    ours = search(
        compile_jmespath(expression), EVENT, jmespath.Options(custom_functions=CompatFunctions())
    )
    theirs = jmespath.search(
        expression, EVENT, options=jmespath.Options(custom_functions=PowertoolsFunctions())
    )
    assert ours == expected
    assert theirs == expected


def test_compat_functions_check_argument_types() -> None:
    options = jmespath.Options(custom_functions=CompatFunctions())
    with pytest.raises(jmespath.exceptions.JMESPathTypeError):
        search(compile_jmespath("powertools_json(n)"), {"n": 1}, options)
    with pytest.raises(jmespath.exceptions.UnknownFunctionError):
        search(compile_jmespath("powertools_json(body)"), EVENT, jmespath.Options())


def test_an_empty_function_name_stays_empty_in_the_prefix_as_powertools_does() -> None:
    from idemstore.keys import key_prefix

    assert key_prefix(None, "app", "handler") == "test-func.app.handler"
    assert key_prefix("", "app", "handler") == ".app.handler"
    assert key_prefix("orders", "app", "handler") == "orders.app.handler"
