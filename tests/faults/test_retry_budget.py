"""Faults against botocore's retry budget: shorter bursts succeed, longer ones fail typed.

The store's client here makes at most ATTEMPTS attempts per request. A burst of
RETRIES faults is absorbed; a burst of ATTEMPTS faults surfaces as an
``IdempotencyPersistenceLayerError`` (the botocore error chained), and no lock
outlives the failure: it is released at once, or at worst lapses with its lease.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from faults.helpers import (
    ATTEMPTS,
    RETRIES,
    BodyRuns,
    PlaceOrder,
    key_of,
    order_function,
    status_of,
    stored,
    until_lock_ends,
)
from faults.proxy import FaultKind, FaultProxy
from idemstore import (
    IdempotencyConfig,
    IdempotencyPersistenceLayerError,
    RecordStatus,
)
from idemstore.stores.dynamo import AsyncDynamoStore

NOT_APPLIED = [
    pytest.param(FaultKind.THROUGHPUT_EXCEEDED, "ProvisionedThroughputExceededException", id="pte"),
    pytest.param(FaultKind.THROTTLING, "ThrottlingException", id="throttling"),
    pytest.param(FaultKind.INTERNAL_ERROR, "InternalServerError", id="500"),
    pytest.param(FaultKind.SERVICE_UNAVAILABLE, "ServiceUnavailableException", id="503"),
    pytest.param(FaultKind.DROP_REQUEST, "ConnectionClosedError", id="reset-before-forwarding"),
]
"""Faults whose request is not applied: the server's error answers, and a connection
closed before the request is forwarded; with the error botocore reports for each."""


def botocore_error(error: BaseException) -> str:
    """The chained botocore error: a ClientError's code, or any other one's class name."""
    cause = error.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code"))
    assert isinstance(cause, BotoCoreError), f"the botocore error is chained, got {cause!r}"
    return type(cause).__name__


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "code"), NOT_APPLIED)
@pytest.mark.parametrize("operation", ["PutItem", "UpdateItem"])
async def test_burst_within_the_retry_budget_succeeds(
    kind: FaultKind,
    code: str,
    operation: str,
    fault_proxy: FaultProxy,
    place_order: PlaceOrder,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
) -> None:
    fault_proxy.inject(kind, operation=operation, times=RETRIES)

    assert await place_order(order={"id": 1, "qty": 4}) == {"order": 1, "total": 40}

    assert runs.count == 1
    assert fault_proxy.operations.count(operation) == ATTEMPTS
    assert [r.fault for r in fault_proxy.requests(operation)] == [kind] * RETRIES + [None]
    assert await status_of(direct_store, key_of(place_order, {"id": 1, "qty": 4})) is (
        RecordStatus.COMPLETED
    )


BURSTS_BEYOND_THE_BUDGET = [
    pytest.param("PutItem", 0, ["PutItem"] * ATTEMPTS + ["DeleteItem"], id="lock-runs-nothing"),
    pytest.param(
        "UpdateItem",
        1,
        ["PutItem"] + ["UpdateItem"] * ATTEMPTS + ["DeleteItem"],
        id="completion-releases-the-lock",
    ),
]
"""The faulted operation, the body runs it lets happen, and the requests sent."""


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "code"), NOT_APPLIED)
@pytest.mark.parametrize(("operation", "runs_before", "operations"), BURSTS_BEYOND_THE_BUDGET)
async def test_burst_beyond_the_budget_fails_typed_and_leaves_no_lock(
    kind: FaultKind,
    code: str,
    operation: str,
    runs_before: int,
    operations: list[str],
    fault_proxy: FaultProxy,
    place_order: PlaceOrder,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
) -> None:
    fault_proxy.inject(kind, operation=operation, times=ATTEMPTS)

    with pytest.raises(IdempotencyPersistenceLayerError) as caught:
        await place_order(order={"id": 2, "qty": 1})

    assert botocore_error(caught.value) == code
    assert runs.count == runs_before
    assert fault_proxy.operations == operations
    assert await stored(direct_store, key_of(place_order, {"id": 2, "qty": 1})) is None
    # The burst is over, and the caller was told the call failed: the next call runs.
    assert await place_order(order={"id": 2, "qty": 1}) == {"order": 2, "total": 10}
    assert runs.count == runs_before + 1


@pytest.mark.asyncio
async def test_outage_during_completion_and_release_lasts_only_the_lease(
    fault_proxy: FaultProxy, faulty_store: AsyncDynamoStore, direct_store: AsyncDynamoStore
) -> None:
    runs = BodyRuns()
    lease = 0.5
    config = IdempotencyConfig(in_progress_lease_seconds=lease)
    place_order = order_function(faulty_store, runs, config=config)
    fault_proxy.inject(FaultKind.SERVICE_UNAVAILABLE, operation="UpdateItem", times=None)
    fault_proxy.inject(FaultKind.SERVICE_UNAVAILABLE, operation="DeleteItem", times=None)

    with pytest.raises(IdempotencyPersistenceLayerError) as caught:
        await place_order(order={"id": 4, "qty": 1})

    assert isinstance(caught.value.__cause__, IdempotencyPersistenceLayerError)
    assert runs.count == 1
    key = key_of(place_order, {"id": 4, "qty": 1})
    stuck = await stored(direct_store, key)
    assert stuck is not None
    assert stuck.status is RecordStatus.INPROGRESS
    assert stuck.in_progress_expiry_timestamp is not None
    # The outage ends; the lock lapses with its lease and nothing longer.
    fault_proxy.clear_faults()
    await until_lock_ends(stuck)
    assert await place_order(order={"id": 4, "qty": 1}) == {"order": 4, "total": 10}
    assert runs.count == 2
    assert await status_of(direct_store, key) is RecordStatus.COMPLETED


@pytest.mark.asyncio
async def test_lock_put_ambiguous_on_every_attempt_leaves_no_lock(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns, direct_store: AsyncDynamoStore
) -> None:
    fault_proxy.inject(FaultKind.DROP_RESPONSE, operation="PutItem", times=ATTEMPTS)

    with pytest.raises(IdempotencyPersistenceLayerError) as caught:
        await place_order(order={"id": 10, "qty": 1})

    assert "PutItem" in str(caught.value)
    assert runs.count == 0
    # The first attempt took the lock; the store gave up not knowing. The engine
    # releases it (fenced on its own token) instead of leaving it for the lease.
    assert fault_proxy.operations == ["PutItem"] * ATTEMPTS + ["DeleteItem"]
    assert await stored(direct_store, key_of(place_order, {"id": 10, "qty": 1})) is None
    assert await place_order(order={"id": 10, "qty": 1}) == {"order": 10, "total": 10}
    assert runs.count == 1


RIDDEN_OUT = [
    pytest.param(
        [(FaultKind.DROP_RESPONSE, "UpdateItem", ATTEMPTS)],
        # The first attempt stored the result; the release that follows the failed
        # completion finds our own COMPLETED record and must neither delete it nor fail.
        ["PutItem"] + ["UpdateItem"] * ATTEMPTS + ["DeleteItem"],
        id="completion-ambiguous-on-every-attempt",
    ),
    pytest.param(
        [
            (FaultKind.DROP_REQUEST, "PutItem", RETRIES),
            (FaultKind.DROP_REQUEST, "UpdateItem", RETRIES),
        ],
        ["PutItem"] * ATTEMPTS + ["UpdateItem"] * ATTEMPTS,
        id="connections-reset-before-forwarding",
    ),
]
"""Faults armed as (kind, operation, times) that the call survives, and the requests sent."""


@pytest.mark.asyncio
@pytest.mark.parametrize(("faults", "requests_sent"), RIDDEN_OUT)
async def test_a_call_riding_out_its_faults_runs_once_and_is_stored(
    faults: list[tuple[FaultKind, str, int]],
    requests_sent: list[str],
    fault_proxy: FaultProxy,
    place_order: PlaceOrder,
    runs: BodyRuns,
    direct_store: AsyncDynamoStore,
) -> None:
    order = {"id": 11, "qty": 2}
    for kind, operation, times in faults:
        fault_proxy.inject(kind, operation=operation, times=times)

    result = await place_order(order=order)

    assert result == {"order": 11, "total": 20}
    assert runs.count == 1
    assert fault_proxy.operations == requests_sent
    assert await status_of(direct_store, key_of(place_order, order)) is RecordStatus.COMPLETED
    assert await place_order(order=order) == result
    assert runs.count == 1
