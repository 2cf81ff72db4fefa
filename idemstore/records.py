"""Typed idempotency records and their DynamoDB item form.

The item layout is the one the Powertools idempotency utility reads and writes
(see DESIGN.md): the same attribute names, types and units. idemstore adds two
attributes of its own, ignored by Powertools: the lock owner's token, and a
zlib-compressed copy of large results in binary form.

Everything here is pure: times are passed in, never read.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyResponseTooLargeError,
)
from idemstore.expressions import (
    Action,
    Attr,
    AttributeValue,
    CompiledRequest,
    Condition,
    Operand,
    Param,
    PreparedRequest,
    Update,
    Value,
    evaluate,
    prepare,
    update,
)

DEFAULT_COMPRESS_THRESHOLD_BYTES = 32 * 1024
"""Results whose JSON text is longer than this are stored compressed."""
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's limit for one item."""
RESULT_LIMIT_BYTES = MAX_ITEM_BYTES - 8 * 1024
"""Room for the stored result, leaving the rest of the item (key, hashes, numbers)."""


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

    def lock_available(self, now: float) -> bool:
        """Whether an acquire at ``now`` would succeed over this record.

        Decided by the very condition the stores send, so the rule lives once.
        """
        schema = DEFAULT_SCHEMA
        # Only the attributes the rule reads: a large result is not re-encoded for it.
        lock = schema.lock_attributes(self)
        return evaluate(_prepared(schema).acquire_rule, lock, _acquire_params(now))

    def owned_by(self, token: str | None) -> bool:
        return token is not None and self.owner_token == token


