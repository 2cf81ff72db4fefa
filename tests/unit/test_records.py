"""Records and the table schema: validation, time rules, the item codec, corrupt items."""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    DataRecord as PowertoolsRecord,
)
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import (
    DynamoDBPersistenceLayer,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from table_schemas import RENAMED_ATTRIBUTES

from idemstore.codec import MAX_ITEM_BYTES, from_item, to_item
from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    InvalidRecordError,
)
from idemstore.expressions import AttributeValue, apply_update, compile_request, evaluate
from idemstore.lock_rules import (
    acquire_condition,
    completion_update,
    lock_available,
    owned_in_progress,
    owned_or_gone,
    renewal_update,
)
from idemstore.records import DataRecord, RecordStatus
from idemstore.table import TableSchema

FAR_FUTURE = 4_000_000_000  # epoch seconds in 2096: never expired while these tests run


def record(**changes: Any) -> DataRecord:
    fields: dict[str, Any] = {
        "idempotency_key": "fn.mod.f#abc",
        "status": RecordStatus.INPROGRESS,
        "expiry_timestamp": 1_000,
        "in_progress_expiry_timestamp": 1_000_000,
        "owner_token": "token-1",
    }
    fields.update(changes)
    return DataRecord(**fields)


# --- DataRecord ---------------------------------------------------------------


def test_a_record_is_frozen() -> None:
    stored = record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.status = RecordStatus.COMPLETED  # type: ignore[misc]  # the point: refused


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"status": RecordStatus.EXPIRED}, id="expired-is-derived"),
        pytest.param({"status": "DONE"}, id="unknown-status"),
        pytest.param({"idempotency_key": ""}, id="empty-key"),
        pytest.param({"expiry_timestamp": "soon"}, id="non-numeric-expiry"),
        pytest.param({"expiry_timestamp": True}, id="boolean-expiry"),
        pytest.param({"in_progress_expiry_timestamp": 1.5}, id="fractional-lock-deadline"),
        pytest.param({"owner_token": 7}, id="non-text-token"),
    ],
)
def test_a_record_is_validated(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        record(**changes)
    assert isinstance(caught.value, ValueError)
    assert next(iter(changes)) in str(caught.value)  # names the field


def test_an_unknown_record_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected"):
        record(unexpected=1)


def test_a_status_given_as_text_is_the_enum_member() -> None:
    stored = record(status="COMPLETED")
    assert stored.status is RecordStatus.COMPLETED


def test_a_replaced_record_is_validated_again() -> None:
    with pytest.raises(InvalidRecordError, match="idempotency_key"):
        dataclasses.replace(record(), idempotency_key="")


def test_expiry_is_in_whole_seconds() -> None:
    stored = record(status=RecordStatus.COMPLETED, expiry_timestamp=100)
    assert not stored.is_expired(99.0)
    assert not stored.is_expired(100.999)  # still second 100
    assert stored.is_expired(101.0)
    assert stored.status_at(100.5) is RecordStatus.COMPLETED
    assert stored.status_at(101.0) is RecordStatus.EXPIRED
    assert record(expiry_timestamp=100).status_at(101.0) is RecordStatus.EXPIRED
    assert record(expiry_timestamp=100).status_at(100.0) is RecordStatus.INPROGRESS


@pytest.mark.parametrize(
    ("changes", "now", "available"),
    [
        pytest.param({"status": RecordStatus.COMPLETED}, 999.0, False, id="completed-live"),
        pytest.param({"status": RecordStatus.COMPLETED}, 1000.9, False, id="completed-last-second"),
        pytest.param({"status": RecordStatus.COMPLETED}, 1001.0, True, id="completed-expired"),
        pytest.param({}, 999.999, False, id="lock-live"),
        pytest.param({}, 1000.0, False, id="lock-ends-now"),
        pytest.param({}, 1000.001, True, id="lock-stale"),
        pytest.param({"in_progress_expiry_timestamp": None}, 999.0, False, id="lock-no-deadline"),
        pytest.param({"in_progress_expiry_timestamp": None}, 1001.0, True, id="lock-expired"),
        pytest.param(
            {"status": RecordStatus.COMPLETED, "in_progress_expiry_timestamp": 1},
            999.0,
            False,
            id="completed-ignores-lock-deadline",
        ),
    ],
)
def test_lock_available(changes: dict[str, Any], now: float, available: bool) -> None:
    assert lock_available(record(**changes), now) is available


def test_owned_by() -> None:
    assert record(owner_token="t").owned_by("t")
    assert not record(owner_token="t").owned_by("u")
    assert not record(owner_token="t").owned_by(None)
    assert not record(owner_token=None).owned_by(None)  # no token proves no ownership


# --- TableSchema --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"sort_key_attr": "id"}, id="sort-key-equals-key"),
        pytest.param({"key_attr": "pk", "sort_key_attr": "pk"}, id="custom-key-equals-sort-key"),
        pytest.param({"status_attr": "data"}, id="status-is-data"),
        pytest.param({"owner_token_attr": "expiration"}, id="token-is-expiry"),
        pytest.param({"sort_key_attr": "validation"}, id="sort-key-is-validation"),
        pytest.param({"compressed_data_attr": "id"}, id="compressed-is-key"),
        pytest.param({"key_attr": ""}, id="empty-name"),
        pytest.param({"compress_threshold_bytes": -1}, id="negative-threshold"),
    ],
)
def test_schema_rejects_clashing_or_empty_names(kwargs: dict[str, Any]) -> None:
    with pytest.raises(IdempotencyConfigurationError, match=next(iter(kwargs))):
        TableSchema(**kwargs)
    with pytest.raises(IdempotencyConfigurationError) as caught:
        TableSchema.build(**kwargs)
    assert isinstance(caught.value, ValueError)


