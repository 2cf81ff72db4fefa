"""What an idempotency record is: its status and fields. Pure.

How a record is stored lives beside it: attribute names and key shape in
``idemstore.table``, the item form in ``idemstore.codec``, the lock's rules in
``idemstore.lock_rules``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from idemstore.errors import InvalidRecordError


class RecordStatus(StrEnum):
    INPROGRESS = "INPROGRESS"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"  # derived from time; never stored


@dataclass(frozen=True, slots=True, kw_only=True)
class DataRecord:
    """One idempotency record, as stored.

    ``expiry_timestamp`` is epoch seconds (the table's TTL);
    ``in_progress_expiry_timestamp`` is epoch milliseconds, after which an
    INPROGRESS lock may be taken over. ``owner_token`` identifies the caller
    holding (or having completed) the lock, for fenced writes.

    An invalid field raises ``InvalidRecordError`` (a ``ValueError``); a status
    given as its text is stored as the ``RecordStatus`` member. Change a record
    with ``dataclasses.replace``, which validates the copy.
    """

    idempotency_key: str
    status: RecordStatus
    expiry_timestamp: int
    in_progress_expiry_timestamp: int | None = None
    response_data: str | None = None
    payload_hash: str | None = None
    owner_token: str | None = None

    def __post_init__(self) -> None:
        # Plain checks instead of a validation library: a record is built on every call.
        if not isinstance(self.idempotency_key, str) or not self.idempotency_key:
            raise InvalidRecordError(
                f"idempotency_key must be a non-empty string, not {self.idempotency_key!r}"
            )
        if type(self.status) is not RecordStatus:
            try:
                status = RecordStatus(self.status)
            except ValueError:
                raise InvalidRecordError(f"unknown status {self.status!r}") from None
            object.__setattr__(self, "status", status)  # frozen: set once, while building
        if self.status is RecordStatus.EXPIRED:
            raise InvalidRecordError("status EXPIRED is derived from time and never stored")
        _check_int("expiry_timestamp", self.expiry_timestamp, optional=False)
        _check_int("in_progress_expiry_timestamp", self.in_progress_expiry_timestamp, optional=True)
        for name in ("response_data", "payload_hash", "owner_token"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidRecordError(f"{name} must be a string or None, not {value!r}")

    def is_expired(self, now: float) -> bool:
        """Whether the record's TTL has passed at ``now`` (epoch seconds)."""
        return int(now) > self.expiry_timestamp

    def status_at(self, now: float) -> RecordStatus:
        return RecordStatus.EXPIRED if self.is_expired(now) else self.status

    def owned_by(self, token: str | None) -> bool:
        return token is not None and self.owner_token == token


def _check_int(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    # bool is an int subclass, but never a timestamp.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRecordError(f"{name} must be an integer, not {value!r}")
