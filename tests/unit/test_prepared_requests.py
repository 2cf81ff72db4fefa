"""Prepared requests: compiled once with parameters, bound per call to the same request."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from table_schemas import RENAMED_ATTRIBUTES

from idemstore.codec import to_item
from idemstore.expressions import (
    Attr,
    Condition,
    Param,
    Update,
    Value,
    apply_update,
    compile_request,
    evaluate,
    prepare,
    update,
)
from idemstore.lock_rules import (
    acquire_condition,
    acquire_request,
    completion_request,
    completion_update,
    lock_available,
    owned_in_progress,
)
from idemstore.records import DataRecord, RecordStatus
from idemstore.table import TableSchema

NOW_S, NOW_MS, TOKEN = Param("now_s"), Param("now_ms"), Param("token")


def lock_rule(now_s: Value | Param, now_ms: Value | Param) -> Condition:
    """A rule shaped like the acquire condition: constants and parameters mixed."""
    lease = Attr("lease")
    return (
        Attr("id").not_exists()
        | (Attr("expiry") < now_s)
        | ((Attr("status") == "INPROGRESS") & lease.exists() & (lease < now_ms))
    )


def completion(status: Value | Param, data: Value | Param) -> Update:
    return update(Attr("status").set(status), Attr("data").set(data), Attr("old").remove())


@given(
    now_s=st.integers(min_value=1, max_value=2**40),
    now_ms=st.integers(min_value=1, max_value=2**50),
    data=st.text() | st.binary(),
)
def test_binding_gives_the_request_compiled_from_the_values(
    now_s: int, now_ms: int, data: str | bytes
) -> None:
    # Equal values share a placeholder when compiled, never when bound: keep them apart.
    assume(now_s != now_ms and data not in ("INPROGRESS", "COMPLETED", "tok"))
    prepared = prepare(
        condition=lock_rule(NOW_S, NOW_MS) & (Attr("owner") == TOKEN),
        update=completion("COMPLETED", Param("data")),
    )

    bound = prepared.bind(now_s=now_s, now_ms=now_ms, token="tok", data=data)

    assert bound == compile_request(
        condition=lock_rule(now_s, now_ms) & (Attr("owner") == "tok"),
        update=completion("COMPLETED", data),
    )


def test_the_prepared_text_is_compiled_once_and_keeps_constants() -> None:
    prepared = prepare(condition=lock_rule(NOW_S, NOW_MS))

    assert prepared.compiled.condition == (
        "attribute_not_exists(#n0) OR #n1 < :v0 OR #n2 = :v1 AND attribute_exists(#n3) "
        "AND #n3 < :v2"
    )
    assert prepared.params == {"now_s": ":v0", "now_ms": ":v2"}
    assert prepared.compiled.values == {":v1": {"S": "INPROGRESS"}}
    assert prepared.bind(now_s=5, now_ms=Decimal("5000.5")).values == {
        ":v0": {"N": "5"},
        ":v1": {"S": "INPROGRESS"},
        ":v2": {"N": "5000.5"},
    }


def test_a_parameter_never_shares_a_placeholder_with_an_equal_value() -> None:
    prepared = prepare(condition=(Attr("a") == "x") & (Attr("b") == Param("p")))

    bound = prepared.bind(p="x")

    assert bound.condition == "#n0 = :v0 AND #n1 = :v1"
    assert bound.values == {":v0": {"S": "x"}, ":v1": {"S": "x"}}


def test_one_parameter_used_twice_has_one_placeholder() -> None:
    prepared = prepare(condition=(Attr("a") < Param("t")) | (Attr("b") > Param("t")))

    assert prepared.params == {"t": ":v0"}
    assert prepared.bind(t=3).condition == "#n0 < :v0 OR #n1 > :v0"


def test_compile_request_refuses_parameters() -> None:
    with pytest.raises(TypeError, match="parameters"):
        compile_request(condition=Attr("a") == Param("p"))
    with pytest.raises(TypeError, match="parameters"):
        compile_request(update=update(Attr("a").set(Param("p"))))


def test_bind_needs_exactly_the_parameters() -> None:
    prepared = prepare(condition=lock_rule(NOW_S, NOW_MS))

    with pytest.raises(ValueError, match="need values"):
        prepared.bind(now_s=1)
    with pytest.raises(ValueError, match="need values"):
        prepared.bind(now_s=1, now_ms=2, extra=3)
    with pytest.raises(ValueError, match="finite"):
        prepared.bind(now_s=1, now_ms=float("nan"))


@given(
    stored_expiry=st.integers(min_value=0, max_value=100),
    stored_lease=st.integers(min_value=0, max_value=100),
    status=st.sampled_from(["INPROGRESS", "COMPLETED"]),
    now_s=st.integers(min_value=0, max_value=100),
    now_ms=st.integers(min_value=0, max_value=100),
)
def test_evaluate_with_parameters_agrees_with_evaluate_with_values(
    stored_expiry: int, stored_lease: int, status: str, now_s: int, now_ms: int
) -> None:
    item = {
        "id": {"S": "k"},
        "expiry": {"N": str(stored_expiry)},
        "lease": {"N": str(stored_lease)},
        "status": {"S": status},
    }

    with_params = evaluate(lock_rule(NOW_S, NOW_MS), item, {"now_s": now_s, "now_ms": now_ms})

    assert with_params == evaluate(lock_rule(now_s, now_ms), item)


def test_apply_update_takes_parameter_values() -> None:
    item = {"id": {"S": "k"}, "old": {"S": "gone"}}

    applied = apply_update(
        completion(Param("status"), Param("data")),
        item,
        {
            "status": "COMPLETED",
            "data": b"\x00",
        },
    )

    assert applied == {"id": {"S": "k"}, "status": {"S": "COMPLETED"}, "data": {"B": b"\x00"}}
    assert applied == apply_update(completion("COMPLETED", b"\x00"), item)


def test_a_parameter_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="now_ms"):
        evaluate(
            lock_rule(NOW_S, NOW_MS),
            {"id": {"S": "k"}, "status": {"S": "INPROGRESS"}, "lease": {"N": "1"}},
            {"now_s": 1},
        )
    with pytest.raises(ValueError, match="data"):
        apply_update(completion("COMPLETED", Param("data")), {})


# --- the table schema's hot requests -------------------------------------------------

SCHEMAS = [
    TableSchema(),
    TableSchema(sort_key_attr="sk", static_pk_value="idempotency#fn"),
    TableSchema(**RENAMED_ATTRIBUTES, expiry_attr="ttl", compress_threshold_bytes=64),
]


@pytest.mark.parametrize("schema", SCHEMAS)
@given(now=st.floats(min_value=1, max_value=4e9))
def test_the_acquire_request_is_the_compiled_acquire_condition(
    schema: TableSchema, now: float
) -> None:
    assume(int(now) != int(now * 1000))

    assert acquire_request(schema, now) == compile_request(condition=acquire_condition(schema, now))


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("response_data", [None, '{"ok": true}', '"' + "x" * 70_000 + '"'])
@pytest.mark.parametrize("payload_hash", [None, "", "0123abcd"])
def test_the_completion_request_is_the_compiled_fence_and_update(
    schema: TableSchema, response_data: str | None, payload_hash: str | None
) -> None:
    done = DataRecord(
        idempotency_key="fn#k",
        status=RecordStatus.COMPLETED,
        expiry_timestamp=1_700_003_600,
        response_data=response_data,
        payload_hash=payload_hash,
        owner_token="tok",
    )

    assert completion_request(schema, done, "tok") == compile_request(
        condition=owned_in_progress(schema, "tok"), update=completion_update(schema, done)
    )


@given(
    status=st.sampled_from([RecordStatus.INPROGRESS, RecordStatus.COMPLETED]),
    expiry=st.integers(min_value=0, max_value=2_000),
    lock_end=st.none() | st.integers(min_value=0, max_value=2_000_000),
    now=st.floats(min_value=0, max_value=2_000),
)
def test_lock_available_follows_the_acquire_condition(
    status: RecordStatus, expiry: int, lock_end: int | None, now: float
) -> None:
    found = DataRecord(
        idempotency_key="fn#k",
        status=status,
        expiry_timestamp=expiry,
        in_progress_expiry_timestamp=lock_end,
    )
    schema = TableSchema()

    assert lock_available(found, now) == evaluate(
        acquire_condition(schema, now), to_item(schema, found)
    )
