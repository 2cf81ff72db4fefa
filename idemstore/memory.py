"""``InMemoryStore``: the record-store contract without DynamoDB.

Items are kept in DynamoDB's typed form and every condition and update is
applied with ``idemstore.expressions``, so this store follows exactly the rules
``AsyncDynamoStore`` sends to DynamoDB. For tests, demos and local runs; it is
process-local and holds nothing across restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from idemstore.errors import IdempotencyItemNotFoundError
from idemstore.expressions import AttributeValue, Condition, Update, apply_update, evaluate
from idemstore.persistence import (
    APPLIED,
    WriteOutcome,
    fence_token,
    settle_fenced,
    settle_put,
)
from idemstore.records import DataRecord, TableSchema


class InMemoryStore:
    """A dict of items behind a lock; safe for concurrent tasks and threads."""

    def __init__(self, schema: TableSchema | None = None) -> None:
        self._schema = schema or TableSchema()
        self._items: dict[str, dict[str, AttributeValue]] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """Operations served, for tests that count round trips."""

    @property
    def schema(self) -> TableSchema:
        return self._schema

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self._items)} records)"

    def items(self) -> dict[str, dict[str, AttributeValue]]:
        """A snapshot of the stored items, by idempotency key."""
        with self._lock:
            return {key: dict(item) for key, item in self._items.items()}

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    async def aclose(self) -> None:
        """Nothing to close; present so both stores can be closed alike."""

    async def get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            self.requests += 1
            item = self._items.get(idempotency_key)
        if item is None:
            raise IdempotencyItemNotFoundError(idempotency_key)
        return self._schema.from_item(item)

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]:
        """The records found, by key; missing keys are absent. One operation."""
        with self._lock:
            self.requests += 1
            found = {key: self._items[key] for key in idempotency_keys if key in self._items}
        return {key: self._schema.from_item(item) for key, item in found.items()}

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        outcome = self._write(
            record.idempotency_key,
            self._schema.acquire_condition(now),
            new_item=self._schema.to_item(record),
        )
        settle_put(record, outcome)

    async def update_record(self, record: DataRecord) -> None:
        outcome = self._write(
            record.idempotency_key,
            self._schema.owned_in_progress(fence_token(record)),
            update=self._schema.completion_update(record),
        )
        settle_fenced(record, outcome, "complete")

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        outcome = self._write(
            record.idempotency_key,
            self._schema.owned_in_progress(fence_token(record)),
            update=self._schema.renewal_update(record, in_progress_expiry_timestamp),
        )
        settle_fenced(record, outcome, "renew the lease of")

    async def delete_record(self, record: DataRecord) -> None:
        outcome = self._write(
            record.idempotency_key,
            self._schema.owned_or_gone(fence_token(record), record.status),
            delete=True,
        )
        settle_fenced(record, outcome, "release")

    def _write(
        self,
        key: str,
        condition: Condition,
        *,
        new_item: dict[str, AttributeValue] | None = None,
        update: Update | None = None,
        delete: bool = False,
    ) -> WriteOutcome:
        """Apply one conditional write atomically, as DynamoDB does."""
        with self._lock:
            self.requests += 1
            current = self._items.get(key)
            if not evaluate(condition, current):
                return self._schema.from_item(current) if current is not None else None
            if delete:
                self._items.pop(key, None)
            elif new_item is not None:
                self._items[key] = new_item
            elif update is not None and current is not None:
                self._items[key] = apply_update(update, current)
            return APPLIED