class TableSchema(BaseModel):
    """Attribute names of the idempotency table and how records map to items.

    Defaults are the Powertools defaults. In sort-key mode the partition key
    holds ``static_pk_value`` and the sort key holds the idempotency key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_attr: str = Field(default="id", min_length=1)
    sort_key_attr: str | None = Field(default=None, min_length=1)
    static_pk_value: str = "idempotency#"
    expiry_attr: str = Field(default="expiration", min_length=1)
    in_progress_expiry_attr: str = Field(default="in_progress_expiration", min_length=1)
    status_attr: str = Field(default="status", min_length=1)
    data_attr: str = Field(default="data", min_length=1)
    validation_key_attr: str = Field(default="validation", min_length=1)
    owner_token_attr: str = Field(default="owner_token", min_length=1)
    compressed_data_attr: str = Field(default="data_zlib", min_length=1)
    compress_threshold_bytes: int = Field(default=DEFAULT_COMPRESS_THRESHOLD_BYTES, ge=0)

    # Requests sent on every call, compiled once for this schema (see _prepared).
    _prepared_requests: _PreparedRequests | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _distinct_names(self) -> TableSchema:
        if self.sort_key_attr is not None and self.sort_key_attr == self.key_attr:
            raise ValueError(
                f"key_attr [{self.key_attr}] and sort_key_attr [{self.sort_key_attr}] "
                "cannot be the same"
            )
        names = [
            self.key_attr,
            self.sort_key_attr,
            self.expiry_attr,
            self.in_progress_expiry_attr,
            self.status_attr,
            self.data_attr,
            self.validation_key_attr,
            self.owner_token_attr,
            self.compressed_data_attr,
        ]
        present = [n for n in names if n is not None]
        if len(set(present)) != len(present):
            raise ValueError(f"attribute names must be distinct: {present}")
        return self

    @classmethod
    def build(cls, **kwargs: Any) -> TableSchema:
        """Construct, turning validation failures into a configuration error."""
        from pydantic import ValidationError

        try:
            return cls(**kwargs)
        except ValidationError as exc:
            raise IdempotencyConfigurationError(str(exc)) from exc

    # --- keys and conditions --------------------------------------------------

    @property
    def record_key_attr(self) -> str:
        """The attribute holding the idempotency key itself."""
        return self.sort_key_attr or self.key_attr

    def key(self, idempotency_key: str) -> dict[str, AttributeValue]:
        """The primary key of the item for ``idempotency_key``."""
        if self.sort_key_attr is not None:
            return {
                self.key_attr: {"S": self.static_pk_value},
                self.sort_key_attr: {"S": idempotency_key},
            }
        return {self.key_attr: {"S": idempotency_key}}

    def acquire_condition(self, now: float) -> Condition:
        """The take-over rule: no record, an expired one, or a stale INPROGRESS lock.

        The same rule as the Powertools persistence layer, so both libraries
        respect each other's locks while a function is being migrated.
        """
        return self._acquire_rule(**_acquire_params(now))

    def _acquire_rule(self, now_s: Operand, now_ms: Operand) -> Condition:
        in_progress_expiry = Attr(self.in_progress_expiry_attr)
        return (
            Attr(self.key_attr).not_exists()
            | (Attr(self.expiry_attr) < now_s)
            | (
                (Attr(self.status_attr) == RecordStatus.INPROGRESS.value)
                & in_progress_expiry.exists()
                & (in_progress_expiry < now_ms)
            )
        )

    def acquire_request(self, now: float) -> CompiledRequest:
        """``compile_request(condition=self.acquire_condition(now))``, from a request
        compiled once per schema: the lock's put is sent on every call."""
        return _prepared(self).acquire.bind(**_acquire_params(now))

    def owned_in_progress(self, token: str) -> Condition:
        """Fence for completion and lease renewal: still INPROGRESS and still ours."""
        return self._owned_in_progress_rule(token)

    def _owned_in_progress_rule(self, token: Operand) -> Condition:
        return (Attr(self.status_attr) == RecordStatus.INPROGRESS.value) & (
            Attr(self.owner_token_attr) == token
        )

    def owned_or_gone(self, token: str, status: RecordStatus) -> Condition:
        """Fence for release: ours and still in ``status``, or already gone (a retried delete).

        The status keeps a release from deleting the result of a completion
        whose answer was lost: the engine releases an INPROGRESS lock only.
        """
        return Attr(self.key_attr).not_exists() | (
            (Attr(self.owner_token_attr) == token) & (Attr(self.status_attr) == status.value)
        )

    # --- updates -------------------------------------------------------------

    def completion_update(self, record: DataRecord) -> Update:
        """Turn the INPROGRESS item into ``record`` (COMPLETED) in place."""
        stored = {
            attr: raw
            for attr, value in self.data_attributes(record.response_data).items()
            for raw in value.values()
        }
        return self._completion_rule(
            record.status.value, record.expiry_timestamp, stored, record.payload_hash or None
        )

    def _completion_rule(
        self,
        status: Operand,
        expiry: Operand,
        stored: Mapping[str, Operand],
        payload_hash: Operand | None,
    ) -> Update:
        actions: list[Action] = [
            Attr(self.status_attr).set(status),
            Attr(self.expiry_attr).set(expiry),
        ]
        for attr in (self.data_attr, self.compressed_data_attr):
            actions.append(Attr(attr).set(stored[attr]) if attr in stored else Attr(attr).remove())
        if payload_hash is not None:
            actions.append(Attr(self.validation_key_attr).set(payload_hash))
        return update(*actions)

    def completion_request(self, record: DataRecord, token: str) -> CompiledRequest:
        """``compile_request(condition=self.owned_in_progress(token),
        update=self.completion_update(record))``, from a request compiled once per
        schema and shape (which data attribute, whether a payload hash)."""
        params: dict[str, Value] = {
            "token": token,
            "status": record.status.value,
            "expiry": record.expiry_timestamp,
        }
        stored = self.data_attributes(record.response_data)
        data_attr = next(iter(stored), None)  # at most one: plain or compressed
        if data_attr is not None:
            ((_, params["data"]),) = stored[data_attr].items()
        if record.payload_hash:
            params["payload_hash"] = record.payload_hash
        prepared = _prepared(self).completion(self, data_attr, bool(record.payload_hash))
        return prepared.bind(**params)

    def renewal_update(self, record: DataRecord, in_progress_expiry_timestamp: int) -> Update:
        """Move the lock's end; the record's expiry moves too if the lease would outlive it,
        since an expired record may be taken over whatever its lock says."""
        expiry = max(record.expiry_timestamp, in_progress_expiry_timestamp // 1000 + 1)
        return update(
            Attr(self.in_progress_expiry_attr).set(in_progress_expiry_timestamp),
            Attr(self.expiry_attr).set(expiry),
        )

    # --- item codec ----------------------------------------------------------

    def to_item(self, record: DataRecord) -> dict[str, AttributeValue]:
        """The DynamoDB item for a record, as Powertools would write it."""
        item = self.lock_attributes(record)
        item.update(self.data_attributes(record.response_data))
        if record.payload_hash:
            item[self.validation_key_attr] = {"S": record.payload_hash}
        if record.owner_token is not None:
            item[self.owner_token_attr] = {"S": record.owner_token}
        return item

    def lock_attributes(self, record: DataRecord) -> dict[str, AttributeValue]:
        """The part of the item the take-over rule reads: key, expiry, status, lock end."""
        item: dict[str, AttributeValue] = {
            **self.key(record.idempotency_key),
            self.expiry_attr: {"N": str(record.expiry_timestamp)},
            self.status_attr: {"S": record.status.value},
        }
        if record.in_progress_expiry_timestamp is not None:
            item[self.in_progress_expiry_attr] = {"N": str(record.in_progress_expiry_timestamp)}
        return item

    def data_attributes(self, response_data: str | None) -> dict[str, AttributeValue]:
        """The attribute holding a result: plain text, or compressed when large."""
        if response_data is None:
            return {}
        encoded = response_data.encode()
        if len(encoded) > self.compress_threshold_bytes:
            return {self.compressed_data_attr: {"B": zlib.compress(encoded, 6)}}
        return {self.data_attr: {"S": response_data}}

    def from_item(self, item: Mapping[str, Any]) -> DataRecord:
        """Read an item; a corrupt one raises ``IdempotencyCorruptRecordError``."""
        key = _optional_string(item, self.record_key_attr, None)
        if not key:  # an empty key would fail DataRecord's validation with a bare error
            raise IdempotencyCorruptRecordError(
                "missing key attribute", idempotency_key=None, attribute=self.record_key_attr
            )
        status_text = _required(item, self.status_attr, "S", key)
        try:
            status = RecordStatus(status_text)
        except ValueError:
            status = RecordStatus.EXPIRED  # rejected below with the same message
        if status is RecordStatus.EXPIRED:
            raise IdempotencyCorruptRecordError(
                f"unknown status {status_text!r}", idempotency_key=key, attribute=self.status_attr
            )
        response_data = _optional_string(item, self.data_attr, key)
        compressed = item.get(self.compressed_data_attr)
        if compressed is not None:
            response_data = _decompress(compressed, key, self.compressed_data_attr)
        return DataRecord(
            idempotency_key=key,
            status=status,
            expiry_timestamp=_number(item, self.expiry_attr, key, required=True),
            in_progress_expiry_timestamp=_number(
                item, self.in_progress_expiry_attr, key, required=False
            ),
            response_data=response_data,
            payload_hash=_optional_string(item, self.validation_key_attr, key),
            owner_token=_optional_string(item, self.owner_token_attr, key),
        )


def result_size_error(
    schema: TableSchema, key: str, response_data: str
) -> IdempotencyResponseTooLargeError | None:
    """An error when a result cannot fit in an item, even compressed."""
    encoded = response_data.encode()
    if len(encoded) <= RESULT_LIMIT_BYTES:
        return None
    compressed = len(zlib.compress(encoded, 6))
    if compressed <= RESULT_LIMIT_BYTES:
        return None
    return IdempotencyResponseTooLargeError(
        f"the result of {key!r} is {len(encoded)} bytes, {compressed} compressed; "
        f"an item holds at most {RESULT_LIMIT_BYTES} bytes of result",
        size_bytes=compressed,
        limit_bytes=RESULT_LIMIT_BYTES,
    )


def _required(item: Mapping[str, AttributeValue], attr: str, kind: str, key: str) -> Any:
    value = item.get(attr)
    if value is None:
        raise IdempotencyCorruptRecordError(
            "missing attribute", idempotency_key=key, attribute=attr
        )
    if not isinstance(value, Mapping) or kind not in value:
        raise IdempotencyCorruptRecordError(
            f"expected type {kind}, got {_kind(value)}", idempotency_key=key, attribute=attr
        )
    return value[kind]


def _kind(value: Any) -> str:
    if isinstance(value, Mapping) and len(value) == 1:
        return str(next(iter(value)))
    return type(value).__name__


def _optional_string(item: Mapping[str, AttributeValue], attr: str, key: str | None) -> str | None:
    value = item.get(attr)
    if value is None or (isinstance(value, Mapping) and value.get("NULL") is True):
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("S"), str):
        raise IdempotencyCorruptRecordError(
            f"expected type S, got {_kind(value)}", idempotency_key=key, attribute=attr
        )
    text: str = value["S"]
    return text


