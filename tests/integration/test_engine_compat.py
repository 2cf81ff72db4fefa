"""Tables compatibility with Powertools, both directions, on one table of the moto server.

Powertools' sync ``idempotent_function`` runs in a worker thread (it does blocking
I/O through boto3); idemstore runs on the test's event loop. Each pair of functions
has the same module and qualname, as one function before and after migrating.
The in-flight lock proofs, run on this store and on Redis alike, are in
``test_locks_across_libraries.py``.
"""

import asyncio
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pydantic
import pytest
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import (
    PydanticSerializer as PowertoolsPydanticSerializer,
)
from powertools_twins import (
    VALIDATING_AMOUNT,
    Library,
    as_lambda_function,
    other,
    powertools_twin,
    receipt,
    twins,
)

from idemstore import (
    AsyncDynamoStore,
    IdempotencyValidationError,
    RecordStatus,
    idempotent_function,
)
from idemstore.testing import RequestLog

F = TypeVar("F", bound=Callable[..., Any])


class Receipt(pydantic.BaseModel):
    order_id: str
    total: Decimal
    issued_at: dt.datetime


ISSUED_AT = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
ORDER = {"order_id": "o-1", "amount": Decimal("10.50"), "customer": "c-9"}


@pytest.fixture(autouse=True)
def function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_lambda_function(monkeypatch, "orders-service")


@pytest.mark.parametrize(
    ("first", "idemstore_requests"),
    [
        pytest.param("powertools", ["PutItem"], id="idemstore-replays-powertools"),
        pytest.param("idemstore", ["PutItem", "UpdateItem"], id="powertools-replays-idemstore"),
    ],
)
@pytest.mark.asyncio
async def test_a_record_completed_by_one_library_replays_in_the_other(
    dynamo_store: AsyncDynamoStore,
    powertools_layer: Any,
    first: Library,
    idemstore_requests: list[str],
) -> None:
    pair = twins(
        dynamo_store, powertools_layer, idemstore_result=receipt, powertools_result=receipt
    )
    log = RequestLog().attach(await dynamo_store.client())  # idemstore's client alone

    completed = await pair.call(first, ORDER)
    replayed = await pair.call(other(first), ORDER)

    assert completed == {"receipt": "o-1", "total": Decimal("10.50"), "lines": [1, 2]}
    assert replayed == {"receipt": "o-1", "total": "10.50", "lines": [1, 2]}
    assert pair.runs == [first]
    assert log.operations == idemstore_requests


@pytest.mark.asyncio
async def test_typed_results_replay_across_libraries(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any
) -> None:
    runs: list[str] = []
    receipt = Receipt(order_id="o-1", total=Decimal("10.50"), issued_at=ISSUED_AT)

    @idempotent_function(data_keyword_argument="order", persistence_store=dynamo_store)
    async def issue_receipt(order: dict[str, Any]) -> Receipt:
        runs.append("idemstore")
        return receipt

    @powertools_twin(
        issue_receipt, powertools_layer, output_serializer=PowertoolsPydanticSerializer
    )
    def issue_receipt_sync(order: dict[str, Any]) -> Receipt:
        runs.append("powertools")
        return receipt

    await asyncio.to_thread(lambda: issue_receipt_sync(order={"id": 1}))
    assert await issue_receipt(order={"id": 1}) == receipt
    await issue_receipt(order={"id": 2})
    assert await asyncio.to_thread(lambda: issue_receipt_sync(order={"id": 2})) == receipt
    assert runs == ["powertools", "idemstore"]


@pytest.mark.asyncio
async def test_payload_validation_agrees_across_libraries(
    dynamo_store: AsyncDynamoStore, powertools_layer: Any
) -> None:
    pair = twins(dynamo_store, powertools_layer, **VALIDATING_AMOUNT)

    await pair.powertools_call(ORDER)
    assert await pair.idemstore(order={**ORDER, "customer": "someone else"}) == "powertools"
    with pytest.raises(IdempotencyValidationError):
        await pair.idemstore(order={**ORDER, "amount": Decimal("99")})
    assert pair.runs == ["powertools"]
    identity = pair.idemstore.idempotency_engine.identify(ORDER)  # type: ignore[attr-defined]  # set by the decorator
    record = await dynamo_store.get_record(identity.key)
    assert record.status is RecordStatus.COMPLETED
    assert record.payload_hash == identity.payload_hash
