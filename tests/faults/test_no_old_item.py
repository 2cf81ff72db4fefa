"""A server that ignores ``ReturnValuesOnConditionCheckFailure``: failed conditions come
back without the old item, and the store falls back to one consistent read, so every
caller (the engine included) judges the record now stored.
"""

from __future__ import annotations

import pytest

from faults.helpers import BodyRuns, PlaceOrder, key_of, status_of
from faults.proxy import FaultKind, FaultProxy
from idemstore import IdempotencyAlreadyInProgressError, RecordStatus
from idemstore.stores.dynamo import AsyncDynamoStore


@pytest.mark.asyncio
async def test_a_duplicate_replays_after_one_fallback_read(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns
) -> None:
    fault_proxy.inject(FaultKind.NO_OLD_ITEM, times=None)
    assert await place_order(order={"id": 1, "qty": 2}) == {"order": 1, "total": 20}
    fault_proxy.seen.clear()

    assert await place_order(order={"id": 1, "qty": 2}) == {"order": 1, "total": 20}

    assert runs.count == 1
    assert fault_proxy.operations == ["PutItem", "GetItem"]


@pytest.mark.asyncio
async def test_an_ambiguous_lock_put_is_recognised_by_the_fallback_read(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns, direct_store: AsyncDynamoStore
) -> None:
    order = {"id": 2, "qty": 1}
    fault_proxy.inject(FaultKind.DROP_RESPONSE, operation="PutItem", forward=True)
    fault_proxy.inject(FaultKind.NO_OLD_ITEM, times=None)

    assert await place_order(order=order) == {"order": 2, "total": 10}

    assert runs.count == 1
    assert fault_proxy.operations == ["PutItem", "PutItem", "GetItem", "UpdateItem"]
    assert await status_of(direct_store, key_of(place_order, order)) is RecordStatus.COMPLETED


@pytest.mark.asyncio
async def test_an_ambiguous_completion_is_recognised_without_the_old_item(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns, direct_store: AsyncDynamoStore
) -> None:
    order = {"id": 3, "qty": 1}
    fault_proxy.inject(FaultKind.DROP_RESPONSE, operation="UpdateItem")
    fault_proxy.inject(FaultKind.NO_OLD_ITEM, times=None)

    assert await place_order(order=order) == {"order": 3, "total": 10}

    assert runs.count == 1
    assert await status_of(direct_store, key_of(place_order, order)) is RecordStatus.COMPLETED
    assert await place_order(order=order) == {"order": 3, "total": 10}
    assert runs.count == 1


@pytest.mark.asyncio
async def test_a_duplicate_of_a_running_call_is_told_so(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns, direct_store: AsyncDynamoStore
) -> None:
    fault_proxy.inject(FaultKind.NO_OLD_ITEM, times=None)
    key = key_of(place_order, {"id": 4, "qty": 1})
    client = await direct_store.client()
    await client.put_item(
        TableName=direct_store.table_name,
        Item={
            "id": {"S": key},
            "status": {"S": "INPROGRESS"},
            "expiration": {"N": "9999999999"},
            "in_progress_expiration": {"N": "9999999999000"},
            "owner_token": {"S": "someone-else"},
        },
    )

    with pytest.raises(IdempotencyAlreadyInProgressError) as caught:
        await place_order(order={"id": 4, "qty": 1})

    assert caught.value.old_data_record is not None
    assert caught.value.old_data_record.owner_token == "someone-else"
    assert runs.count == 0
    assert fault_proxy.operations == ["PutItem", "GetItem"]
