"""Testing idempotent code with idemstore's pytest fixtures.

``dynamo_store`` is a fresh table on a local DynamoDB-protocol server,
``memory_store`` an in-memory store with the same rules, and ``RequestLog``
counts the requests a DynamoDB client sends. pytest-asyncio strict mode.
"""

from __future__ import annotations

import pytest
from orders import Confirmation, Order, OrderService, PaymentDeclinedError

from idemstore import AsyncDynamoStore, InMemoryStore, RecordStore
from idemstore.testing import RequestLog

ORDER = Order(order_id="order-1", amount_cents=4200)


@pytest.fixture(params=["memory_store", "dynamo_store"])
def store(request: pytest.FixtureRequest) -> RecordStore:
    """Each test below runs once against each store."""
    found: RecordStore = request.getfixturevalue(request.param)
    return found


@pytest.mark.asyncio
async def test_a_repeated_order_is_placed_once(store: RecordStore) -> None:
    service = OrderService(store)

    first = await service.place(order=ORDER)
    second = await service.place(order=ORDER)

    assert service.placed == [ORDER]
    assert isinstance(second, Confirmation)
    assert second == first


@pytest.mark.asyncio
async def test_the_key_is_the_order_id_alone(store: RecordStore) -> None:
    service = OrderService(store)

    await service.place(order=ORDER)
    await service.place(order=ORDER.model_copy(update={"amount_cents": 1}))
    await service.place(order=Order(order_id="order-2", amount_cents=4200))

    assert [order.order_id for order in service.placed] == ["order-1", "order-2"]


@pytest.mark.asyncio
async def test_a_declined_order_can_be_retried(store: RecordStore) -> None:
    service = OrderService(store)
    service.decline_next = True

    with pytest.raises(PaymentDeclinedError):
        await service.place(order=ORDER)
    confirmation = await service.place(order=ORDER)

    assert service.placed == [ORDER]
    assert confirmation.order_id == ORDER.order_id


@pytest.mark.asyncio
async def test_a_replay_costs_one_request(dynamo_store: AsyncDynamoStore) -> None:
    service = OrderService(dynamo_store)
    log = RequestLog().attach(await dynamo_store.client())

    await service.place(order=ORDER)
    first_call = list(log.operations)
    log.clear()
    await service.place(order=ORDER)

    assert first_call == ["PutItem", "UpdateItem"]  # take the lock, store the result
    assert log.operations == ["PutItem"]  # the refused lock returns the stored result


@pytest.mark.asyncio
async def test_the_memory_store_keeps_one_record(memory_store: InMemoryStore) -> None:
    service = OrderService(memory_store)

    await service.place(order=ORDER)
    await service.place(order=ORDER)

    assert len(memory_store.items()) == 1