def test_schema_defaults_are_the_powertools_names() -> None:
    schema = TableSchema.build()
    assert schema == TableSchema()
    assert (schema.key_attr, schema.sort_key_attr, schema.expiry_attr) == ("id", None, "expiration")
    assert (schema.in_progress_expiry_attr, schema.status_attr) == (
        "in_progress_expiration",
        "status",
    )
    assert (schema.data_attr, schema.validation_key_attr) == ("data", "validation")


def test_acquire_condition_compiles_to_the_powertools_rule() -> None:
    compiled = compile_request(condition=acquire_condition(TableSchema(), 1_700_000_000.5))
    assert compiled.condition == (
        "attribute_not_exists(#n0) OR #n1 < :v0 OR "
        "#n2 = :v1 AND attribute_exists(#n3) AND #n3 < :v2"
    )
    assert compiled.names == {
        "#n0": "id",
        "#n1": "expiration",
        "#n2": "status",
        "#n3": "in_progress_expiration",
    }
    assert compiled.values == {
        ":v0": {"N": "1700000000"},
        ":v1": {"S": "INPROGRESS"},
        ":v2": {"N": "1700000000500"},
    }


def test_fences() -> None:
    schema = TableSchema()
    ours = to_item(schema, record(owner_token="mine"))
    theirs = to_item(schema, record(owner_token="theirs"))
    done = to_item(schema, record(owner_token="mine", status=RecordStatus.COMPLETED))
    assert evaluate(owned_in_progress(schema, "mine"), ours)
    assert not evaluate(owned_in_progress(schema, "mine"), theirs)
    assert not evaluate(owned_in_progress(schema, "mine"), done)
    assert not evaluate(owned_in_progress(schema, "mine"), None)
    release = owned_or_gone(schema, "mine", RecordStatus.INPROGRESS)
    assert evaluate(release, ours)
    assert not evaluate(release, done)  # releasing a lock never deletes a completed result
    assert evaluate(release, None)
    assert not evaluate(release, theirs)
    assert evaluate(owned_or_gone(schema, "mine", RecordStatus.COMPLETED), done)


# --- the item codec -----------------------------------------------------------


GOOD_RECORD = record(
    idempotency_key="k",
    status=RecordStatus.COMPLETED,
    expiry_timestamp=100,
    in_progress_expiry_timestamp=100_000,
    response_data="{}",
    payload_hash="h",
    owner_token="t",
)
"""A record with every attribute set."""
GOOD_ITEM: dict[str, Any] = {
    "id": {"S": "k"},
    "status": {"S": "COMPLETED"},
    "expiration": {"N": "100"},
    "in_progress_expiration": {"N": "100000"},
    "data": {"S": "{}"},
    "validation": {"S": "h"},
    "owner_token": {"S": "t"},
}
"""``GOOD_RECORD``'s item in the default layout; each corrupt-item case below changes one
attribute of it."""


