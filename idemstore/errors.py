"""The idemstore exception tree.

Every error the library raises on purpose derives from one root, so callers can
catch ``IdempotencyError`` alone. Names shared with the Powertools idempotency
utility keep their meaning, so migrating is a change of import::

    IdempotencyError
    ├── IdempotencyConfigurationError        bad configuration, found at construction
    ├── ExpressionError                      an expression DynamoDB would reject
    ├── InvalidRecordError                   a DataRecord built with an invalid field
    ├── IdempotencyKeyError                  no idempotency key in the payload
    ├── IdempotencyBatchEventError           a batch event without its records' identifiers
    ├── IdempotencyValidationError           same key, different validated payload
    ├── IdempotencyAlreadyInProgressError    another caller holds the lock
    ├── IdempotencyItemAlreadyExistsError    conditional put lost; carries old_data_record
    ├── IdempotencyItemNotFoundError         no record for the key
    ├── IdempotencyLeaseLostError            our lock was taken over; carries the current record
    ├── IdempotencyInconsistentStateError    the record kept changing under us; retries exhausted
    ├── IdempotencyStoreClosedError          the store was closed; it is never reopened
    ├── IdempotencyStagingError              stage() where no transaction can commit the writes
    ├── IdempotencyTransactionLimitError     staged writes DynamoDB would refuse in one transaction
    ├── IdempotencyTransactionCanceledError  a staged write's condition failed; nothing applied
    ├── IdempotencySerializationError        a result cannot be stored or read back
    │   └── IdempotencyResponseTooLargeError result too large for one item, even compressed
    └── IdempotencyPersistenceLayerError     DynamoDB failed; the cause is chained
        ├── IdempotencyTableNotFoundError    table missing (names table and endpoint)
        ├── IdempotencyStoreUnreachableError no attempt reached DynamoDB: nothing written
        ├── IdempotencyItemTooLargeError     DynamoDB refused the item size
        └── IdempotencyCorruptRecordError    an item that is not a valid record

``IdempotencyConfigurationError``, ``ExpressionError``, ``InvalidRecordError``,
``IdempotencyBatchEventError`` and ``IdempotencyTransactionLimitError`` also derive
from ``ValueError`` so code that validates arguments generically still catches them.

An error the engine raises after the function returned (its completion failed,
its lease was lost, its result could not be stored) says so: ``function_ran``
is True and ``result`` holds what the function returned, so a caller can still
deliver it instead of running the function again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from idemstore.records import DataRecord
    from idemstore.transactions import CancellationReason, StagedWrite


class IdempotencyError(Exception):
    """Root of every error idemstore raises on purpose.

    ``function_ran`` is True when the error came after the function returned;
    ``result`` is then what it returned. Both keep their class defaults (False,
    None) on errors raised before the function ran or because it raised.
    """

    function_ran: bool = False
    result: Any = None


class IdempotencyConfigurationError(IdempotencyError, ValueError):
    """A configuration value is invalid; raised when the configuration is built."""


class ExpressionError(IdempotencyError, ValueError):
    """An expression DynamoDB would reject: when built (overlapping update paths, a
    malformed operand) or when applied to an item (an operand of the wrong type)."""


class InvalidRecordError(IdempotencyError, ValueError):
    """A ``DataRecord`` built with an invalid field: an empty key, an unknown or derived
    status, a timestamp that is not an integer. Names the field."""


class IdempotencyKeyError(IdempotencyError):
    """The payload holds no idempotency key and ``raise_on_no_idempotency_key`` is on."""


class IdempotencyBatchEventError(IdempotencyError, ValueError):
    """A batch event that cannot be processed: no ``Records`` list, or a record without
    the identifier its event source reports failures by. Raised before any record runs."""


class IdempotencyValidationError(IdempotencyError):
    """A duplicate request's validated payload differs from the stored record's."""

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class IdempotencyAlreadyInProgressError(IdempotencyError):
    """Another caller holds the lock for this idempotency key."""

    def __init__(self, message: str, *, old_data_record: DataRecord | None = None) -> None:
        super().__init__(message)
        self.old_data_record = old_data_record


class IdempotencyItemAlreadyExistsError(IdempotencyError):
    """The conditional acquire failed because a live record exists.

    ``old_data_record`` is the record found, or ``None`` when the server did not
    return it with the failed write.
    """

    def __init__(self, *args: Any, old_data_record: DataRecord | None = None) -> None:
        super().__init__(*args)
        self.old_data_record = old_data_record


class IdempotencyItemNotFoundError(IdempotencyError):
    """No record exists for the idempotency key."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(f"no idempotency record for key {idempotency_key!r}")
        self.idempotency_key = idempotency_key


