"""Testing a module-level store with the ``dynamo_endpoint`` fixture.

``payments.store`` is built at import time without ``endpoint_url``.
``dynamo_endpoint`` points such stores at the local server for one test (by
environment variables, undone after it), and ``create_table(store)`` makes the
table the store names; after the test that table is deleted and the store's
client closed, so every test starts from an empty table.
"""

from __future__ import annotations

from collections.abc import Iterator

import payments
import pytest
import pytest_asyncio
from payments import Payment, Receipt, charge

from idemstore import AsyncDynamoStore
from idemstore.testing import LoopbackTables, RequestLog

PAYMENT = Payment(payment_id="pay-1", amount_cents=500)


@pytest.fixture(autouse=True)
def no_charges_yet() -> Iterator[None]:
    payments.charges.clear()
    yield
    payments.charges.clear()


@pytest_asyncio.fixture
async def payments_store(dynamo_endpoint: LoopbackTables) -> AsyncDynamoStore:
    """The module's own store, with its table on the local server."""
    return await dynamo_endpoint.create_table(payments.store)


@pytest.mark.asyncio
async def test_a_repeated_payment_is_charged_once(payments_store: AsyncDynamoStore) -> None:
    first = await charge(payment=PAYMENT)
    second = await charge(payment=PAYMENT)

    assert payments.charges == ["pay-1"]
    assert isinstance(second, Receipt)
    assert second == first


@pytest.mark.asyncio
async def test_every_test_starts_with_an_empty_table(payments_store: AsyncDynamoStore) -> None:
    """Runs after the test above with the same payment: no record is left over."""
    await charge(payment=PAYMENT)

    assert payments.charges == ["pay-1"]


@pytest.mark.asyncio
async def test_the_module_store_talks_to_the_local_server(
    payments_store: AsyncDynamoStore, dynamo_endpoint: LoopbackTables
) -> None:
    client = await payments_store.client()
    log = RequestLog().attach(client)

    await charge(payment=PAYMENT)
    await charge(payment=PAYMENT)

    assert client.meta.endpoint_url == dynamo_endpoint.url
    assert log.operations == ["PutItem", "UpdateItem", "PutItem"]
