"""``InMemoryStore``: the record-store contract without DynamoDB.

Items are kept in DynamoDB's typed form and every condition and update is
applied with ``idemstore.expressions``, so this store follows exactly the rules
``AsyncDynamoStore`` sends to DynamoDB. For tests, demos and local runs; it is
process-local and holds nothing across restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from idemstore.codec import from_item, to_item
from idemstore.errors import IdempotencyItemNotFoundError
from idemstore.expressions import AttributeValue, Condition, Update, apply_update, evaluate
from idemstore.lock_rules import (
    acquire_condition,
    completion_update,
    owned_in_progress,
    owned_or_gone,
    renewal_update,
)
from idemstore.records import DataRecord
from idemstore.stores.contract import (
    APPLIED,
    WriteOutcome,
    fence_token,
    settle_fenced,
    settle_put,
)
from idemstore.table import TableSchema


class InMemoryStore:
    """A dict of items behind a lock; safe for concurrent tasks and threads."""

    def __init__(self, schema: TableSchema | None = None) -> None:
        self._schema = schema or TableSchema()
        self._items: dict[str, dict[str, AttributeValue]] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """Operations served, for tests that count round trips."""
        self._observers: list[Callable[[str], None]] = []

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call ``observer`` with the DynamoDB name of each operation served
        (``PutItem``, ``UpdateItem``, ``DeleteItem``, ``GetItem``), as
        ``idemstore.loopback.RequestLog`` does for a DynamoDB client."""
        self._observers.append(observer)

    def _served(self, operation: str) -> None:
        self.requests += 1
        for observer in self._observers:
            observer(operation)

    @property
    def schema(self) -> TableSchema:
        return self._schema

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self._items)} records)"

    def items(self) -> dict[str, dict[str, AttributeValue]]:
        """A snapshot of the stored items, by idempotency key."""
        with self._lock:
            return {key: dict(item) for key, item in self._items.items()}

    def connection(self) -> InMemoryStore:
        """Another store over the same records, as another process's client reaches the
        same table: it shares the records, and counts and reports only its own operations."""
        other = InMemoryStore(self._schema)
        other._items = self._items
        other._lock = self._lock
        return other

    def overwrite(self, record: DataRecord) -> None:
        """Write a record unconditionally, as another caller taking a lock over would
        (for tests of take-overs and fencing; the engine never does this)."""
        with self._lock:
            self._items[record.idempotency_key] = to_item(self._schema, record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    async def aclose(self) -> None:
        """Nothing to close; present so both stores can be closed alike."""

    async def get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            self._served("GetItem")
            item = self._items.get(idempotency_key)
        if item is None:
            raise IdempotencyItemNotFoundError(idempotency_key)
        return from_item(self._schema, item)

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]:
        """The records found, by key; missing keys are absent. One operation."""
        with self._lock:
            self._served("BatchGetItem")
            found = {key: self._items[key] for key in idempotency_keys if key in self._items}
        return {key: from_item(self._schema, item) for key, item in found.items()}

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        outcome = self._write(
            "PutItem",
            record.idempotency_key,
            acquire_condition(self._schema, now),
            new_item=to_item(self._schema, record),
        )
        settle_put(record, outcome)

    async def update_record(self, record: DataRecord) -> None:
        outcome = self._write(
            "UpdateItem",
            record.idempotency_key,
            owned_in_progress(self._schema, fence_token(record)),
            update=completion_update(self._schema, record),
        )
        settle_fenced(record, outcome, "complete")

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        outcome = self._write(
            "UpdateItem",
            record.idempotency_key,
            owned_in_progress(self._schema, fence_token(record)),
            update=renewal_update(self._schema, record, in_progress_expiry_timestamp),
        )
        settle_fenced(record, outcome, "renew the lease of")

    async def delete_record(self, record: DataRecord) -> None:
        outcome = self._write(
            "DeleteItem",
            record.idempotency_key,
            owned_or_gone(self._schema, fence_token(record), record.status),
            delete=True,
        )
        settle_fenced(record, outcome, "release")

    def _write(
        self,
        operation: str,
        key: str,
        condition: Condition,
        *,
        new_item: dict[str, AttributeValue] | None = None,
        update: Update | None = None,
        delete: bool = False,
    ) -> WriteOutcome:
        """Apply one conditional write atomically, as DynamoDB does."""
        with self._lock:
            self._served(operation)
            current = self._items.get(key)
            if not evaluate(condition, current):
                return from_item(self._schema, current) if current is not None else None
            if delete:
                self._items.pop(key, None)
            elif new_item is not None:
                self._items[key] = new_item
            elif update is not None and current is not None:
                self._items[key] = apply_update(update, current)
            return APPLIED
