"""idemstore: async idempotency for Lambda handlers, async functions and HTTP endpoints."""

from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyError,
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
from idemstore.memory import InMemoryStore
from idemstore.persistence import RecordStore
from idemstore.records import DataRecord, RecordStatus, TableSchema
from idemstore.store import AsyncDynamoStore
from idemstore.tables import create_table

__version__ = "0.1.0"

__all__ = [
    "AsyncDynamoStore",
    "DataRecord",
    "IdempotencyAlreadyInProgressError",
    "IdempotencyConfigurationError",
    "IdempotencyCorruptRecordError",
    "IdempotencyError",
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
    "InMemoryStore",
    "RecordStatus",
    "RecordStore",
    "TableSchema",
    "__version__",
    "create_table",
]
