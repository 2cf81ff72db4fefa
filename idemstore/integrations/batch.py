"""Idempotent batches of Lambda event sources: SQS, Kinesis Data Streams, DynamoDB Streams.

Each record runs under the engine, keyed by ``config.event_key_jmespath`` applied
to the record; the answer is Lambda's partial-batch response, naming the records
that failed by the identifier their event source expects::

    records --> identifiers (all, before anything runs)
            --> identities (engine.identify, per record)
            --> redelivered? one batch read: completed records replay, no write
            --> lanes: SQS standard one record each, concurrently;
                       SQS FIFO one per message group, in order;
                       streams one for the batch, in order
            --> per record: a key already run in this batch? take its outcome
                            else engine.execute (lock, run, complete)
            --> {"batchItemFailures": [...]}

Within a lane a failure stops the lane: the records after it are reported
failed without running, so the source redelivers them in order. The policy of
what a record's outcome is stays in the engine; this module only groups,
orders and reports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine, disabled_by_environment
from idemstore.errors import (
    IdempotencyBatchEventError,
    IdempotencyConfigurationError,
    IdempotencyError,
)
from idemstore.idempotency import _engine as build_engine
from idemstore.lambda_runtime import current_lambda_context, lambda_context_scope
from idemstore.observe import BatchPrecheck, emit, store_kind
from idemstore.outcome import CallIdentity, Outcome, OutcomeKind
from idemstore.records import DataRecord
from idemstore.serialization import BaseIdempotencySerializer
from idemstore.stores.contract import RecordStore

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "BatchProcessor",
    "BatchResult",
    "EventType",
    "FifoFailureScope",
    "Precheck",
    "RecordResult",
    "process_partial_response",
]

logger = logging.getLogger("idemstore")

EventType = Literal["SQS", "KinesisDataStreams", "DynamoDBStreams"]
"""The event sources, named as Powertools' ``EventType`` names them."""

Precheck = Literal["on_redelivery", "always", "never"]
"""When to read every record's key at once before acquiring: when an SQS record was
received before (``ApproximateReceiveCount`` > 1), on every batch, or never."""

FifoFailureScope = Literal["group", "batch"]
"""What a failure in a FIFO queue's batch stops: the rest of its message group (the
other groups go on), or the rest of the batch (run in order, as Powertools does)."""

RecordHandler = Callable[[Any], Awaitable[Any]]

DEFAULT_MAX_CONCURRENCY = 10
"""Records run at once: an SQS event source's default batch size."""

_IDENTIFIER_PATHS: dict[str, tuple[str, ...]] = {
    "SQS": ("messageId",),
    "KinesisDataStreams": ("kinesis", "sequenceNumber"),
    "DynamoDBStreams": ("dynamodb", "SequenceNumber"),
}


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What became of one record: its outcome, or the error that failed it.

    ``skipped`` records did not run: an earlier record of their message group
    (FIFO) or stream failed, and they must be redelivered after it.
    """

    record: Any
    identifier: str
    outcome: Outcome[Any] | None = None
    error: Exception | None = None
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Every record's result, in the batch's order."""

    results: tuple[RecordResult, ...]
    batch_read: bool
    """Whether the records were read at once before acquiring (and the read succeeded)."""

    @property
    def failures(self) -> tuple[RecordResult, ...]:
        return tuple(result for result in self.results if result.failed)

    def response(self) -> dict[str, list[dict[str, str]]]:
        """Lambda's partial-batch response (``ReportBatchItemFailures``)."""
        return {
            "batchItemFailures": [{"itemIdentifier": result.identifier} for result in self.failures]
        }