def test_item_layout() -> None:
    assert to_item(TableSchema(), GOOD_RECORD) == GOOD_ITEM
    minimal = record(in_progress_expiry_timestamp=None, owner_token=None, payload_hash="")
    assert to_item(TableSchema(), minimal) == {
        "id": {"S": "fn.mod.f#abc"},
        "expiration": {"N": "1000"},
        "status": {"S": "INPROGRESS"},
    }


def test_sort_key_mode_keeps_the_key_in_the_sort_key() -> None:
    schema = TableSchema(sort_key_attr="sk", static_pk_value="idempotency#orders")
    stored = record()
    item = to_item(schema, stored)
    assert schema.key(stored.idempotency_key) == {
        "id": {"S": "idempotency#orders"},
        "sk": {"S": "fn.mod.f#abc"},
    }
    assert item["id"] == {"S": "idempotency#orders"}
    assert item["sk"] == {"S": "fn.mod.f#abc"}
    assert schema.record_key_attr == "sk"
    assert from_item(schema, item) == stored


def test_large_results_are_stored_compressed() -> None:
    schema = TableSchema(compress_threshold_bytes=8)
    small = record(status=RecordStatus.COMPLETED, response_data="é" * 4)  # 8 bytes: not above
    large = record(status=RecordStatus.COMPLETED, response_data="é" * 5)  # 10 bytes
    assert to_item(schema, small)["data"] == {"S": "é" * 4}
    assert "data_zlib" not in to_item(schema, small)
    item = to_item(schema, large)
    assert "data" not in item
    assert zlib.decompress(item["data_zlib"]["B"]).decode() == "é" * 5
    assert from_item(schema, item) == large
    assert from_item(schema, to_item(schema, small)) == small


