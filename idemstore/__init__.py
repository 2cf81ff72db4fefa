"""idemstore: async idempotency for Lambda handlers, async functions and HTTP endpoints."""

from typing import TYPE_CHECKING, Any

from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine, IdempotencyWarning
from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
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
    IdempotencyTableNotFoundError,
    IdempotencyValidationError,
)
from idemstore.idempotency import idempotent, idempotent_function
from idemstore.lambda_runtime import LambdaEntryPoint, lambda_entry_point, register_lambda_context
from idemstore.records import DataRecord, RecordStatus
from idemstore.serialization import (
    BaseIdempotencySerializer,
    DataclassSerializer,
    NoOpSerializer,
    PydanticSerializer,
)
from idemstore.stores.contract import RecordStore
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore
from idemstore.table import TableSchema
from idemstore.tables import create_table

if TYPE_CHECKING:
    from idemstore.stores.redis import AsyncRedisStore

__version__ = "0.1.0"

__all__ = [
    "AsyncDynamoStore",
    "AsyncRedisStore",
    "BaseIdempotencySerializer",
    "DataRecord",
    "DataclassSerializer",
    "IdempotencyAlreadyInProgressError",
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
    "IdempotencyTableNotFoundError",
    "IdempotencyValidationError",
    "IdempotencyWarning",
    "InMemoryStore",
    "LambdaEntryPoint",
    "NoOpSerializer",
    "PydanticSerializer",
    "RecordStatus",
    "RecordStore",
    "TableSchema",
    "__version__",
    "create_table",
    "idempotent",
    "idempotent_function",
    "lambda_entry_point",
    "register_lambda_context",
]


def __getattr__(name: str) -> Any:
    # Optional stores load on first use: ``import idemstore`` never imports redis.
    if name == "AsyncRedisStore":
        from idemstore.stores.redis import AsyncRedisStore

        return AsyncRedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