class BatchProcessor:
    """Processes batches of one event source with one record handler, idempotently.

    Build it once (at module scope) and call ``process`` per invocation: it holds
    the handler's engine, whose keys are those ``idempotent_function`` derives
    for the same handler (same prefix, the record as payload), so a handler can
    move between the two. A handler already decorated with
    ``idempotent_function`` brings its own engine (and store and config): it is
    used, and the undecorated function runs under it.
    """

    def __init__(
        self,
        record_handler: RecordHandler,
        *,
        persistence_store: RecordStore | None = None,
        config: IdempotencyConfig | None = None,
        event_type: EventType = "SQS",
        key_prefix: str | None = None,
        output_serializer: BaseIdempotencySerializer | type[Any] | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        precheck: Precheck = "on_redelivery",
        fifo_failure_scope: FifoFailureScope = "group",
    ) -> None:
        # Powertools' EventType enum is accepted too: its values are these names.
        event_type = getattr(event_type, "value", event_type)
        _require_choice("event_type", event_type, EventType)
        _require_choice("precheck", precheck, Precheck)
        _require_choice("fifo_failure_scope", fifo_failure_scope, FifoFailureScope)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise IdempotencyConfigurationError("max_concurrency must be an int")
        if max_concurrency < 1:
            raise IdempotencyConfigurationError(
                f"max_concurrency must be at least 1, not {max_concurrency}"
            )
        if not callable(record_handler):
            raise IdempotencyConfigurationError("record_handler must be an async function")
        self.engine, self.handler = _engine_and_call(
            record_handler, persistence_store, config, key_prefix, output_serializer
        )
        if not self.engine.config.event_key_jmespath:
            raise IdempotencyConfigurationError(
                "batch processing needs config.event_key_jmespath (e.g. 'messageId' or "
                "'powertools_json(body).order_id'): a key over the whole record would "
                "include attributes that change on every delivery (ApproximateReceiveCount), "
                "so a redelivered record would run again"
            )
        self.event_type: EventType = event_type
        self.max_concurrency = max_concurrency
        self.precheck: Precheck = precheck
        self.fifo_failure_scope: FifoFailureScope = fifo_failure_scope

    @property
    def store(self) -> RecordStore:
        return self.engine.store

    async def process(self, event: Any, context: Any = None) -> BatchResult:
        """Run every record of ``event``; ``context`` is the Lambda context (its deadline
        bounds each record's lock)."""
        records = _records_of(event)
        raw_records = [_raw_record(record, index) for index, record in enumerate(records)]
        identifiers = [
            _identifier(raw, self.event_type, index) for index, raw in enumerate(raw_records)
        ]
        if context is None:  # inside an idempotent handler: the context it registered
            context = current_lambda_context()
        with lambda_context_scope(context):
            run = _BatchRun(self, records, raw_records, identifiers, context)
            return await run.run()

    async def process_partial_response(
        self, event: Any, context: Any = None
    ) -> dict[str, list[dict[str, str]]]:
        """``process``, answered as Lambda's partial-batch response."""
        result = await self.process(event, context)
        return result.response()

    def wants_batch_read(self, raw_records: Sequence[Mapping[str, Any]]) -> bool:
        if self.precheck == "never":
            return False
        if self.precheck == "always":
            return True
        return self.event_type == "SQS" and any(_receive_count(r) > 1 for r in raw_records)

    def lanes(self, raw_records: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """Record indexes in the runs that go in order, one record at a time."""
        count = len(raw_records)
        if self.event_type != "SQS":
            return [list(range(count))]  # a stream's shard: checkpoint order
        if not any(_is_fifo(record) for record in raw_records):
            return [[index] for index in range(count)]
        if self.fifo_failure_scope == "batch":
            return [list(range(count))]
        groups: dict[Any, list[int]] = {}
        for index, record in enumerate(raw_records):
            groups.setdefault(_message_group(record), []).append(index)
        return list(groups.values())


class _BatchRun:
    """One invocation's batch: its identities, what the batch read settled, and the
    keys already running, so a key is run once per batch."""

    def __init__(
        self,
        processor: BatchProcessor,
        records: Sequence[Any],
        raw_records: Sequence[Mapping[str, Any]],
        identifiers: Sequence[str],
        context: Any,
    ) -> None:
        self.processor = processor
        self.engine = processor.engine
        self.records = records
        self.raw_records = raw_records
        self.identifiers = identifiers
        self.context = context
        self.results: list[RecordResult | None] = [None] * len(records)
        self.settled: dict[int, Outcome[Any] | Exception] = {}
        self.leaders: dict[str, asyncio.Event] = {}
        self.led: dict[str, RecordResult] = {}
        self.slots = asyncio.Semaphore(processor.max_concurrency)
        self.disabled = disabled_by_environment()

    async def run(self) -> BatchResult:
        identities = [self._identity(index) for index in range(len(self.records))]
        batch_read = (
            not self.disabled
            and self.processor.wants_batch_read(self.raw_records)
            and any(isinstance(identity, CallIdentity) for identity in identities)
            and await self._read_all(identities)
        )
        lanes = self.processor.lanes(self.raw_records)
        await asyncio.gather(*(self._run_lane(lane, identities) for lane in lanes))
        results = tuple(result for result in self.results if result is not None)
        assert len(results) == len(self.records)  # every lane fills each of its records
        return BatchResult(results, batch_read)

    def _identity(self, index: int) -> CallIdentity | Exception | None:
        if self.disabled:
            return None
        try:
            return self.engine.identify(self.raw_records[index])
        except IdempotencyError as exc:
            return exc

    async def _read_all(self, identities: Sequence[CallIdentity | Exception | None]) -> bool:
        """One read for every key; completed records replay without a write. Whether
        the read was made."""
        keys = [i.key for i in identities if isinstance(i, CallIdentity)]
        # A store written against the contract before it had get_records still works.
        read_many = getattr(self.engine.store, "get_records", None)
        if read_many is None:
            return False
        try:
            found: dict[str, DataRecord] = await read_many(keys)
        except IdempotencyError as exc:
            # Only a shortcut: every record still has its usual path.
            logger.warning("reading the batch's records at once failed: %s", exc)
            return False
        for index, identity in enumerate(identities):
            if not isinstance(identity, CallIdentity) or identity.key not in found:
                continue
            try:
                outcome = self.engine.settle_found(identity, found[identity.key])
            except IdempotencyError as exc:  # a payload mismatch
                self.settled[index] = exc
                continue
            if outcome is not None:
                self.settled[index] = outcome
        hits = sum(1 for settled in self.settled.values() if not isinstance(settled, Exception))
        emit(
            BatchPrecheck(
                self.engine.key_prefix, store_kind(self.engine.store), hits, len(keys) - hits
            )
        )
        return True

    async def _run_lane(
        self, lane: Sequence[int], identities: Sequence[CallIdentity | Exception | None]
    ) -> None:
        for position, index in enumerate(lane):
            result = await self._run_record(index, identities[index])
            self.results[index] = result
            if result.failed:
                for later in lane[position + 1 :]:
                    self.results[later] = RecordResult(
                        self.records[later], self.identifiers[later], skipped=True
                    )
                return

    async def _run_record(
        self, index: int, identity: CallIdentity | Exception | None
    ) -> RecordResult:
        if isinstance(identity, Exception):
            return self._failed(index, identity)
        settled = self.settled.get(index)
        if isinstance(settled, Exception):
            return self._failed(index, settled)
        if settled is not None:
            return RecordResult(self.records[index], self.identifiers[index], settled)
        if identity is None:
            return await self._execute(index, None)
        leader = self.leaders.get(identity.key)
        if leader is None:
            return await self._lead(index, identity)
        await leader.wait()
        led = self.led.get(identity.key)
        followed = self._follow(index, identity, led) if led is not None else None
        # Nothing to take from the first (it was cancelled, or its record lapsed): run.
        return followed if followed is not None else await self._execute(index, identity)

    async def _lead(self, index: int, identity: CallIdentity) -> RecordResult:
        """Run the batch's first record of a key; later ones take its outcome."""
        done = self.leaders[identity.key] = asyncio.Event()
        try:
            result = await self._execute(index, identity)
            self.led[identity.key] = result
            return result
        finally:
            done.set()

    def _follow(self, index: int, identity: CallIdentity, led: RecordResult) -> RecordResult | None:
        """A duplicate inside the batch: the outcome of its key's first record; None
        when that left nothing to replay."""
        if led.error is not None:
            return self._failed(index, led.error)
        if led.outcome is None:
            return None
        if led.outcome.record is None:
            # An Unstored result: the value without a record, as the first record got it.
            outcome: Outcome[Any] | None = Outcome(
                OutcomeKind.ATTACHED,
                led.outcome.value,
                identity,
                unstored_reason=led.outcome.unstored_reason,
            )
        else:
            try:
                outcome = self.engine.settle_found(
                    identity, led.outcome.record, kind=OutcomeKind.ATTACHED
                )
            except IdempotencyError as exc:
                return self._failed(index, exc)
        if outcome is None:
            return None
        return RecordResult(self.records[index], self.identifiers[index], outcome)

    async def _execute(self, index: int, identity: CallIdentity | None) -> RecordResult:
        record = self.records[index]
        handler = self.processor.handler

        async def call() -> Any:
            return await handler(record)

        async with self.slots:
            try:
                if self.disabled:
                    outcome = await self.engine.process(record, call)
                else:
                    outcome = await self.engine.execute(identity, call, lambda_context=self.context)
            # Any error a record's handler raises fails that record alone: the
            # batch response reports it, and the source redelivers it.
            except Exception as exc:
                return self._failed(index, exc)
        return RecordResult(record, self.identifiers[index], outcome)

    def _failed(self, index: int, error: Exception) -> RecordResult:
        identifier = self.identifiers[index]
        # INFO, not WARNING: the failure is answered in the batch response (and kept in
        # RecordResult.error); the source redelivers the record.
        logger.info("batch record %s failed: %r", identifier, error, exc_info=error)
        return RecordResult(self.records[index], identifier, error=error)


# --- the cached processor of process_partial_response ---------------------------

_PROCESSORS: weakref.WeakKeyDictionary[Callable[..., Any], list[tuple[Any, BatchProcessor]]] = (
    weakref.WeakKeyDictionary()
)
"""Processors by record handler, so repeated invocations reuse one engine (its local
cache, its in-flight calls); an entry goes with its handler."""

_MAX_PROCESSORS_PER_HANDLER = 8


async def process_partial_response(
    event: Any,
    record_handler: RecordHandler,
    *,
    persistence_store: RecordStore | None = None,
    config: IdempotencyConfig | None = None,
    event_type: EventType = "SQS",
    context: Any = None,
    key_prefix: str | None = None,
    output_serializer: BaseIdempotencySerializer | type[Any] | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    precheck: Precheck = "on_redelivery",
    fifo_failure_scope: FifoFailureScope = "group",
) -> dict[str, list[dict[str, str]]]:
    """Process a batch event idempotently; Lambda's partial-batch response.

    The ``BatchProcessor`` for these settings is built on the first call and
    reused while ``record_handler`` lives (settings compare by value, so a
    config built per invocation reuses it too).
    """
    settings = (
        persistence_store,
        _config_settings(config),
        getattr(event_type, "value", event_type),
        key_prefix,
        output_serializer,
        max_concurrency,
        precheck,
        fifo_failure_scope,
    )
    try:
        known = _PROCESSORS.setdefault(record_handler, [])
    except TypeError:  # a handler that cannot be weakly referenced: no cache
        known = []
    processor = next((p for s, p in known if _same_settings(s, settings)), None)
    if processor is None:
        processor = BatchProcessor(
            record_handler,
            persistence_store=persistence_store,
            config=config,
            event_type=event_type,
            key_prefix=key_prefix,
            output_serializer=output_serializer,
            max_concurrency=max_concurrency,
            precheck=precheck,
            fifo_failure_scope=fifo_failure_scope,
        )
        known.append((settings, processor))
        del known[:-_MAX_PROCESSORS_PER_HANDLER]
    return await processor.process_partial_response(event, context)


def _config_settings(config: IdempotencyConfig | None) -> Any:
    if config is None:
        return None
    return {f.name: getattr(config, f.name) for f in fields(config) if f.init}


def _same_settings(known: tuple[Any, ...], wanted: tuple[Any, ...]) -> bool:
    # The store and serializer by identity (a store is a connection), the rest by value.
    return (
        known[0] is wanted[0]
        and known[4] is wanted[4]
        and known[1:4] == wanted[1:4]
        and known[5:] == wanted[5:]
    )


# --- events (pure) -----------------------------------------------------------------


def _engine_and_call(
    record_handler: RecordHandler,
    store: RecordStore | None,
    config: IdempotencyConfig | None,
    key_prefix: str | None,
    output_serializer: BaseIdempotencySerializer | type[Any] | None,
) -> tuple[IdempotencyEngine, RecordHandler]:
    """The handler's engine and the function to run under it."""
    engine = getattr(record_handler, "idempotency_engine", None)
    if isinstance(engine, IdempotencyEngine):
        # Decorated with idempotent_function: running the decorated function under a
        # second engine would find its own lock on the same key.
        if store is not None and store is not engine.store:
            raise IdempotencyConfigurationError(
                "record_handler is already idempotent_function on another store"
            )
        if config is not None and config is not engine.config:
            raise IdempotencyConfigurationError(
                "record_handler is already idempotent_function with its own config; "
                "pass no config, or pass the undecorated function"
            )
        inner: RecordHandler = getattr(record_handler, "__wrapped__", record_handler)
        return engine, inner
    if store is None:
        raise IdempotencyConfigurationError("persistence_store is required")
    if not inspect.iscoroutinefunction(record_handler):
        raise IdempotencyConfigurationError(
            f"record_handler {getattr(record_handler, '__qualname__', record_handler)!r} "
            "must be an async function (async def)"
        )
    return build_engine(record_handler, store, config, key_prefix, output_serializer), (
        record_handler
    )


def _require_choice(name: str, value: object, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise IdempotencyConfigurationError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
        )


def _unwrap(data: Any) -> Any:
    """An event data class's event (Powertools' ``SQSRecord`` etc.), else the data."""
    raw = getattr(data, "raw_event", None)
    return raw if raw is not None and not isinstance(data, type) else data


def _records_of(event: Any) -> list[Any]:
    raw = _unwrap(event)
    records = raw.get("Records") if isinstance(raw, Mapping) else None
    if not isinstance(records, list):
        raise IdempotencyBatchEventError(
            f"a batch event is a mapping with a 'Records' list; got {type(raw).__name__}"
            + (f" with keys {sorted(raw)[:5]}" if isinstance(raw, Mapping) else "")
        )
    return records


def _raw_record(record: Any, index: int) -> Mapping[str, Any]:
    raw = _unwrap(record)
    if not isinstance(raw, Mapping):
        raise IdempotencyBatchEventError(
            f"record {index} is a {type(raw).__name__}, not a mapping or an event data class"
        )
    return raw


def _identifier(record: Mapping[str, Any], event_type: str, index: int) -> str:
    path = _IDENTIFIER_PATHS[event_type]
    value: Any = record
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else None
    if not isinstance(value, str) or not value:
        raise IdempotencyBatchEventError(
            f"record {index} has no {'.'.join(path)}, which a {event_type} batch reports "
            "failures by: is event_type right?"
        )
    return value


def _attributes(record: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = record.get("attributes")
    return attributes if isinstance(attributes, Mapping) else {}


def _receive_count(record: Mapping[str, Any]) -> int:
    try:
        return int(_attributes(record).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


def _is_fifo(record: Mapping[str, Any]) -> bool:
    arn = record.get("eventSourceARN")
    return isinstance(arn, str) and arn.endswith(".fifo")


def _message_group(record: Mapping[str, Any]) -> Any:
    return _attributes(record).get("MessageGroupId")
