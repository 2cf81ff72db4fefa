"""``evaluate()`` against a DynamoDB-protocol server: the same condition, the same answer.

The in-memory store decides with ``evaluate()``; the DynamoDB store lets the
server decide. Each case plants an item, then sends a conditional PutItem and
compares the server's verdict with ``evaluate()`` on the same item.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from botocore.exceptions import ClientError

from idemstore.codec import to_item
from idemstore.expressions import Attr, AttributeValue, Condition, compile_request, evaluate
from idemstore.lock_rules import acquire_condition, owned_in_progress, owned_or_gone
from idemstore.records import DataRecord, RecordStatus
from idemstore.stores.dynamo import AsyncDynamoStore

T = 1_700_000_000  # epoch seconds
T_MS = T * 1000


async def server_accepts(
    store: AsyncDynamoStore, key: str, planted: dict[str, AttributeValue] | None, cond: Condition
) -> bool:
    """Plant ``planted`` (or nothing) at ``key``; whether a put conditioned on ``cond`` passes."""
    client = await store.client()
    key_item = store.schema.key(key)
    if planted is not None:
        await client.put_item(TableName=store.table_name, Item={**planted, **key_item})
    request = compile_request(condition=cond)
    try:
        await client.put_item(
            TableName=store.table_name,
            Item={**key_item, "probe": {"S": "written"}},
            **request.as_kwargs(),
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        return False
    return True


def existing_records() -> list[DataRecord | None]:
    """No record; COMPLETED around its expiry; INPROGRESS around both deadlines."""
    found: list[DataRecord | None] = [None]
    for expiry in (T - 1, T, T + 1):
        found.append(
            DataRecord(
                idempotency_key="k",
                status=RecordStatus.COMPLETED,
                expiry_timestamp=expiry,
                in_progress_expiry_timestamp=T_MS - 10_000,  # ignored once completed
                response_data="{}",
                owner_token="holder",
            )
        )
    lock_deadlines = (None, T_MS - 1, T_MS, T_MS + 500, T_MS + 1000, T_MS + 60_000)
    for expiry, deadline in itertools.product((T - 1, T, T + 3600), lock_deadlines):
        found.append(
            DataRecord(
                idempotency_key="k",
                status=RecordStatus.INPROGRESS,
                expiry_timestamp=expiry,
                in_progress_expiry_timestamp=deadline,
                owner_token="holder",
            )
        )
    return found


@pytest.mark.asyncio
async def test_acquire_condition_agrees_with_the_server(dynamo_store: AsyncDynamoStore) -> None:
    schema = dynamo_store.schema
    verdicts: list[bool] = []
    disagreements: list[tuple[Any, ...]] = []
    cases = itertools.product(existing_records(), (T + 0.0, T + 0.5, T + 0.9995, T + 1.0))
    for number, (existing, now) in enumerate(cases):
        planted = to_item(schema, existing) if existing is not None else None
        condition = acquire_condition(schema, now)
        expected = evaluate(condition, planted)
        accepted = await server_accepts(dynamo_store, f"case-{number}", planted, condition)
        verdicts.append(accepted)
        if accepted != expected:
            disagreements.append((existing, now, "evaluate:", expected, "server:", accepted))
    assert disagreements == []
    assert 0 < sum(verdicts) < len(verdicts)  # the grid has takeovers and refusals both


@pytest.mark.asyncio
async def test_fences_agree_with_the_server(dynamo_store: AsyncDynamoStore) -> None:
    schema = dynamo_store.schema
    base = DataRecord(
        idempotency_key="k",
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=T + 3600,
        in_progress_expiry_timestamp=T_MS + 60_000,
        owner_token="mine",
    )
    existing: list[DataRecord | None] = [
        None,
        base,
        base.model_copy(update={"owner_token": "theirs"}),
        base.model_copy(update={"owner_token": None}),
        base.model_copy(update={"status": RecordStatus.COMPLETED, "response_data": "1"}),
    ]
    fences = [
        owned_in_progress(schema, "mine"),
        owned_or_gone(schema, "mine", RecordStatus.INPROGRESS),
        owned_or_gone(schema, "mine", RecordStatus.COMPLETED),
    ]
    disagreements: list[tuple[Any, ...]] = []
    for number, (record, fence) in enumerate(itertools.product(existing, fences)):
        planted = to_item(schema, record) if record is not None else None
        accepted = await server_accepts(dynamo_store, f"fence-{number}", planted, fence)
        if accepted != evaluate(fence, planted):
            disagreements.append((record, compile_request(condition=fence), accepted))
    assert disagreements == []


PLANTED: dict[str, AttributeValue] = {
    "n": {"N": "5"},
    "s": {"S": "5"},
    "b": {"B": b"a"},
    "flag": {"BOOL": True},
    "nothing": {"NULL": True},
}


@pytest.mark.parametrize(
    "condition",
    [
        # A missing attribute satisfies "<>" and nothing else.
        pytest.param(Attr("missing") != "x", id="missing-ne"),
        pytest.param(Attr("missing") == "x", id="missing-eq"),
        pytest.param(Attr("missing") < "x", id="missing-lt"),
        pytest.param(Attr("missing") >= "x", id="missing-ge"),
        pytest.param(~(Attr("missing") == "x"), id="not-missing-eq"),
        # Equality never holds across types: N 5 is not S "5".
        pytest.param(Attr("n") == "5", id="number-eq-string"),
        pytest.param(Attr("n") != "5", id="number-ne-string"),
        pytest.param(Attr("s") == 5, id="string-eq-number"),
        pytest.param(Attr("s") != 5, id="string-ne-number"),
        pytest.param(Attr("b") == "a", id="binary-eq-string"),
        pytest.param(Attr("nothing") == False, id="null-eq-false"),  # noqa: E712 - builder operator
        # Same-type comparisons: numbers numerically, strings and binary by bytes.
        pytest.param(Attr("n") < 10, id="numeric-order"),
        pytest.param(Attr("n") == 5.0, id="numeric-equality"),
        pytest.param(Attr("s") < "10", id="string-order"),
        pytest.param(Attr("b") < b"b", id="binary-order"),
        pytest.param(Attr("nothing") == None, id="null-eq-null"),  # noqa: E711 - builder operator
        pytest.param(Attr("flag") == True, id="bool-eq-bool"),  # noqa: E712 - builder operator
        pytest.param(~~(Attr("n") == 5), id="double-negation"),
    ],
)
@pytest.mark.asyncio
async def test_comparisons_agree_with_the_server(
    dynamo_store: AsyncDynamoStore, condition: Condition
) -> None:
    # Not compared, because moto departs from DynamoDB there: ordering across
    # types (moto answers HTTP 500), BOOL against numbers (moto holds true equal
    # to 1), ordering of BOOLs. DynamoDB's documented rule is that values of
    # different types never match, which is what evaluate() does.
    accepted = await server_accepts(dynamo_store, "k", PLANTED, condition)
    assert accepted is evaluate(condition, PLANTED)
