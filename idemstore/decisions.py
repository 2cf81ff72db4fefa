"""What to do about a record found where we wanted to take the lock. Pure."""

from __future__ import annotations

from enum import Enum

from idemstore.lock_rules import lock_available
from idemstore.records import DataRecord, RecordStatus


class Decision(Enum):
    RETRY_ACQUIRE = "retry_acquire"
    """Expired record or stale lock (a race, or clock skew): try the acquire again."""
    REPLAY = "replay"
    """A completed result for this payload: give it back."""
    IN_PROGRESS = "in_progress"
    """Another caller holds a live lock: raise, or wait and replay."""
    PAYLOAD_MISMATCH = "payload_mismatch"
    """Same key, different validated payload."""


def payload_mismatch(record: DataRecord, payload_hash: str | None) -> bool:
    """Whether a record was made for another payload; never when validation is off (None)."""
    return payload_hash is not None and record.payload_hash != payload_hash


def decide(record: DataRecord, *, now: float, payload_hash: str | None) -> Decision:
    """Decide from a found record; ``payload_hash`` is None when validation is off."""
    if lock_available(record, now):
        return Decision.RETRY_ACQUIRE
    if payload_mismatch(record, payload_hash):
        return Decision.PAYLOAD_MISMATCH
    if record.status is RecordStatus.COMPLETED:
        return Decision.REPLAY
    return Decision.IN_PROGRESS
