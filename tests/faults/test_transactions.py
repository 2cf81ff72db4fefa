"""Staged writes under faults: a transaction whose answer is lost still applies exactly once.

The completion and the staged writes go in one ``TransactWriteItems`` with a
``ClientRequestToken`` derived from the lock's owner token. DynamoDB answers a
retry of an applied transaction with the same token as success; moto ignores
the token and re-runs the retry, which then fails the completion's fence on our
own COMPLETED record — the proof that the first attempt applied. Either way the
side table must show the writes once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from faults.helpers import ATTEMPTS, RETRIES, BodyRuns, key_of, stored
from faults.proxy import FaultKind, FaultProxy
from idemstore import IdempotencyPersistenceLayerError, RecordStatus, idempotent_function
from idemstore.expressions import Attr
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.transactions import Put, Update, client_request_token, stage

RETRIED_ONCE = ["PutItem", "TransactWriteItems", "TransactWriteItems"]

LOST_ANSWERS = [
    pytest.param(FaultKind.DROP_RESPONSE, 1, RETRIED_ONCE, id="response-dropped"),
    pytest.param(FaultKind.STALL, 1, RETRIED_ONCE, id="response-past-read-timeout"),
    pytest.param(FaultKind.INTERNAL_ERROR, 1, RETRIED_ONCE, id="applied-then-500"),
    # botocore gives up; the fenced release finds our own completion and keeps it.
    pytest.param(
        FaultKind.DROP_RESPONSE,
        ATTEMPTS,
        ["PutItem", *["TransactWriteItems"] * ATTEMPTS, "DeleteItem"],
        id="response-dropped-on-every-attempt",
    ),
]
"""How the transaction's answer is lost, on how many attempts, and the requests sent."""


@pytest_asyncio.fixture
async def accounts(direct_store: AsyncDynamoStore) -> AsyncIterator[str]:
    """A side table of balances, with account ``a`` holding 100."""
    client = await direct_store.client()
    name = f"{direct_store.table_name}-accounts"
    await client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "account", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    await client.put_item(TableName=name, Item={"account": {"S": "a"}, "balance": {"N": "100"}})
    yield name


async def balance(store: AsyncDynamoStore, table: str) -> int:
    client = await store.client()
    item = await client.get_item(TableName=table, Key={"account": {"S": "a"}}, ConsistentRead=True)
    return int(item["Item"]["balance"]["N"])


async def ledger_entries(store: AsyncDynamoStore, table: str) -> int:
    client = await store.client()
    scanned = await client.scan(TableName=table, ConsistentRead=True)
    return sum(1 for item in scanned["Items"] if item["account"]["S"].startswith("ledger#"))


async def balance_and_entries(store: AsyncDynamoStore, table: str) -> tuple[int, int]:
    """Account ``a``'s balance and the number of ledger entries: what the debits applied."""
    return await balance(store, table), await ledger_entries(store, table)


@pytest.fixture
def debit(faulty_store: AsyncDynamoStore, accounts: str, runs: BodyRuns) -> Any:
    """``debit(payment=...)`` through the fault proxy: takes the amount from account ``a``
    and writes a ledger entry, both staged with the completion."""

    @idempotent_function(data_keyword_argument="payment", persistence_store=faulty_store)
    async def debit(*, payment: dict[str, Any]) -> dict[str, Any]:
        runs.record(payment)
        stage(
            Update(
                accounts,
                {"account": "a"},
                update=Attr("balance").add(-payment["amount"]),
                condition=Attr("balance") >= payment["amount"],
            ),
            Put(accounts, {"account": f"ledger#{payment['id']}", "amount": payment["amount"]}),
        )
        return {"paid": payment["id"]}

    return debit


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "times", "requests_sent"), LOST_ANSWERS)
async def test_a_transaction_whose_answer_is_lost_applies_once(
    kind: FaultKind,
    times: int,
    requests_sent: list[str],
    fault_proxy: FaultProxy,
    debit: Any,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
    accounts: str,
) -> None:
    fault_proxy.inject(kind, operation="TransactWriteItems", forward=True, times=times)

    assert await debit(payment={"id": "p1", "amount": 30}) == {"paid": "p1"}

    assert runs.count == 1
    assert fault_proxy.operations == requests_sent
    tokens = {r.body["ClientRequestToken"] for r in fault_proxy.requests("TransactWriteItems")}
    record = await stored(direct_store, key_of(debit, {"id": "p1", "amount": 30}))
    assert record is not None
    assert record.owner_token is not None
    assert tokens == {client_request_token(record.owner_token)}  # one token for every attempt
    assert record.status is RecordStatus.COMPLETED
    assert await balance_and_entries(direct_store, accounts) == (70, 1)
    # A duplicate replays: no second debit.
    assert await debit(payment={"id": "p1", "amount": 30}) == {"paid": "p1"}
    assert runs.count == 1
    assert await balance(direct_store, accounts) == 70


@pytest.mark.asyncio
async def test_a_transaction_refused_on_every_attempt_applies_nothing_and_frees_the_key(
    fault_proxy: FaultProxy,
    debit: Any,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
    accounts: str,
) -> None:
    fault_proxy.inject(
        FaultKind.SERVICE_UNAVAILABLE, operation="TransactWriteItems", times=ATTEMPTS
    )

    with pytest.raises(IdempotencyPersistenceLayerError):
        await debit(payment={"id": "p3", "amount": 10})

    assert await balance_and_entries(direct_store, accounts) == (100, 0)
    assert await stored(direct_store, key_of(debit, {"id": "p3", "amount": 10})) is None
    # Within the budget, the retry commits once.
    fault_proxy.inject(FaultKind.SERVICE_UNAVAILABLE, operation="TransactWriteItems", times=RETRIES)
    assert await debit(payment={"id": "p3", "amount": 10}) == {"paid": "p3"}
    assert runs.count == 2
    assert await balance_and_entries(direct_store, accounts) == (90, 1)
