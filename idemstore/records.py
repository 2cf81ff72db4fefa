"""What an idempotency record is: its status and fields. Pure.

How a record is stored lives beside it: attribute names and key shape in
``idemstore.table``, the item form in ``idemstore.codec``, the lock's rules in
``idemstore.lock_rules``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RecordStatus(StrEnum):
    INPROGRESS = "INPROGRESS"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"  # derived from time; never stored


class DataRecord(BaseModel):
    """One idempotency record, as stored.

    ``expiry_timestamp`` is epoch seconds (the table's TTL);
    ``in_progress_expiry_timestamp`` is epoch milliseconds, after which an
    INPROGRESS lock may be taken over. ``owner_token`` identifies the caller
    holding (or having completed) the lock, for fenced writes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    idempotency_key: str = Field(min_length=1)
    status: RecordStatus
    expiry_timestamp: int
    in_progress_expiry_timestamp: int | None = None
    response_data: str | None = None
    payload_hash: str | None = None
    owner_token: str | None = None

    @model_validator(mode="after")
    def _stored_status(self) -> DataRecord:
        if self.status is RecordStatus.EXPIRED:
            raise ValueError("EXPIRED is derived from time and never stored")
        return self

    def is_expired(self, now: float) -> bool:
        """Whether the record's TTL has passed at ``now`` (epoch seconds)."""
        return int(now) > self.expiry_timestamp

    def status_at(self, now: float) -> RecordStatus:
        return RecordStatus.EXPIRED if self.is_expired(now) else self.status

    def owned_by(self, token: str | None) -> bool:
        return token is not None and self.owner_token == token
