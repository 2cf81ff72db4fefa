"""Sustained faults in a replay-heavy service: refused conditions keep the retry quota full.

botocore's standard retry mode gives each client a retry quota (500 units; a retry
of a throttle or a 5xx takes 5) that only successful answers refill. Every
duplicate's refused put is an error answer to botocore (HTTP 400,
``ConditionalCheckFailedException``). When the retried attempt of a throttled
duplicate is refused, botocore gives nothing back, so a hundred such calls empty
the quota and every later throttle reaches the caller unretried. The store's
clients count a refusal as the success it is.
"""

from __future__ import annotations

import pytest
from botocore.retries.quota import RetryQuota

from faults.helpers import BodyRuns, PlaceOrder
from faults.proxy import FaultKind, FaultProxy

RETRY_COST = 5
"""What botocore's standard mode takes from the quota for retrying a throttle."""

DRAINING_CALLS = RetryQuota.INITIAL_CAPACITY // RETRY_COST
"""Throttled duplicates whose refused retries would empty the quota without the fix."""


@pytest.mark.asyncio
async def test_late_throttles_are_still_retried_after_many_refused_duplicates(
    fault_proxy: FaultProxy, place_order: PlaceOrder, runs: BodyRuns
) -> None:
    first = await place_order(order={"id": 1, "qty": 1})

    # Sustained faults: every duplicate meets a throttle or a 500 first, and its
    # retry is refused, since the record exists.
    faults = [FaultKind.THROTTLING, FaultKind.INTERNAL_ERROR]
    for call in range(DRAINING_CALLS):
        fault_proxy.inject(faults[call % 2], operation="PutItem")
        assert await place_order(order={"id": 1, "qty": 1}) == first
    assert runs.count == 1
    duplicates = fault_proxy.requests("PutItem")[1:]
    assert [r.fault for r in duplicates] == [faults[0], None, faults[1], None] * (
        DRAINING_CALLS // 2
    )

    # A late throttle, on a new order: retried, so the caller never sees it.
    fault_proxy.seen.clear()
    fault_proxy.inject(FaultKind.THROTTLING, operation="PutItem")
    assert await place_order(order={"id": 2, "qty": 1}) == {"order": 2, "total": 10}
    assert [r.fault for r in fault_proxy.requests("PutItem")] == [FaultKind.THROTTLING, None]
    assert runs.count == 2
