"""idemstore: async idempotency for Lambda handlers, async functions and HTTP endpoints.

What a decorated call needs is imported here; the stores and helpers that pull in
more (aiobotocore for ``AsyncDynamoStore`` and ``create_table``, redis for
``AsyncRedisStore``) are imported on first access, so code that never uses them
never pays for them.
"""

import importlib
from typing import TYPE_CHECKING, Any

from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine, IdempotencyWarning
from idemstore.errors import (
    ExpressionError,
    IdempotencyAlreadyInProgressError,
    IdempotencyBatchEventError,
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyError,
    IdempotencyInconsistentStateError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyItemTooLargeError,
    IdempotencyKeyError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyResponseTooLargeError,
    IdempotencySerializationError,
    IdempotencyStagingError,
    IdempotencyStoreClosedError,
    IdempotencyStoreUnreachableError,
    IdempotencyTableNotFoundError,
    IdempotencyTransactionCanceledError,
    IdempotencyTransactionLimitError,
    IdempotencyValidationError,
    InvalidRecordError,
)
from idemstore.idempotency import idempotent, idempotent_function
from idemstore.lambda_runtime import LambdaEntryPoint, lambda_entry_point, register_lambda_context
from idemstore.outcome import Outcome, OutcomeKind, Unstored
from idemstore.records import DataRecord, RecordStatus
from idemstore.serialization import (
    BaseIdempotencySerializer,
    DataclassSerializer,
    NoOpSerializer,
    PydanticSerializer,
)
from idemstore.stores.contract import RecordStore
from idemstore.table import TableSchema

if TYPE_CHECKING:  # imported on first access at run time: see __getattr__
    from idemstore.stores.dynamo import AsyncDynamoStore
    from idemstore.stores.memory import InMemoryStore
    from idemstore.stores.redis import AsyncRedisStore
    from idemstore.tables import create_table

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "AsyncDynamoStore": "idemstore.stores.dynamo",
    "AsyncRedisStore": "idemstore.stores.redis",
    "InMemoryStore": "idemstore.stores.memory",
    "create_table": "idemstore.tables",
}
"""Public names imported on first access, and the module each comes from."""

__all__ = [
    "AsyncDynamoStore",
    "AsyncRedisStore",
    "BaseIdempotencySerializer",
    "DataRecord",
    "DataclassSerializer",
    "ExpressionError",
    "IdempotencyAlreadyInProgressError",
    "IdempotencyBatchEventError",
    "IdempotencyConfig",
    "IdempotencyConfigurationError",
    "IdempotencyCorruptRecordError",
    "IdempotencyEngine",
    "IdempotencyError",
    "IdempotencyInconsistentStateError",
    "IdempotencyItemAlreadyExistsError",
    "IdempotencyItemNotFoundError",
    "IdempotencyItemTooLargeError",
    "IdempotencyKeyError",
    "IdempotencyLeaseLostError",
    "IdempotencyPersistenceLayerError",
    "IdempotencyResponseTooLargeError",
    "IdempotencySerializationError",
    "IdempotencyStagingError",
    "IdempotencyStoreClosedError",
    "IdempotencyStoreUnreachableError",
    "IdempotencyTableNotFoundError",
    "IdempotencyTransactionCanceledError",
    "IdempotencyTransactionLimitError",
    "IdempotencyValidationError",
    "IdempotencyWarning",
    "InMemoryStore",
    "InvalidRecordError",
    "LambdaEntryPoint",
    "NoOpSerializer",
    "Outcome",
    "OutcomeKind",
    "PydanticSerializer",
    "RecordStatus",
    "RecordStore",
    "TableSchema",
    "Unstored",
    "__version__",
    "create_table",
    "idempotent",
    "idempotent_function",
    "lambda_entry_point",
    "register_lambda_context",
]


if not TYPE_CHECKING:  # type checkers see the imports above, and flag unknown names

    def __getattr__(name: str) -> Any:
        module = _LAZY_EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # found directly from now on, without this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
