"""Exactly-once DynamoDB writes: a payment debits a balance and writes a ledger entry once.

    python examples/transfer.py

The payment function does not write to the accounts table itself: it stages
the debit and the ledger entry, and idemstore commits them in one
TransactWriteItems with the fenced completion of its lock. So they apply
exactly when the payment's result is recorded by the lock's owner.

The run shows a worker that stalls after its function ran, before its
completion is sent (a crash, or a long pause); its lease lapses, a retry takes
the payment over and commits it. When the stalled worker wakes, its completion
fails its fence, and its staged writes with it: the balance is debited once.
Then a payment the balance cannot cover is refused by the debit's own
condition, with nothing written and the key free for a retry.

Needs no AWS account: unless AWS_ENDPOINT_URL_DYNAMODB (or AWS_ENDPOINT_URL) is
set, the tables live on a DynamoDB-protocol server started on loopback for the
run (dynamodb_endpoint.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from dynamodb_endpoint import dynamodb_endpoint
from pydantic import BaseModel

from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    IdempotencyLeaseLostError,
    create_table,
    idempotent_function,
)
from idemstore.errors import IdempotencyTransactionCanceledError
from idemstore.expressions import Attr
from idemstore.transactions import Put, Update, stage

LEASE_SECONDS = 60


class Payment(BaseModel):
    payment_id: str
    account: str
    amount_cents: int


class Receipt(BaseModel):
    payment_id: str
    worker: str


@dataclass
class Summary:
    """What the run showed, for the reader and for the test that runs this file."""

    balance: int = 0
    ledger_entries: int = 0
    body_runs: list[str] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    late_worker_error: str = ""
    refused: list[int] = field(default_factory=list)


Pay = Callable[..., Coroutine[Any, Any, Receipt]]


@dataclass
class Stall:
    """Holds a worker after its function's work, before its completion is sent."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)


def payment_worker(
    store: AsyncDynamoStore,
    accounts: str,
    name: str,
    summary: Summary,
    *,
    clock: Callable[[], float],
    stall: Stall | None = None,
) -> Pay:
    """One worker's idempotent ``pay``; workers share the key prefix, so one payment has one key."""

    @idempotent_function(
        data_keyword_argument="payment",
        persistence_store=store,
        config=IdempotencyConfig(in_progress_lease_seconds=LEASE_SECONDS, clock=clock),
        key_prefix="transfer",
    )
    async def pay(*, payment: Payment) -> Receipt:
        summary.body_runs.append(name)
        stage(
            Update(
                accounts,
                {"pk": payment.account},
                update=Attr("balance").add(-payment.amount_cents),
                condition=Attr("balance") >= payment.amount_cents,
            ),
            Put(
                accounts,
                {"pk": f"ledger#{payment.payment_id}", "amount_cents": payment.amount_cents},
                condition=Attr("pk").not_exists(),
            ),
        )
        if stall is not None:  # the work is done; the completion is not sent yet
            stall.reached.set()
            await stall.resume.wait()
        return Receipt(payment_id=payment.payment_id, worker=name)

    return pay


async def create_accounts(store: AsyncDynamoStore) -> str:
    """A side table keyed by ``pk``: balances under the account, entries under ``ledger#``."""
    name = f"{store.table_name}-accounts-{uuid.uuid4().hex[:6]}"
    client = await store.client()
    await client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    await client.put_item(TableName=name, Item={"pk": {"S": "alice"}, "balance": {"N": "10000"}})
    return name


async def read_accounts(store: AsyncDynamoStore, accounts: str, summary: Summary) -> None:
    client = await store.client()
    scanned = await client.scan(TableName=accounts, ConsistentRead=True)
    for item in scanned["Items"]:
        if item["pk"] == {"S": "alice"}:
            summary.balance = int(item["balance"]["N"])
    summary.ledger_entries = sum(1 for i in scanned["Items"] if i["pk"]["S"].startswith("ledger#"))


async def demo(store: AsyncDynamoStore) -> Summary:
    await create_table(store)
    accounts = await create_accounts(store)
    summary = Summary()
    now = time.time()
    stall = Stall()
    stalled = payment_worker(store, accounts, "A", summary, clock=lambda: now, stall=stall)
    # The retry comes after A's lease has lapsed: its clock reads a lease later.
    retry = payment_worker(store, accounts, "B", summary, clock=lambda: now + LEASE_SECONDS + 1)

    payment = Payment(payment_id=f"pay-{uuid.uuid4().hex[:6]}", account="alice", amount_cents=3000)
    first = asyncio.create_task(stalled(payment=payment))
    await stall.reached.wait()
    print("worker A ran the payment and stalled before its completion")

    summary.receipts.append(await retry(payment=payment))
    print(f"worker B took the lapsed lock over and committed: {summary.receipts[-1]!r}")

    stall.resume.set()  # A wakes up and sends its completion with its staged writes
    try:
        await first
    except IdempotencyLeaseLostError as exc:
        summary.late_worker_error = type(exc).__name__
        print(f"worker A woke up: {type(exc).__name__}; its writes were not applied")

    summary.receipts.append(await retry(payment=payment))  # a duplicate replays
    print(f"a duplicate replays: {summary.receipts[-1]!r}")

    too_much = Payment(payment_id="pay-too-much", account="alice", amount_cents=1_000_000)
    try:
        await retry(payment=too_much)
    except IdempotencyTransactionCanceledError as exc:
        summary.refused = exc.failed
        print(f"a payment over the balance is refused, nothing written: {exc}")

    await read_accounts(store, accounts, summary)
    print(f"function runs: {len(summary.body_runs)}; debits applied: {summary.ledger_entries}")
    print(f"balance: {summary.balance} (was 10000)")
    return summary


async def main() -> Summary:
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store("idemstore-transfer") as store:
            print(f"table {store.table_name!r} at {endpoint}")
            return await demo(store)


if __name__ == "__main__":
    asyncio.run(main())
