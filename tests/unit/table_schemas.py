"""Table schemas for the record and request proofs."""

from typing import Any

RENAMED_ATTRIBUTES: dict[str, Any] = {
    "key_attr": "pk",
    "in_progress_expiry_attr": "lock_until",
    "status_attr": "state",
    "data_attr": "result",
    "validation_key_attr": "hash",
    "owner_token_attr": "owner",
    "compressed_data_attr": "result_z",
}
"""Every attribute but the expiry and the sort key under a name of its own, not the default."""
