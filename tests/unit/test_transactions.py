"""The pure part of idemstore.transactions: staged writes, their requests, limits, reasons."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from idemstore.errors import (
    ExpressionError,
    IdempotencyLeaseLostError,
    IdempotencyTransactionCanceledError,
    IdempotencyTransactionLimitError,
)
from idemstore.expressions import Attr, update
from idemstore.records import DataRecord, RecordStatus
from idemstore.transactions import (
    MAX_TRANSACTION_BYTES,
    CancellationReason,
    ConditionCheck,
    Delete,
    Put,
    Update,
    check_limits,
    client_request_token,
    item_size,
    reasons_from_response,
    settle_transaction,
)

OWN_KEY = {"id": {"S": "fn#abc"}}


def test_a_put_encodes_plain_values_as_the_store_does() -> None:
    put = Put("orders", {"pk": "o1", "total": Decimal("9.5"), "n": 3, "ok": True, "x": None})
    assert put.request() == {
        "Put": {
            "TableName": "orders",
            "Item": {
                "pk": {"S": "o1"},
                "total": {"N": "9.5"},
                "n": {"N": "3"},
                "ok": {"BOOL": True},
                "x": {"NULL": True},
            },
        }
    }


def test_an_update_compiles_its_condition_and_update_into_one_placeholder_space() -> None:
    write = Update("stock", {"sku": "a"}, update=Attr("qty").add(-1), condition=Attr("qty") >= 1)
    body = write.request()["Update"]
    assert body["Key"] == {"sku": {"S": "a"}}
    assert body["UpdateExpression"] == "ADD #n0 :v1"
    assert body["ConditionExpression"] == "#n0 >= :v0"
    assert body["ExpressionAttributeNames"] == {"#n0": "qty"}
    assert body["ExpressionAttributeValues"] == {":v0": {"N": "1"}, ":v1": {"N": "-1"}}
    assert body["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_an_update_takes_several_actions() -> None:
    write = Update("t", {"k": 1}, update=update(Attr("a").set(1), Attr("b").remove()))
    assert write.request()["Update"]["UpdateExpression"] == "SET #n0 = :v0 REMOVE #n1"


def test_delete_and_condition_check_requests() -> None:
    assert Delete("t", {"k": "x"}).request() == {
        "Delete": {"TableName": "t", "Key": {"k": {"S": "x"}}}
    }
    check = ConditionCheck("t", {"k": "x"}, Attr("k").exists()).request()["ConditionCheck"]
    assert check["ConditionExpression"] == "attribute_exists(#n0)"


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Put("", {"pk": 1}), id="no-table"),
        pytest.param(lambda: Put("t", {}), id="empty-item"),
        pytest.param(lambda: Put("t", {"pk": object()}), id="unencodable-value"),
        pytest.param(lambda: Delete("t", {"k": [1]}), id="list-key"),
        pytest.param(lambda: Delete("t", {"a": 1, "b": 2, "c": 3}), id="three-key-attributes"),
        # The type checker would refuse these; a caller without one gets a clear error.
        pytest.param(lambda: Update("t", {"k": 1}, update="SET a = 1"), id="update-as-text"),  # type: ignore[arg-type]
        pytest.param(lambda: Delete("t", {"k": 1}, condition="a = 1"), id="condition-as-text"),  # type: ignore[arg-type]
        pytest.param(lambda: ConditionCheck("t", {"k": 1}, None), id="check-without-condition"),  # type: ignore[arg-type]
    ],
)
def test_malformed_writes_are_refused_when_built(build: Any) -> None:
    with pytest.raises(ExpressionError):
        build()


def test_the_completion_counts_against_the_hundred_actions() -> None:
    writes = [Delete("t", {"k": n}) for n in range(99)]
    check_limits(writes, own_table="idem", own_key=OWN_KEY)
    with pytest.raises(IdempotencyTransactionLimitError, match="make 101 actions") as caught:
        check_limits([*writes, Delete("t", {"k": 99})], own_table="idem", own_key=OWN_KEY)
    assert caught.value.limit == "items"
    assert isinstance(caught.value, ValueError)


def test_two_writes_to_one_item_are_refused_puts_included_once_the_key_is_known() -> None:
    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        check_limits(
            [Update("t", {"k": 1}, update=Attr("a").set(1)), Put("t", {"k": Decimal(1), "a": 2})],
            own_table="idem",
            own_key=OWN_KEY,
        )
    assert (caught.value.limit, caught.value.index) == ("same_item", 1)
    # Other items of the same table are fine.
    check_limits(
        [Update("t", {"k": 1}, update=Attr("a").set(1)), Put("t", {"k": 2})],
        own_table="idem",
        own_key=OWN_KEY,
    )


def test_the_own_record_cannot_be_staged_but_other_records_can() -> None:
    for write in (
        Put("idem", {"id": "fn#abc", "status": "COMPLETED"}),
        Delete("idem", {"id": "fn#abc"}),
    ):
        with pytest.raises(IdempotencyTransactionLimitError) as caught:
            check_limits([write], own_table="idem", own_key=OWN_KEY)
        assert caught.value.limit == "own_record"
    check_limits([Delete("idem", {"id": "fn#other"})], own_table="idem", own_key=OWN_KEY)


def test_the_total_size_counts_the_completion() -> None:
    blob = Put("t", {"k": "a", "b": b"x" * (MAX_TRANSACTION_BYTES - 100)})
    check_limits([blob], own_table="idem", own_key=OWN_KEY)
    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        check_limits([blob], own_table="idem", own_key=OWN_KEY, completion_bytes=200)
    assert caught.value.limit == "bytes"


def test_item_size_follows_dynamodbs_rules() -> None:
    assert item_size({"ab": {"S": "xyz"}}) == 5
    assert item_size({"b": {"B": b"1234"}}) == 5
    assert item_size({"m": {"M": {"k": {"BOOL": True}}}}) == 1 + 3 + 1 + 1 + 1
    assert item_size({"l": {"L": [{"NULL": True}]}}) == 1 + 3 + 1 + 1


def test_the_request_token_is_stable_per_owner_and_fits_dynamodb() -> None:
    token = client_request_token("0123456789abcdef0123456789abcdef")
    assert token == client_request_token("0123456789abcdef0123456789abcdef")
    assert token != client_request_token("another")
    assert 1 <= len(token) <= 36


def test_reasons_are_read_aligned_and_unknown_when_missing() -> None:
    raw = [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "m", "Item": {"a": {"N": "1"}}},
    ]
    first, second = reasons_from_response(raw, 2)
    assert not first.failed
    assert second == CancellationReason("ConditionalCheckFailed", "m", {"a": {"N": "1"}})
    assert [r.code for r in reasons_from_response(None, 2)] == ["Unknown", "Unknown"]


def _record(status: RecordStatus, token: str) -> DataRecord:
    return DataRecord(
        idempotency_key="fn#abc", status=status, expiry_timestamp=10, owner_token=token
    )


def test_settling_a_cancellation() -> None:
    mine = _record(RecordStatus.COMPLETED, "me")
    writes = [Delete("t", {"k": 1})]
    failed = CancellationReason("ConditionalCheckFailed", "no")
    fine = CancellationReason(None)
    # Our own completed record behind a failed fence: an earlier attempt applied.
    settle_transaction(mine, writes, [failed, fine], _record(RecordStatus.COMPLETED, "me"))
    with pytest.raises(IdempotencyLeaseLostError):
        settle_transaction(mine, writes, [failed, fine], _record(RecordStatus.INPROGRESS, "them"))
    with pytest.raises(IdempotencyTransactionCanceledError) as caught:
        settle_transaction(mine, writes, [fine, failed], None)
    assert caught.value.failed == [0]
    assert caught.value.reasons == (failed,)
    assert "write 0 (Delete on 't'): ConditionalCheckFailed (no)" in str(caught.value)
    conflict = CancellationReason("TransactionConflict", "busy")
    with pytest.raises(
        IdempotencyTransactionCanceledError, match="the completion: TransactionConflict"
    ):
        settle_transaction(mine, writes, [conflict, fine], None)
