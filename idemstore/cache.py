"""A small LRU of completed records, for replays with no request at all."""

from __future__ import annotations

from collections import OrderedDict

from idemstore.records import DataRecord, RecordStatus


class LocalCache:
    """Completed records by key, at most ``max_items``, dropped once expired."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._records: OrderedDict[str, DataRecord] = OrderedDict()

    def get(self, key: str, *, now: float) -> DataRecord | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.is_expired(now):
            del self._records[key]
            return None
        self._records.move_to_end(key)
        return record

    def put(self, record: DataRecord) -> None:
        if record.status is not RecordStatus.COMPLETED:
            return  # an in-progress record can change elsewhere at any moment
        self._records[record.idempotency_key] = record
        self._records.move_to_end(record.idempotency_key)
        while len(self._records) > self.max_items:
            self._records.popitem(last=False)

    def __len__(self) -> int:
        return len(self._records)
