"""The item codec: a record to its DynamoDB item and back. Pure.

The item layout is the one the Powertools idempotency utility reads and writes
(see DESIGN.md): the same attribute names, types and units. idemstore adds two
attributes of its own, ignored by Powertools: the lock owner's token, and a
zlib-compressed copy, in binary form, of a result too large for the item as
text. The compression policy and the size limit of a stored result live here.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, overload

from idemstore.errors import IdempotencyCorruptRecordError, IdempotencyResponseTooLargeError
from idemstore.expressions import AttributeValue
from idemstore.records import DataRecord, RecordStatus

if TYPE_CHECKING:
    from idemstore.table import TableSchema

DEFAULT_COMPRESS_THRESHOLD_BYTES: int | None = None
"""None: a result is stored compressed only when its item would not fit otherwise,
so every record Powertools could have written stays readable by Powertools."""
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's limit for one item: attribute names and values together."""
RESULT_LIMIT_BYTES = MAX_ITEM_BYTES - 8 * 1024
"""Room for the stored result, leaving the rest of the item (key, hashes, numbers)."""


def to_item(schema: TableSchema, record: DataRecord) -> dict[str, AttributeValue]:
    """The DynamoDB item for a record, as Powertools would write it."""
    item = _item_without_data(schema, record)
    item.update(data_attributes(schema, record))
    return item


def _item_without_data(schema: TableSchema, record: DataRecord) -> dict[str, AttributeValue]:
    item = lock_attributes(schema, record)
    if record.payload_hash:
        item[schema.validation_key_attr] = {"S": record.payload_hash}
    if record.owner_token is not None:
        item[schema.owner_token_attr] = {"S": record.owner_token}
    return item


def lock_attributes(schema: TableSchema, record: DataRecord) -> dict[str, AttributeValue]:
    """The part of the item the take-over rule reads: key, expiry, status, lock end."""
    item: dict[str, AttributeValue] = {
        **schema.key(record.idempotency_key),
        schema.expiry_attr: {"N": str(record.expiry_timestamp)},
        schema.status_attr: {"S": record.status.value},
    }
    if record.in_progress_expiry_timestamp is not None:
        item[schema.in_progress_expiry_attr] = {"N": str(record.in_progress_expiry_timestamp)}
    return item


def data_attributes(schema: TableSchema, record: DataRecord) -> dict[str, AttributeValue]:
    """The attribute holding the record's result: JSON text, as Powertools stores and
    reads it, or compressed when the item would not fit in DynamoDB otherwise (or the
    text is over an explicit ``compress_threshold_bytes``).

    The item is sized as the completed record's: a completion sets the result on
    the lock's item, whose other attributes are the record's.
    """
    response_data = record.response_data
    if response_data is None:
        return {}
    encoded = response_data.encode()
    threshold = schema.compress_threshold_bytes
    if (threshold is not None and len(encoded) > threshold) or (
        not _surely_fits(schema, record, len(encoded))
        and item_bytes(_item_without_data(schema, record))
        + len(schema.data_attr.encode())
        + len(encoded)
        > MAX_ITEM_BYTES
    ):
        return {schema.compressed_data_attr: {"B": zlib.compress(encoded, 6)}}
    return {schema.data_attr: {"S": response_data}}


def _surely_fits(schema: TableSchema, record: DataRecord, data_bytes: int) -> bool:
    """A bound from string lengths alone (4 UTF-8 bytes a character at most, numbers
    of 40 digits), so the usual small result skips sizing the whole item."""
    record_chars = (
        len(record.idempotency_key) + len(record.payload_hash or "") + len(record.owner_token or "")
    )
    return data_bytes + 4 * (record_chars + _schema_chars(schema)) + 2 * 40 <= MAX_ITEM_BYTES


def _schema_chars(schema: TableSchema) -> int:
    """Characters of the schema's names, partition value and longest status; computed
    once per schema and kept on it, as lock_rules keeps its prepared requests."""
    bound = schema._size_bound
    if bound is None or bound[0] is not schema:
        chars = sum(
            len(text or "")
            for text in (
                schema.key_attr,
                schema.sort_key_attr,
                schema.static_pk_value,
                schema.expiry_attr,
                schema.in_progress_expiry_attr,
                schema.status_attr,
                schema.data_attr,
                schema.validation_key_attr,
                schema.owner_token_attr,
            )
        ) + max(len(status.value) for status in RecordStatus)
        bound = (schema, chars)
        object.__setattr__(schema, "_size_bound", bound)  # a cache, not an option
    return bound[1]


def item_bytes(item: Mapping[str, AttributeValue]) -> int:
    """An item's size as DynamoDB counts it against its limit: attribute names and
    string values in UTF-8, binary values in bytes; a number counted as its text,
    never less than DynamoDB's count (a byte per two digits, plus one)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        for raw in value.values():
            size += len(raw) if isinstance(raw, bytes) else len(str(raw).encode())
    return size


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


def from_item(schema: TableSchema, item: Mapping[str, Any]) -> DataRecord:
    """Read an item; a corrupt one raises ``IdempotencyCorruptRecordError``."""
    key = _optional_string(item, schema.record_key_attr, None)
    if not key:  # an empty key would fail DataRecord's validation with a bare error
        raise IdempotencyCorruptRecordError(
            "missing key attribute", idempotency_key=None, attribute=schema.record_key_attr
        )
    status_text = _required(item, schema.status_attr, "S", key)
    try:
        status = RecordStatus(status_text)
    except ValueError:
        status = RecordStatus.EXPIRED  # rejected below with the same message
    if status is RecordStatus.EXPIRED:
        raise IdempotencyCorruptRecordError(
            f"unknown status {status_text!r}", idempotency_key=key, attribute=schema.status_attr
        )
    response_data = _optional_string(item, schema.data_attr, key)
    compressed = item.get(schema.compressed_data_attr)
    if compressed is not None:
        response_data = _decompress(compressed, key, schema.compressed_data_attr)
    return DataRecord(
        idempotency_key=key,
        status=status,
        expiry_timestamp=_number(item, schema.expiry_attr, key, required=True),
        in_progress_expiry_timestamp=_number(
            item, schema.in_progress_expiry_attr, key, required=False
        ),
        response_data=response_data,
        payload_hash=_optional_string(item, schema.validation_key_attr, key),
        owner_token=_optional_string(item, schema.owner_token_attr, key),
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


@overload
def _number(
    item: Mapping[str, AttributeValue], attr: str, key: str, *, required: Literal[True]
) -> int: ...
@overload
def _number(
    item: Mapping[str, AttributeValue], attr: str, key: str, *, required: bool
) -> int | None: ...
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