def _number(
    item: Mapping[str, AttributeValue], attr: str, key: str, *, required: bool
) -> int | None:
    if attr not in item and not required:
        return None
    raw = _required(item, attr, "N", key)
    if type(raw) is str:
        try:
            return int(raw)  # integer text, as written: what Decimal would give, sooner
        except ValueError:
            pass
    try:
        number = Decimal(raw)
    except (InvalidOperation, TypeError):
        raise IdempotencyCorruptRecordError(
            f"not a number: {raw!r}", idempotency_key=key, attribute=attr
        ) from None
    if not number.is_finite():
        raise IdempotencyCorruptRecordError(
            f"not a finite number: {raw!r}", idempotency_key=key, attribute=attr
        )
    return int(number)


def _decompress(value: Any, key: str, attr: str) -> str:
    if not isinstance(value, Mapping) or not isinstance(value.get("B"), bytes | bytearray):
        raise IdempotencyCorruptRecordError(
            f"expected type B, got {_kind(value)}", idempotency_key=key, attribute=attr
        )
    try:
        return zlib.decompress(value["B"]).decode()
    except (zlib.error, UnicodeDecodeError) as exc:
        raise IdempotencyCorruptRecordError(
            f"compressed result unreadable: {exc}", idempotency_key=key, attribute=attr
        ) from exc