def dynamo_item_size(item: Mapping[str, AttributeValue]) -> int:
    """DynamoDB's count: names and strings in UTF-8, binary in bytes. A number counts as
    its text, more than DynamoDB's byte per two significant digits plus one: the codec
    errs towards fitting, by a few bytes."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode())
        if kind == "N":
            assert len(raw) >= (len(raw.lstrip("-").strip("0")) + 1) // 2 + 1
        size += len(raw) if kind == "B" else len(raw.encode())
    return size


@pytest.mark.parametrize(
    "schema",
    [TableSchema(), TableSchema(sort_key_attr="sk", static_pk_value="idempotency#orders")],
)
def test_by_default_a_result_stays_text_while_its_item_fits(schema: TableSchema) -> None:
    base = record(status=RecordStatus.COMPLETED, response_data="", payload_hash="h" * 32)
    room = MAX_ITEM_BYTES - dynamo_item_size(to_item(schema, base))
    fitting = replace(base, response_data="é" * (room // 2) + "x" * (room % 2))
    item = to_item(schema, fitting)
    assert item["data"] == {"S": fitting.response_data}
    assert "data_zlib" not in item
    assert dynamo_item_size(item) <= MAX_ITEM_BYTES
    assert from_item(schema, item) == fitting

    too_large = replace(fitting, response_data=f"{fitting.response_data}xx")
    item = to_item(schema, too_large)
    assert "data" not in item
    assert dynamo_item_size(item) < MAX_ITEM_BYTES // 10
    assert from_item(schema, item) == too_large
    # The completion writes the same attribute as the item codec.
    for done in (fitting, too_large):
        completed = apply_update(completion_update(schema, done), to_item(schema, record()))
        assert from_item(schema, completed) == done
        assert completed.keys() == to_item(schema, done).keys()


def test_a_100_kb_result_is_stored_as_text_by_default() -> None:
    result = json.dumps({"rows": [{"id": i, "name": "row"} for i in range(4000)]})
    assert len(result) > 100_000
    item = to_item(TableSchema(), record(status=RecordStatus.COMPLETED, response_data=result))
    assert item["data"] == {"S": result}
    assert "data_zlib" not in item


def test_an_explicit_threshold_still_compresses_smaller_results() -> None:
    schema = TableSchema(compress_threshold_bytes=32 * 1024)
    result = json.dumps({"rows": [{"id": i, "name": "row"} for i in range(3000)]})
    item = to_item(schema, record(status=RecordStatus.COMPLETED, response_data=result))
    assert len(item["data_zlib"]["B"]) < len(result) // 4
    assert from_item(schema, item).response_data == result


def test_completion_update_turns_the_lock_into_the_result() -> None:
    schema = TableSchema(compress_threshold_bytes=16)
    lock_item = to_item(schema, record())
    small = record(status=RecordStatus.COMPLETED, response_data="1", payload_hash="h")
    large = replace(small, response_data=json.dumps(["x"] * 10))
    for done in (small, large, small):
        lock_item = apply_update(completion_update(schema, done), lock_item)
        assert from_item(schema, lock_item) == done
        assert ("data_zlib" in lock_item) is (done is large)
        assert ("data" in lock_item) is (done is small)


def test_renewal_update_moves_the_lock_deadline_and_keeps_the_record_alive() -> None:
    schema = TableSchema()
    held = record(expiry_timestamp=5_000, in_progress_expiry_timestamp=1_000_000)
    within = apply_update(renewal_update(schema, held, 2_000_000), to_item(schema, held))
    assert from_item(schema, within) == record(
        expiry_timestamp=5_000, in_progress_expiry_timestamp=2_000_000
    )
    # A lease outliving the record's expiry drags the expiry along, so the record
    # cannot be taken over as expired while its lock is still held.
    beyond = apply_update(renewal_update(schema, held, 9_000_500), to_item(schema, held))
    assert from_item(schema, beyond) == record(
        expiry_timestamp=9_001, in_progress_expiry_timestamp=9_000_500
    )
    assert not lock_available(from_item(schema, beyond), 9_000.0)


def test_an_empty_payload_hash_is_not_stored() -> None:
    # Powertools writes no validation attribute for an empty hash; neither do we.
    item = to_item(TableSchema(), record(payload_hash=""))
    assert "validation" not in item
    assert from_item(TableSchema(), item).payload_hash is None


texts = st.text(st.characters(codec="utf-8"), max_size=60)
records = st.builds(
    DataRecord,
    idempotency_key=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    status=st.sampled_from([RecordStatus.INPROGRESS, RecordStatus.COMPLETED]),
    expiry_timestamp=st.integers(0, 2**40),
    in_progress_expiry_timestamp=st.none() | st.integers(0, 2**50),
    response_data=st.none() | texts,
    payload_hash=st.none() | texts.filter(bool),  # "" is written as no hash: see above
    owner_token=st.none() | texts,
)
schemas = st.sampled_from(
    [
        TableSchema(),
        TableSchema(compress_threshold_bytes=0),
        TableSchema(compress_threshold_bytes=20),
        TableSchema(sort_key_attr="sk", static_pk_value="idempotency#fn"),
        TableSchema(
            **RENAMED_ATTRIBUTES, sort_key_attr="sk", expiry_attr="exp", compress_threshold_bytes=10
        ),
    ]
)


@settings(deadline=None, max_examples=300)
@given(stored=records, schema=schemas)
def test_item_codec_round_trip(stored: DataRecord, schema: TableSchema) -> None:
    assert from_item(schema, to_item(schema, stored)) == stored


# --- byte compatibility with Powertools ------------------------------------------


class CapturingClient:
    """Stands in for a boto3 client: records the requests Powertools builds."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("put_item", kwargs))
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("update_item", kwargs))
        return {}


def apply_set_expression(
    item: Mapping[str, AttributeValue], request: dict[str, Any]
) -> dict[str, AttributeValue]:
    """Apply a plain ``SET #a = :a, #b = :b`` update, the only form Powertools sends."""
    expression: str = request["UpdateExpression"]
    assert expression.startswith("SET ")
    result = dict(item)
    for assignment in expression.removeprefix("SET ").split(", "):
        name, value = assignment.split(" = ")
        result[request["ExpressionAttributeNames"][name]] = request["ExpressionAttributeValues"][
            value
        ]
    return result


