"""Records for the store proofs, all taken at one fixed time ``NOW``."""

from dataclasses import replace
from typing import Any

from idemstore.records import DataRecord, RecordStatus

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)


def lock(token: str, *, key: str = "fn.mod.f#k1", **changes: Any) -> DataRecord:
    """An INPROGRESS record taken at NOW: live for an hour, lock held for a minute."""
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "status": RecordStatus.INPROGRESS,
        "expiry_timestamp": int(NOW) + 3600,
        "in_progress_expiry_timestamp": NOW_MS + 60_000,
        "payload_hash": "hash-1",
        "owner_token": token,
    }
    fields.update(changes)
    return DataRecord(**fields)


def completed(held: DataRecord, result: str = '{"ok": true}') -> DataRecord:
    return replace(held, status=RecordStatus.COMPLETED, response_data=result)
