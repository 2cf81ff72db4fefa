"""``InMemoryStore``: the record-store contract without DynamoDB.

Items are kept in DynamoDB's typed form and every condition and update is
applied with ``idemstore.expressions``, so this store follows exactly the rules
``AsyncDynamoStore`` sends to DynamoDB. For tests, demos and local runs; it is
process-local and holds nothing across restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from idemstore.codec import from_item, to_item
from idemstore.errors import (
    ExpressionError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyTransactionLimitError,
)
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
from idemstore.transactions import (
    CONDITION_FAILED,
    CancellationReason,
    ConditionCheck,
    Delete,
    Put,
    StagedWrite,
    settle_transaction,
)

ItemKey = tuple[tuple[str, str, Any], ...]
"""An item's key attributes, comparable: numbers by value, as DynamoDB compares them."""


_CONDITION_MESSAGE = "The conditional request failed"
_APPLIES = CancellationReason(None)


class MemoryTable:
    """One in-memory table for staged writes: items by their key attributes."""

    def __init__(self, name: str, key_names: tuple[str, ...]) -> None:
        self.name = name
        self.key_names = key_names
        self.items: dict[ItemKey, dict[str, AttributeValue]] = {}

    def key_of(self, attrs: Mapping[str, AttributeValue], what: str) -> ItemKey:
        if what == "key" and set(attrs) != set(self.key_names):
            raise IdempotencyPersistenceLayerError(
                f"the key {sorted(attrs)} does not match table {self.name!r}'s key "
                f"{list(self.key_names)}"
            )
        parts = []
        for name in self.key_names:
            value = attrs.get(name)
            if value is None:
                raise IdempotencyPersistenceLayerError(
                    f"the {what} for table {self.name!r} lacks key attribute {name!r}"
                )
            ((kind, raw),) = value.items()
            parts.append((name, kind, Decimal(raw) if kind == "N" else raw))
        return tuple(parts)


class InMemoryStore:
    """A dict of items behind a lock; safe for concurrent tasks and threads."""

    def __init__(
        self, schema: TableSchema | None = None, *, table_name: str = "idempotency"
    ) -> None:
        self._schema = schema or TableSchema()
        self.table_name = table_name
        """The idempotency table's name, as staged writes would name it."""
        self._items: dict[str, dict[str, AttributeValue]] = {}
        self._tables: dict[str, MemoryTable] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """Operations served, for tests that count round trips."""
        self._observers: list[Callable[[str], None]] = []

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call ``observer`` with the DynamoDB name of each operation served
        (``PutItem``, ``UpdateItem``, ``DeleteItem``, ``GetItem``, ``TransactWriteItems``), as
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
        other = InMemoryStore(self._schema, table_name=self.table_name)
        other._items = self._items
        other._tables = self._tables
        other._lock = self._lock
        return other

    def overwrite(self, record: DataRecord) -> None:
        """Write a record unconditionally, as another caller taking a lock over would
        (for tests of take-overs and fencing; the engine never does this)."""
        with self._lock:
            self._items[record.idempotency_key] = to_item(self._schema, record)

    def create_table(self, name: str, partition_key: str, sort_key: str | None = None) -> None:
        """Make an in-memory table that staged writes may name (as DynamoDB, writes to a
        table that does not exist fail); its items are keyed by these attributes."""
        if not name or name == self.table_name:
            raise ValueError(f"cannot create a table named {name!r} beside the records")
        keys = (partition_key,) if sort_key is None else (partition_key, sort_key)
        with self._lock:
            self._tables.setdefault(name, MemoryTable(name, keys))

    def table_items(self, name: str) -> list[dict[str, AttributeValue]]:
        """A snapshot of an in-memory table's items, in DynamoDB's typed form."""
        with self._lock:
            return [dict(item) for item in self._table(name).items.values()]

    def _table(self, name: str) -> MemoryTable:
        table = self._tables.get(name)
        if table is None:
            raise IdempotencyPersistenceLayerError(
                f"no in-memory table {name!r}: create it with InMemoryStore.create_table"
            )
        return table

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

    async def complete_with_writes(
        self, record: DataRecord | None, writes: Sequence[StagedWrite]
    ) -> None:
        """Complete ``record`` and apply ``writes`` atomically, all or nothing, as one
        ``TransactWriteItems`` would (see ``idemstore.transactions.TransactionalStore``)."""
        reasons: list[CancellationReason] = []
        current: DataRecord | None = None
        with self._lock:
            self._served("TransactWriteItems")
            changes: list[Callable[[], object]] = []
            if record is not None:
                key = record.idempotency_key
                found = self._items.get(key)
                fence = owned_in_progress(self._schema, fence_token(record))
                if evaluate(fence, found):
                    assert found is not None  # the fence requires the item
                    done = apply_update(completion_update(self._schema, record), found)
                    changes.append(partial(self._items.__setitem__, key, done))
                    reasons.append(_APPLIES)
                else:
                    current = from_item(self._schema, found) if found is not None else None
                    reasons.append(CancellationReason(CONDITION_FAILED, _CONDITION_MESSAGE, found))
            targets: set[tuple[str, ItemKey]] = set()
            for write in writes:
                reason, change = self._plan(write, targets)
                reasons.append(reason)
                if change is not None:
                    changes.append(change)
            if all(not reason.failed for reason in reasons):
                for change in changes:
                    change()
                return
        settle_transaction(record, writes, reasons, current)

    def _plan(
        self, write: StagedWrite, targets: set[tuple[str, ItemKey]]
    ) -> tuple[CancellationReason, Callable[[], object] | None]:
        """Check one staged write against its table; the change it would make if all pass."""
        table = self._table(write.table)
        if isinstance(write, Put):
            key = table.key_of(write.encoded, "item")
        else:
            key = table.key_of(write.encoded_key, "key")
        if (write.table, key) in targets:
            raise IdempotencyTransactionLimitError(
                f"two staged writes act on one item of {write.table!r}; "
                "a DynamoDB transaction allows one action per item",
                limit="same_item",
            )
        targets.add((write.table, key))
        found = table.items.get(key)
        if write.condition is not None and not evaluate(write.condition, found):
            item = dict(found) if found is not None else None
            return CancellationReason(CONDITION_FAILED, _CONDITION_MESSAGE, item), None
        items = table.items
        if isinstance(write, Put):
            return _APPLIES, partial(items.__setitem__, key, dict(write.encoded))
        if isinstance(write, Delete):
            return _APPLIES, partial(items.pop, key, None)
        if isinstance(write, ConditionCheck):
            return _APPLIES, None
        # An update of a missing item starts from its key, as DynamoDB's does.
        start = found if found is not None else dict(write.encoded_key)
        try:
            updated = apply_update(write.expression, start)
        except ExpressionError as exc:  # DynamoDB cancels the transaction for it
            return CancellationReason("ValidationError", str(exc)), None
        return _APPLIES, partial(items.__setitem__, key, updated)

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
