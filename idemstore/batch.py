"""Idempotent batch processing of SQS, Kinesis Data Streams and DynamoDB Streams events.

``from idemstore.batch import process_partial_response``; the implementation is
``idemstore.integrations.batch``. Not imported by ``import idemstore``: a
decorated call needs none of it.
"""

from idemstore.errors import IdempotencyBatchEventError
from idemstore.integrations.batch import (
    DEFAULT_MAX_CONCURRENCY,
    BatchProcessor,
    BatchResult,
    EventType,
    FifoFailureScope,
    Precheck,
    RecordResult,
    process_partial_response,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "BatchProcessor",
    "BatchResult",
    "EventType",
    "FifoFailureScope",
    "IdempotencyBatchEventError",
    "Precheck",
    "RecordResult",
    "process_partial_response",
]