LAYOUTS = [
    pytest.param({}, id="defaults"),
    pytest.param({"sort_key_attr": "sk", "static_pk_value": "idempotency#fn"}, id="sort-key"),
    pytest.param(
        {
            "key_attr": "pk",
            "expiry_attr": "exp",
            "in_progress_expiry_attr": "lock_until",
            "status_attr": "state",
            "data_attr": "result",
            "validation_key_attr": "hash",
        },
        id="custom-names",
    ),
]
"""Table layouts, as the keyword arguments Powertools' layer and ``TableSchema`` both take."""


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reads_the_items_powertools_writes(layout: dict[str, Any]) -> None:
    client = CapturingClient()
    layer = DynamoDBPersistenceLayer("idempotency", boto3_client=client, **layout)
    layer.configure(IdempotencyConfig(payload_validation_jmespath="amount"), function_name="f")
    schema = TableSchema(**layout)
    key = "test-func.mod.f#0123abcd"
    result = json.dumps({"ok": True, "text": "naïve"}, sort_keys=True)

    layer._put_record(
        PowertoolsRecord(
            idempotency_key=key,
            status="INPROGRESS",
            expiry_timestamp=FAR_FUTURE,
            in_progress_expiry_timestamp=FAR_FUTURE * 1000,
            payload_hash="hash-1",
        )
    )
    layer._update_record(
        PowertoolsRecord(
            idempotency_key=key,
            status="COMPLETED",
            expiry_timestamp=FAR_FUTURE + 60,
            response_data=result,
            payload_hash="hash-1",
        )
    )

    (put_op, put), (update_op, upd) = client.requests
    assert (put_op, update_op) == ("put_item", "update_item")
    assert upd["Key"] == schema.key(key)
    in_progress = put["Item"]
    assert from_item(schema, in_progress) == DataRecord(
        idempotency_key=key,
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=FAR_FUTURE,
        in_progress_expiry_timestamp=FAR_FUTURE * 1000,
        payload_hash="hash-1",
    )
    assert from_item(schema, apply_set_expression(in_progress, upd)) == DataRecord(
        idempotency_key=key,
        status=RecordStatus.COMPLETED,
        expiry_timestamp=FAR_FUTURE + 60,
        in_progress_expiry_timestamp=FAR_FUTURE * 1000,
        response_data=result,
        payload_hash="hash-1",
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_powertools_reads_the_items_we_write(layout: dict[str, Any]) -> None:
    layer = DynamoDBPersistenceLayer("idempotency", boto3_client=CapturingClient(), **layout)
    schema = TableSchema(**layout)
    ours = record(
        status=RecordStatus.COMPLETED,
        expiry_timestamp=FAR_FUTURE,
        response_data='{"ok": true}',
        payload_hash="hash-1",
    )
    theirs = layer._item_to_data_record(to_item(schema, ours))
    # In sort-key mode Powertools reads the partition value as the key, the key as sort_key.
    if schema.sort_key_attr is None:
        assert theirs.idempotency_key == ours.idempotency_key
    else:
        assert theirs.idempotency_key == schema.static_pk_value
        assert theirs.sort_key == ours.idempotency_key
    assert theirs.status == "COMPLETED"
    assert theirs.expiry_timestamp == FAR_FUTURE
    assert theirs.in_progress_expiry_timestamp == ours.in_progress_expiry_timestamp
    assert theirs.response_data == ours.response_data
    assert theirs.payload_hash == "hash-1"


# --- corrupt items ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "attribute", "key"),
    [
        pytest.param({"id": None}, "id", None, id="missing-key"),
        pytest.param({"id": {"N": "1"}}, "id", None, id="key-not-a-string"),
        pytest.param({"id": {"S": ""}}, "id", None, id="key-empty"),
        pytest.param({"status": None}, "status", "k", id="missing-status"),
        pytest.param({"status": {"N": "1"}}, "status", "k", id="status-not-a-string"),
        pytest.param({"status": "COMPLETED"}, "status", "k", id="status-untyped"),
        pytest.param({"status": {"S": "DONE"}}, "status", "k", id="unknown-status"),
        pytest.param({"status": {"S": "EXPIRED"}}, "status", "k", id="expired-stored"),
        pytest.param({"expiration": None}, "expiration", "k", id="missing-expiry"),
        pytest.param({"expiration": {"S": "100"}}, "expiration", "k", id="expiry-a-string"),
        pytest.param({"expiration": {"N": "soon"}}, "expiration", "k", id="expiry-non-numeric"),
        pytest.param({"expiration": {"N": "NaN"}}, "expiration", "k", id="expiry-nan"),
        pytest.param({"expiration": {"N": "Infinity"}}, "expiration", "k", id="expiry-inf"),
        pytest.param(
            {"in_progress_expiration": {"S": "x"}},
            "in_progress_expiration",
            "k",
            id="lock-deadline-a-string",
        ),
        pytest.param(
            {"in_progress_expiration": {"N": "sNaN"}},
            "in_progress_expiration",
            "k",
            id="lock-deadline-nan",
        ),
        pytest.param({"data": {"N": "1"}}, "data", "k", id="data-a-number"),
        pytest.param({"data": {"M": {}}}, "data", "k", id="data-a-map"),
        pytest.param({"validation": {"B": b"h"}}, "validation", "k", id="validation-binary"),
        pytest.param({"owner_token": {"BOOL": True}}, "owner_token", "k", id="token-a-bool"),
        pytest.param({"data_zlib": {"S": "x"}}, "data_zlib", "k", id="compressed-a-string"),
        pytest.param({"data_zlib": {"B": b"not zlib"}}, "data_zlib", "k", id="compressed-garbage"),
        pytest.param(
            {"data_zlib": {"B": zlib.compress(b"\xff\xfe")}},
            "data_zlib",
            "k",
            id="compressed-not-utf8",
        ),
    ],
)
def test_corrupt_items_name_key_and_attribute(
    changes: dict[str, Any], attribute: str, key: str | None
) -> None:
    item = {**GOOD_ITEM, **changes}
    item = {name: value for name, value in item.items() if value is not None}
    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        from_item(TableSchema(), item)
    assert caught.value.attribute == attribute
    assert caught.value.idempotency_key == key
    assert repr(attribute) in str(caught.value)