class IdempotencyLeaseLostError(IdempotencyError):
    """A fenced write failed: the lock is no longer ours.

    ``current_record`` is the record now in the table (``None`` when it is gone);
    ``result`` is the value the late finisher computed, so it is not lost.
    """

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str,
        current_record: DataRecord | None = None,
        result: Any = None,
    ) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.current_record = current_record
        self.result = result


class IdempotencyStagingError(IdempotencyError):
    """``stage()`` was called where no transaction can commit the writes: outside an
    idempotent call, or with a store that cannot commit them (the Redis store)."""


class IdempotencyTransactionLimitError(IdempotencyError, ValueError):
    """Staged writes DynamoDB would refuse in one transaction, found before sending.

    ``limit`` names the rule: ``items`` (more than 100 actions, the completion
    included), ``same_item`` (two actions on one item), ``bytes`` (over 4 MB in
    all), or ``own_record`` (a write to the call's own idempotency record);
    ``index`` is the offending staged write's position, when there is one.
    """

    def __init__(self, message: str, *, limit: str, index: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.index = index


class IdempotencyTransactionCanceledError(IdempotencyError):
    """The transaction of the completion and the staged writes was cancelled: nothing
    applied, and the lock was released, so a retry runs the function again.

    ``reasons`` are aligned with ``writes`` (the staged writes, in the order staged):
    each says whether that write failed and why, with the item its condition was
    checked against when the server returned it. ``failed`` lists the positions of
    the writes that failed. ``result`` is the value the function returned.
    """

    def __init__(
        self,
        message: str,
        *,
        writes: Sequence[StagedWrite],
        reasons: Sequence[CancellationReason],
        result: Any = None,
    ) -> None:
        super().__init__(message)
        self.writes = tuple(writes)
        self.reasons = tuple(reasons)
        self.result = result

    @property
    def failed(self) -> list[int]:
        return [number for number, reason in enumerate(self.reasons) if reason.failed]


class IdempotencyInconsistentStateError(IdempotencyError):
    """The record kept changing between attempts (races or clock skew); bounded retries ran out."""


class IdempotencyStoreClosedError(IdempotencyError):
    """The store was used after ``aclose()``; a closed store does not open a new client."""


class IdempotencySerializationError(IdempotencyError):
    """A function result cannot be serialized for storage, or a stored one read back."""


class IdempotencyResponseTooLargeError(IdempotencySerializationError):
    """The result does not fit in one DynamoDB item, even compressed."""

    def __init__(self, message: str, *, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(message)
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class IdempotencyPersistenceLayerError(IdempotencyError):
    """The store failed; the underlying error is chained as ``__cause__``.

    When releasing a lock failed after the function itself raised, both are
    kept: ``function_error`` is the function's exception.
    """

    def __init__(self, message: str, *, function_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.function_error = function_error


class IdempotencyTableNotFoundError(IdempotencyPersistenceLayerError):
    """The DynamoDB table does not exist where the store looked for it."""

    def __init__(
        self, table_name: str, *, region_name: str | None, endpoint_url: str | None
    ) -> None:
        where = endpoint_url or f"region {region_name}"
        super().__init__(f"DynamoDB table {table_name!r} not found at {where}")
        self.table_name = table_name
        self.region_name = region_name
        self.endpoint_url = endpoint_url


class IdempotencyStoreUnreachableError(IdempotencyPersistenceLayerError):
    """No attempt of a request reached DynamoDB, so nothing was written.

    Every attempt failed before a byte of the request was sent: the connection
    was refused, the host name did not resolve, or connecting timed out.
    ``endpoint_url`` is where the store tried to connect.
    """

    def __init__(self, message: str, *, endpoint_url: str | None) -> None:
        super().__init__(message)
        self.endpoint_url = endpoint_url


class IdempotencyItemTooLargeError(IdempotencyPersistenceLayerError):
    """DynamoDB refused to store the item because of its size."""

    def __init__(self, message: str, *, idempotency_key: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class IdempotencyCorruptRecordError(IdempotencyPersistenceLayerError):
    """An item in the table cannot be read as an idempotency record."""

    def __init__(self, message: str, *, idempotency_key: str | None, attribute: str) -> None:
        super().__init__(
            f"corrupt idempotency record {idempotency_key!r}: {message} ({attribute!r})"
        )
        self.idempotency_key = idempotency_key
        self.attribute = attribute