def _acquire_params(now: float) -> dict[str, Value]:
    """The acquire rule's times: epoch seconds for the record, milliseconds for the lock."""
    return {"now_s": int(now), "now_ms": int(now * 1000)}


class _PreparedRequests:
    """A schema's requests sent on every call, compiled once (see ``expressions.prepare``)."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.acquire_rule = schema._acquire_rule(Param("now_s"), Param("now_ms"))
        self.acquire = prepare(condition=self.acquire_rule)
        self._completions: dict[tuple[str | None, bool], PreparedRequest] = {}

    def completion(
        self, schema: TableSchema, data_attr: str | None, hashed: bool
    ) -> PreparedRequest:
        prepared = self._completions.get((data_attr, hashed))
        if prepared is None:
            completion_update = schema._completion_rule(
                Param("status"),
                Param("expiry"),
                {data_attr: Param("data")} if data_attr else {},
                Param("payload_hash") if hashed else None,
            )
            prepared = prepare(
                condition=schema._owned_in_progress_rule(Param("token")), update=completion_update
            )
            self._completions[(data_attr, hashed)] = prepared
        return prepared


def _prepared(schema: TableSchema) -> _PreparedRequests:
    """The schema's prepared requests, made on first use and kept on the schema itself."""
    # Read from pydantic's documented store of private attributes: reaching a private
    # attribute by name goes through BaseModel.__getattr__, slower than the rest of this.
    private = schema.__pydantic_private__ or {}
    prepared: _PreparedRequests | None = private.get("_prepared_requests")
    # A copy of a schema carries its original's requests along: make its own.
    if prepared is None or prepared.schema is not schema:
        prepared = schema._prepared_requests = _PreparedRequests(schema)
    return prepared


DEFAULT_SCHEMA = TableSchema()
