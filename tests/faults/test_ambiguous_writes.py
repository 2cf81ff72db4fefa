"""Ambiguous writes: the server applied the write, the client never heard.

botocore retries such a request; the retry then fails its own condition. The
store must read the item returned with that failure as its own earlier write.
"""

from __future__ import annotations

import pytest

from faults.helpers import (
    ATTEMPTS,
    BodyRuns,
    PlaceOrder,
    completed_result,
    key_of,
    order_function,
    stored,
)
from faults.proxy import FaultKind, FaultProxy
from idemstore import IdempotencyPersistenceLayerError
from idemstore.stores.dynamo import AsyncDynamoStore

AMBIGUOUS = [
    pytest.param(FaultKind.DROP_RESPONSE, id="response-dropped"),
    pytest.param(FaultKind.STALL, id="response-past-read-timeout"),
    pytest.param(FaultKind.INTERNAL_ERROR, id="applied-then-500"),
]


AMBIGUOUS_WRITES = [
    pytest.param(
        "PutItem",
        # The faulted put and its retry, which finds our own lock (a loaded machine may time
        # a retry out once more: still puts only), then the completion.
        [["PutItem"] * puts + ["UpdateItem"] for puts in range(2, ATTEMPTS + 1)],
        id="lock-put",
    ),
    pytest.param("UpdateItem", [["PutItem", "UpdateItem", "UpdateItem"]], id="completion"),
]
"""The write whose answer is lost, and the request sequences the call may send."""


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", AMBIGUOUS)
@pytest.mark.parametrize(("operation", "request_sequences"), AMBIGUOUS_WRITES)
async def test_an_ambiguous_write_runs_once(
    kind: FaultKind,
    operation: str,
    request_sequences: list[list[str]],
    fault_proxy: FaultProxy,
    place_order: PlaceOrder,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
) -> None:
    order = {"id": 7, "qty": 3}
    fault_proxy.inject(kind, operation=operation, forward=True)

    result = await place_order(order=order)

    assert result == {"order": 7, "total": 30}
    assert runs.count == 1
    assert fault_proxy.operations in request_sequences
    assert await completed_result(direct_store, key_of(place_order, order)) == result
    # A duplicate replays it: no second run.
    assert await place_order(order=order) == result
    assert runs.count == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", AMBIGUOUS)
async def test_ambiguous_release_after_failure(
    kind: FaultKind,
    fault_proxy: FaultProxy,
    faulty_store: AsyncDynamoStore,
    direct_store: AsyncDynamoStore,
) -> None:
    runs = BodyRuns()
    declined = order_function(faulty_store, runs, fail=True)
    fault_proxy.inject(kind, operation="DeleteItem", forward=True)

    with pytest.raises(ValueError, match="payment declined"):
        await declined(order={"id": 9, "qty": 1})

    assert runs.count == 1
    assert fault_proxy.operations == ["PutItem", "DeleteItem", "DeleteItem"]
    assert await stored(direct_store, key_of(declined, {"id": 9, "qty": 1})) is None
    # Released, not stuck: the next call runs at once.
    with pytest.raises(ValueError, match="payment declined"):
        await declined(order={"id": 9, "qty": 1})
    assert runs.count == 2


@pytest.mark.asyncio
async def test_release_ambiguous_on_every_attempt_reports_both_errors(
    fault_proxy: FaultProxy, faulty_store: AsyncDynamoStore, direct_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    declined = order_function(faulty_store, runs, fail=True)
    fault_proxy.inject(FaultKind.DROP_RESPONSE, operation="DeleteItem", times=ATTEMPTS)

    with pytest.raises(IdempotencyPersistenceLayerError) as caught:
        await declined(order={"id": 12, "qty": 1})

    assert isinstance(caught.value.function_error, ValueError)
    assert runs.count == 1
    assert fault_proxy.operations == ["PutItem"] + ["DeleteItem"] * ATTEMPTS
    # The first attempt did release it.
    assert await stored(direct_store, key_of(declined, {"id": 12, "qty": 1})) is None
