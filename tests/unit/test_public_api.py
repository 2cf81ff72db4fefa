"""The public API is exactly this list: adding or removing a name is a deliberate change."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

import idemstore

EXPECTED_ALL = [
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


def test_all_is_the_pinned_list() -> None:
    assert idemstore.__all__ == EXPECTED_ALL


def test_every_public_name_resolves() -> None:
    missing = [name for name in idemstore.__all__ if not hasattr(idemstore, name)]
    assert missing == []


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from idemstore import *", namespace)  # star import is the behaviour under test
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(EXPECTED_ALL)


def test_public_errors_share_one_root() -> None:
    errors = [name for name in EXPECTED_ALL if name.endswith("Error")]
    assert errors
    assert all(issubclass(getattr(idemstore, name), idemstore.IdempotencyError) for name in errors)


def test_version_matches_the_package_metadata() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", idemstore.__version__)
    assert idemstore.__version__ == importlib.metadata.version("idemstore")


def test_import_loads_no_optional_client() -> None:
    # A fresh interpreter: this process may have imported redis already.
    code = (
        "import sys, idemstore; "
        "optional = ('redis', 'valkey', 'idemstore.stores.redis'); "
        "print(sorted(m for m in optional if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_the_redis_store_is_exported_lazily() -> None:
    from idemstore.stores.redis import AsyncRedisStore

    assert idemstore.AsyncRedisStore is AsyncRedisStore


def test_lazily_exported_names_are_the_defining_modules_objects() -> None:
    from idemstore.stores.dynamo import AsyncDynamoStore
    from idemstore.stores.memory import InMemoryStore
    from idemstore.tables import create_table

    assert idemstore.AsyncDynamoStore is AsyncDynamoStore
    assert idemstore.InMemoryStore is InMemoryStore
    assert idemstore.create_table is create_table


def test_dir_lists_every_public_name() -> None:
    assert set(EXPECTED_ALL) <= set(dir(idemstore))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'AsyncDynamoStor'"):
        _ = idemstore.AsyncDynamoStor  # type: ignore[attr-defined]  # the misspelling under test
