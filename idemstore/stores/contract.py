"""The record-store contract shared by ``AsyncDynamoStore`` and ``InMemoryStore``.

Every operation is one request to the backing table (``get_records``: one per
hundred keys). Semantics both stores keep:

- ``get_records`` reads many records at once, consistently: the records found,
  by key; missing keys are absent, duplicate keys read once. A record the
  backend left unread after bounded retries is absent too, so the caller falls
  back to its usual per-key path for it.

- ``put_record`` acquires the lock with the take-over rule
  (``TableSchema.acquire_condition``). When a live record exists it raises
  ``IdempotencyItemAlreadyExistsError`` carrying that record. When the record
  found is this very write (same owner token: a retried request whose first
  attempt was applied), it succeeds.
- ``update_record`` completes: fenced on INPROGRESS and the owner token. Finding
  our own COMPLETED record (a retried completion) is success.
- ``renew_lease`` moves the in-progress expiry, fenced like completion.
- ``delete_record`` releases: fenced on the owner token and on the status the
  record was read with, so releasing a lock never deletes the completed result
  of a completion whose answer was lost; a record already gone is success.
- Fenced writes that find the lock taken over raise ``IdempotencyLeaseLostError``
  carrying the record now in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol, TypeAlias, TypeGuard, runtime_checkable

from idemstore.errors import IdempotencyItemAlreadyExistsError, IdempotencyLeaseLostError
from idemstore.records import DataRecord, RecordStatus
from idemstore.table import TableSchema


@runtime_checkable
class RecordStore(Protocol):
    """What the idempotency engine needs from a store."""

    @property
    def schema(self) -> TableSchema: ...

    async def get_record(self, idempotency_key: str) -> DataRecord: ...

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]: ...

    async def put_record(self, record: DataRecord, *, now: float) -> None: ...

    async def update_record(self, record: DataRecord) -> None: ...

    async def renew_lease(
        self, record: DataRecord, *, in_progress_expiry_timestamp: int
    ) -> None: ...

    async def delete_record(self, record: DataRecord) -> None: ...


class Applied(Enum):
    """The write's condition held and the write was applied."""

    APPLIED = "applied"


APPLIED = Applied.APPLIED

WriteOutcome: TypeAlias = Applied | DataRecord | None
"""A conditional write's outcome: applied, or the record that failed the
condition (``None`` when there was none, or the server did not return it)."""


def fence_token(record: DataRecord) -> str:
    if record.owner_token is None:
        raise ValueError("a fenced write needs a record with an owner_token")
    return record.owner_token


def settle_put(record: DataRecord, outcome: WriteOutcome) -> None:
    """Interpret an acquire: ours (possibly by an earlier attempt), or someone else's."""
    if outcome is APPLIED:
        return
    if isinstance(outcome, DataRecord) and outcome.owned_by(record.owner_token):
        return  # a retried put whose first attempt was applied
    raise IdempotencyItemAlreadyExistsError(
        f"idempotency record {record.idempotency_key!r} already exists", old_data_record=outcome
    )


def is_own_completion(found: DataRecord | None, lock: DataRecord) -> TypeGuard[DataRecord]:
    """Whether ``found`` is the completed record of ``lock``'s owner: a completion of
    ours whose answers were lost, as a retry or a release finds it."""
    return (
        found is not None
        and found.owned_by(lock.owner_token)
        and found.status is RecordStatus.COMPLETED
    )


def settle_fenced(record: DataRecord, outcome: WriteOutcome, action: str) -> None:
    """Interpret a fenced write; our own completed record counts as a retried completion."""
    if outcome is APPLIED:
        return
    if (
        isinstance(outcome, DataRecord)
        and record.status is RecordStatus.COMPLETED
        and is_own_completion(outcome, record)
    ):
        return
    if outcome is None:
        state = "gone"
    elif outcome.owned_by(record.owner_token):
        state = f"already {outcome.status.value} by this owner"
    elif outcome.status is RecordStatus.COMPLETED:
        state = "completed by another caller"
    else:
        state = "held by another caller"
    raise IdempotencyLeaseLostError(
        f"cannot {action} idempotency record {record.idempotency_key!r}: the lock is {state}",
        idempotency_key=record.idempotency_key,
        current_record=outcome,
    )
