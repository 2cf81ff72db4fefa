"""A store double that forwards every operation to a real store.

Subclasses override one operation to change what the engine hears, never what is stored.
"""

from collections.abc import Sequence

from idemstore import DataRecord, RecordStore, TableSchema


class DelegatingStore:
    """Forwards every operation to a real store; subclasses change what the engine hears."""

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner

    @property
    def schema(self) -> TableSchema:
        return self.inner.schema

    async def get_record(self, idempotency_key: str) -> DataRecord:
        return await self.inner.get_record(idempotency_key)

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]:
        return await self.inner.get_records(idempotency_keys)

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        await self.inner.put_record(record, now=now)

    async def update_record(self, record: DataRecord) -> None:
        await self.inner.update_record(record)

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        await self.inner.renew_lease(
            record, in_progress_expiry_timestamp=in_progress_expiry_timestamp
        )

    async def delete_record(self, record: DataRecord) -> None:
        await self.inner.delete_record(record)