def test_the_good_item_is_good() -> None:
    # The corrupt-item cases above each change one attribute of this item.
    assert from_item(TableSchema(), GOOD_ITEM) == GOOD_RECORD


def test_a_corrupt_sort_key_item_names_the_sort_key() -> None:
    schema = TableSchema(sort_key_attr="sk")
    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        from_item(schema, {**GOOD_ITEM, "id": {"S": "idempotency#"}})
    assert caught.value.attribute == "sk"


attribute_values = st.one_of(
    st.builds(
        lambda s: {"S": s}, st.sampled_from(["INPROGRESS", "COMPLETED", "EXPIRED", ""]) | st.text()
    ),
    st.builds(
        lambda n: {"N": n},
        st.integers().map(str)
        | st.sampled_from(["NaN", "-Infinity", "1.5", "1e3", ""])
        | st.text(),
    ),
    st.builds(lambda b: {"B": b}, st.binary(max_size=20) | st.just(zlib.compress(b"[]"))),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.just({"L": []}),
    st.text(max_size=3),
    st.integers(),
    st.none(),
)
ATTRIBUTE_NAMES = [
    "id",
    "status",
    "expiration",
    "in_progress_expiration",
    "data",
    "data_zlib",
    "validation",
    "owner_token",
]


@settings(deadline=None, max_examples=500)
@given(item=st.fixed_dictionaries({}, optional=dict.fromkeys(ATTRIBUTE_NAMES, attribute_values)))
def test_any_item_reads_as_a_record_or_a_corrupt_record_error(item: dict[str, Any]) -> None:
    outcome: DataRecord | IdempotencyCorruptRecordError
    try:
        outcome = from_item(TableSchema(), item)
    except IdempotencyCorruptRecordError as exc:
        outcome = exc
    if isinstance(outcome, IdempotencyCorruptRecordError):
        assert outcome.attribute in ATTRIBUTE_NAMES
    else:
        assert outcome.idempotency_key == item["id"]["S"]
