"""Quick start: an async function that runs once per order, however often it is called.

    python examples/quickstart.py

Needs no AWS account: unless AWS_ENDPOINT_URL_DYNAMODB (or AWS_ENDPOINT_URL) is
set, the records go to a DynamoDB-protocol server started on loopback for the
run (dynamodb_endpoint.py).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from dynamodb_endpoint import dynamodb_endpoint
from pydantic import BaseModel

from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyConfig,
    create_table,
    idempotent_function,
)
from idemstore.loopback import RequestLog


class Order(BaseModel):
    order_id: str
    amount_cents: int


class Receipt(BaseModel):
    order_id: str
    charge_id: str


@dataclass(frozen=True)
class Summary:
    """What the run showed, for the reader and for the test that runs this file."""

    key: str
    executions: int
    receipts: list[Receipt]
    requests: list[list[str]]


async def demo(store: AsyncDynamoStore) -> Summary:
    await create_table(store)  # on-demand, TTL on "expiration"; checks an existing one
    charged: list[Order] = []  # what the payment provider saw
    replayed_from: list[DataRecord] = []

    def note_replay(receipt: Receipt, record: DataRecord) -> Receipt:
        replayed_from.append(record)  # a response hook sees every replay and its record
        return receipt

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=store,
        config=IdempotencyConfig(response_hook=note_replay),
    )
    async def charge(order: Order) -> Receipt:
        charged.append(order)
        return Receipt(order_id=order.order_id, charge_id=f"ch_{uuid.uuid4().hex[:8]}")

    order = Order(order_id=f"order-{uuid.uuid4().hex[:6]}", amount_cents=4200)
    log = RequestLog().attach(await store.client())  # counts the HTTP requests sent
    receipts: list[Receipt] = []
    requests: list[list[str]] = []
    for call in (1, 2):  # the second call is a retry of the same order
        executions = len(charged)
        receipt = await charge(order=order)
        how = "executed" if len(charged) > executions else "replayed"
        print(f"call {call}: {how}  {receipt!r}  requests: {log.operations}")
        receipts.append(receipt)
        requests.append(list(log.operations))
        log.clear()

    key = replayed_from[0].idempotency_key if replayed_from else "(no replay)"
    print(f"idempotency key: {key}")
    print(f"function executions for 2 calls: {len(charged)}")
    return Summary(key, len(charged), receipts, requests)


async def main() -> Summary:
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store("idemstore-quickstart") as store:
            print(f"table {store.table_name!r} at {endpoint}")
            return await demo(store)


if __name__ == "__main__":
    asyncio.run(main())
