"""Security: configuration and payloads cannot inject into expressions; tampering is detected.

Attribute names come from the store's configuration and reach DynamoDB only as
values of ``ExpressionAttributeNames`` (and as item keys); payloads reach it only
hashed. The proxy sees every request, so these tests check the wire itself.
(Tenant isolation of the HTTP middlewares: tests/integration/test_http_conformance.py,
``test_tenants_with_the_same_key_each_run_once``, run on each framework.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from faults.helpers import BodyRuns, key_of, new_table_name, proxied_store, raw_item, status_of
from faults.proxy import FaultProxy
from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    IdempotencyValidationError,
    RecordStatus,
    create_table,
    idempotent_function,
)
from idemstore.testing import MotoEndpoint

HOSTILE_NAMES = {
    "key_attr": "id) OR attribute_exists(x",
    "expiry_attr": "#n0",
    "in_progress_expiry_attr": ":v0 < :v1",
    "status_attr": "status = :v1 OR",
    "data_attr": "data REMOVE status",
    "validation_key_attr": "SET #n1 = :v2,",
    "owner_token_attr": "owner_token)) OR ((1 = 1",
    "compressed_data_attr": "a.b[0]",
}

HOSTILE_VALUES = ["x) OR attribute_exists(id", "#n0", ":v0", "'; DROP TABLE", '"}]}']

EXPRESSION_TOKEN = re.compile(
    r"#n\d+|:v\d+|attribute_not_exists|attribute_exists|AND|OR|NOT|SET|REMOVE|[()=<>,]+|\s+"
)


def only_placeholders(expression: str) -> bool:
    return EXPRESSION_TOKEN.sub("", expression) == ""


async def exercise(store: AsyncDynamoStore, payloads: list[str]) -> None:
    """One of each path: run, replay, fail and release, large result, validation mismatch."""
    runs = BodyRuns()
    config = IdempotencyConfig(event_key_jmespath="id", payload_validation_jmespath="note")

    @idempotent_function(
        data_keyword_argument="payload", persistence_store=store, config=config, key_prefix="inj"
    )
    async def act(payload: dict[str, Any]) -> Any:
        runs.record(payload)
        if payload["note"] == "fail":
            raise RuntimeError("failed")
        return {"echo": payload, "pad": "z" * payload.get("pad", 0)}

    first, second = payloads[0], payloads[1]
    assert await act(payload={"id": first, "note": "n"}) == {
        "echo": {"id": first, "note": "n"},
        "pad": "",
    }
    assert (await act(payload={"id": first, "note": "n"}))["echo"]["id"] == first
    with pytest.raises(IdempotencyValidationError):
        await act(payload={"id": first, "note": "tampered"})
    with pytest.raises(RuntimeError):
        await act(payload={"id": second, "note": "fail"})
    big = await act(payload={"id": second, "note": "big", "pad": 100_000})
    assert len(big["pad"]) == 100_000
    assert runs.count == 3
    assert await status_of(store, key_of(act, {"id": first, "note": "n"})) is RecordStatus.COMPLETED


def expressions(proxy: FaultProxy) -> list[tuple[str, str, str]]:
    return [
        (
            seen.operation,
            seen.body.get("ConditionExpression", ""),
            seen.body.get("UpdateExpression", ""),
        )
        for seen in proxy.seen
        if seen.operation in ("PutItem", "UpdateItem", "DeleteItem")
    ]


@pytest.mark.asyncio
async def test_hostile_attribute_names_and_payloads_never_reach_an_expression(
    moto_server: MotoEndpoint, fault_proxy: FaultProxy
) -> None:
    plain_store = proxied_store(moto_server, fault_proxy, new_table_name())
    hostile_store = proxied_store(moto_server, fault_proxy, new_table_name(), **HOSTILE_NAMES)
    async with plain_store, hostile_store:
        await create_table(plain_store)
        await create_table(hostile_store)

        fault_proxy.seen.clear()
        await exercise(plain_store, ["order-1", "order-2"])
        plain = expressions(fault_proxy)

        fault_proxy.seen.clear()
        await exercise(hostile_store, HOSTILE_VALUES)
        hostile = expressions(fault_proxy)
        hostile_requests = list(fault_proxy.seen)

    # The same requests, word for word: names and payloads changed nothing in them.
    assert hostile == plain
    assert len(hostile) >= 6
    for _, condition, update in hostile:
        assert only_placeholders(condition), condition
        assert only_placeholders(update), update
    named = set()
    for seen in hostile_requests:
        named |= set(seen.body.get("ExpressionAttributeNames", {}).values())
        for text in (
            seen.body.get("ConditionExpression", ""),
            seen.body.get("UpdateExpression", ""),
        ):
            assert not any(value in text for value in HOSTILE_VALUES if len(value) > 3)
    assert named == set(HOSTILE_NAMES.values())


@pytest.mark.asyncio
async def test_items_under_hostile_names_keep_the_powertools_layout(
    moto_server: MotoEndpoint, fault_proxy: FaultProxy
) -> None:
    store = proxied_store(moto_server, fault_proxy, new_table_name(), **HOSTILE_NAMES)
    async with store:
        await create_table(store)
        runs = BodyRuns()

        @idempotent_function(data_keyword_argument="payload", persistence_store=store)
        async def act(payload: str) -> str:
            runs.record(payload)
            return payload.upper()

        assert await act(payload="abc") == "ABC"
        assert await act(payload="abc") == "ABC"
        item = await raw_item(store, key_of(act, "abc"))

    assert runs.count == 1
    assert item is not None
    assert item[HOSTILE_NAMES["status_attr"]] == {"S": "COMPLETED"}
    assert item[HOSTILE_NAMES["data_attr"]] == {"S": '"ABC"'}
    assert item[HOSTILE_NAMES["key_attr"]] == {"S": key_of(act, "abc")}
    assert set(item) == {
        HOSTILE_NAMES[name]
        for name in (
            "key_attr",
            "expiry_attr",
            "in_progress_expiry_attr",
            "status_attr",
            "data_attr",
            "owner_token_attr",
        )
    }


@pytest.mark.asyncio
async def test_a_tampered_payload_on_replay_is_refused(dynamo_store: AsyncDynamoStore) -> None:
    runs = BodyRuns()
    config = IdempotencyConfig(
        event_key_jmespath="order_id", payload_validation_jmespath="[amount, currency]"
    )

    @idempotent_function(
        data_keyword_argument="order", persistence_store=dynamo_store, config=config
    )
    async def charge(order: dict[str, Any]) -> dict[str, Any]:
        runs.record(order)
        return {"charged": order["amount"]}

    genuine = {"order_id": "o-1", "amount": 10, "currency": "EUR"}
    assert await charge(order=genuine) == {"charged": 10}
    key = key_of(charge, genuine)
    before = await raw_item(dynamo_store, key)

    with pytest.raises(IdempotencyValidationError) as caught:
        await charge(order={**genuine, "amount": 1000})
    assert caught.value.idempotency_key == key
    assert await charge(order={**genuine, "note": "not validated"}) == {"charged": 10}

    assert runs.count == 1
    assert await raw_item(dynamo_store, key) == before


@pytest.mark.asyncio
async def test_a_tampered_validation_hash_in_the_table_is_detected(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    config = IdempotencyConfig(event_key_jmespath="order_id", payload_validation_jmespath="amount")

    @idempotent_function(
        data_keyword_argument="order", persistence_store=dynamo_store, config=config
    )
    async def charge(order: dict[str, Any]) -> dict[str, Any]:
        runs.record(order)
        return {"charged": order["amount"]}

    genuine = {"order_id": "o-2", "amount": 10}
    assert await charge(order=genuine) == {"charged": 10}
    client = await dynamo_store.client()
    await client.update_item(
        TableName=dynamo_store.table_name,
        Key={"id": {"S": key_of(charge, genuine)}},
        UpdateExpression="SET #v = :v",
        ExpressionAttributeNames={"#v": "validation"},
        ExpressionAttributeValues={":v": {"S": "0" * 32}},
    )

    with pytest.raises(IdempotencyValidationError):
        await charge(order=genuine)
    assert runs.count == 1
