"""Batch processing semantics on ``InMemoryStore``: reporting, order, duplicates, the batch read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest
from aws_lambda_powertools.utilities.batch import EventType as PowertoolsEventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from idemstore import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyConfigurationError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
    IdempotencyWarning,
    InMemoryStore,
    idempotent_function,
)
from idemstore.batch import (
    BatchProcessor,
    EventType,
    IdempotencyBatchEventError,
    process_partial_response,
)
from idemstore.codec import from_item
from idemstore.lambda_runtime import lambda_context_scope
from idemstore.observe import BatchPrecheck, CallStart, Event, observing
from idemstore.outcome import OutcomeKind, Unstored
from idemstore.records import DataRecord, RecordStatus
from idemstore.testing import RequestLog

NOW = 1_700_000_000.0
BY_MESSAGE_ID = IdempotencyConfig(event_key_jmespath="messageId", clock=lambda: NOW)
BY_ORDER = IdempotencyConfig(event_key_jmespath="powertools_json(body).order", clock=lambda: NOW)
FIFO_ARN = "arn:aws:sqs:eu-west-1:123456789012:orders.fifo"


def sqs(
    message_id: str, order: str | None = None, *, receive_count: int = 1, group: str | None = None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"ApproximateReceiveCount": str(receive_count)}
    record: dict[str, Any] = {
        "messageId": message_id,
        "body": json.dumps({"order": order or message_id}),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:orders",
        "attributes": attributes,
    }
    if group is not None:
        attributes["MessageGroupId"] = group
        record["eventSourceARN"] = FIFO_ARN
    return record


def kinesis(sequence: str) -> dict[str, Any]:
    return {
        "eventSource": "aws:kinesis",
        "kinesis": {"sequenceNumber": sequence, "partitionKey": "p", "data": "e30="},
    }


def dynamodb(sequence: str) -> dict[str, Any]:
    return {"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": sequence}}


def event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


class Recorder:
    """A record handler that notes what ran, fails on request, and tracks concurrency."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.ran: list[str] = []
        self.fail = fail or set()
        self.running = 0
        self.peak = 0
        self.gate: dict[str, asyncio.Event] = {}

    def name(self, record: dict[str, Any]) -> str:
        for path in (("messageId",), ("kinesis", "sequenceNumber"), ("dynamodb", "SequenceNumber")):
            value: Any = record
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                return str(value)
        raise AssertionError(record)

    async def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        name = self.name(record)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if name in self.gate:
                await self.gate[name].wait()
            for _ in range(3):
                await asyncio.sleep(0)
            self.ran.append(name)
            if name in self.fail:
                raise ValueError(f"cannot process {name}")
            return {"done": name}
        finally:
            self.running -= 1


def failed(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def handler_for(recorder: Recorder) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def record_handler(record: dict[str, Any]) -> Any:
        return await recorder(record)

    return record_handler


class EventSource(NamedTuple):
    """An event source: its ``event_type``, a maker of a record with a given identifier, and
    where that identifier is in the record."""

    event_type: EventType
    record: Callable[[str], dict[str, Any]]
    key: str

    def processor(self, recorder: Recorder) -> BatchProcessor:
        """A processor of this source's records into ``recorder``, on a fresh in-memory store,
        each record keyed by its identifier."""
        return BatchProcessor(
            handler_for(recorder),
            persistence_store=InMemoryStore(),
            config=IdempotencyConfig(event_key_jmespath=self.key),
            event_type=self.event_type,
        )


STREAM_SOURCES = [
    EventSource("KinesisDataStreams", kinesis, "kinesis.sequenceNumber"),
    EventSource("DynamoDBStreams", dynamodb, "dynamodb.SequenceNumber"),
]
EVENT_SOURCES = [EventSource("SQS", sqs, "messageId"), *STREAM_SOURCES]


# --- the response -----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", EVENT_SOURCES, ids=lambda source: source.event_type)
async def test_failures_are_reported_by_the_identifier_of_each_event_source(
    source: EventSource,
) -> None:
    recorder = Recorder(fail={"3"})
    processor = source.processor(recorder)

    result = await processor.process(
        event(source.record("1"), source.record("2"), source.record("3"))
    )

    assert result.response() == {"batchItemFailures": [{"itemIdentifier": "3"}]}
    assert [r.outcome.kind if r.outcome else None for r in result.results] == [
        OutcomeKind.EXECUTED,
        OutcomeKind.EXECUTED,
        None,
    ]
    assert isinstance(result.results[2].error, ValueError)


@pytest.mark.asyncio
async def test_powertools_event_type_enum_is_accepted() -> None:
    processor = BatchProcessor(
        handler_for(Recorder()),
        persistence_store=InMemoryStore(),
        config=BY_MESSAGE_ID,
        event_type=PowertoolsEventType.SQS,  # type: ignore[arg-type]  # the enum, as Powertools users pass it
    )

    assert processor.event_type == "SQS"
    assert failed(await processor.process_partial_response(event(sqs("m-1")))) == []


@pytest.mark.asyncio
async def test_an_empty_batch_reports_no_failures() -> None:
    recorder = Recorder()
    response = await process_partial_response(
        event(), handler_for(recorder), persistence_store=InMemoryStore(), config=BY_MESSAGE_ID
    )

    assert response == {"batchItemFailures": []}
    assert recorder.ran == []


@pytest.mark.asyncio
async def test_a_batch_whose_records_all_fail_reports_every_identifier() -> None:
    recorder = Recorder(fail={"m-1", "m-2", "m-3"})
    store = InMemoryStore()

    response = await process_partial_response(
        event(sqs("m-1"), sqs("m-2"), sqs("m-3")),
        handler_for(recorder),
        persistence_store=store,
        config=BY_MESSAGE_ID,
    )

    assert sorted(failed(response)) == ["m-1", "m-2", "m-3"]
    assert store.items() == {}  # every lock released: the retried batch runs again


# --- at most once per key ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_redelivered_record_replays_its_stored_result() -> None:
    recorder = Recorder(fail={"m-2"})
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=BY_MESSAGE_ID
    )
    first = await processor.process(event(sqs("m-1"), sqs("m-2")))
    recorder.fail.clear()

    again = await processor.process(event(sqs("m-1", receive_count=2), sqs("m-2", receive_count=2)))

    assert failed(first.response()) == ["m-2"]
    assert failed(again.response()) == []
    assert recorder.ran == ["m-1", "m-2", "m-2"]
    replay, executed = again.results
    assert replay.outcome is not None
    assert replay.outcome.kind is OutcomeKind.REPLAYED
    assert replay.outcome.value == {"done": "m-1"}
    assert executed.outcome is not None
    assert executed.outcome.kind is OutcomeKind.EXECUTED


@pytest.mark.asyncio
async def test_keys_are_those_idempotent_function_derives_for_the_same_handler() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    async def ship(record: dict[str, Any]) -> str:
        runs.append(record["messageId"])
        return f"shipped {record['messageId']}"

    await BatchProcessor(ship, persistence_store=store, config=BY_ORDER).process(
        event(sqs("m-1", "o-1"))
    )
    decorated = idempotent_function(
        data_keyword_argument="record", persistence_store=store, config=BY_ORDER
    )(ship)

    assert await decorated(record=sqs("m-9", "o-1")) == "shipped m-1"
    assert runs == ["m-1"]


@pytest.mark.asyncio
async def test_a_handler_decorated_with_idempotent_function_runs_under_its_own_engine() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="record", persistence_store=store, config=BY_ORDER)
    async def ship(record: dict[str, Any]) -> str:
        runs.append(record["messageId"])
        return f"shipped {record['messageId']}"

    processor = BatchProcessor(ship)  # its store and config come with it
    result = await processor.process(event(sqs("m-1", "o-1"), sqs("m-2", "o-2")))

    assert failed(result.response()) == []  # no record found its own lock
    assert runs == ["m-1", "m-2"]
    assert await ship(record=sqs("m-3", "o-2")) == "shipped m-2"
    with pytest.raises(IdempotencyConfigurationError, match="own config"):
        BatchProcessor(ship, config=BY_MESSAGE_ID)


@pytest.mark.asyncio
async def test_powertools_record_data_classes_key_like_their_events() -> None:
    store = InMemoryStore()
    recorder = Recorder()
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=BY_ORDER)

    await processor.process(event(sqs("m-1", "o-1")))
    result = await processor.process({"Records": [SQSRecord(sqs("m-2", "o-1"))]})

    assert recorder.ran == ["m-1"]
    assert result.results[0].outcome is not None
    assert result.results[0].outcome.kind is OutcomeKind.REPLAYED


@pytest.mark.asyncio
async def test_idempotent_function_accepts_an_event_data_class_as_its_payload() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    @idempotent_function(data_keyword_argument="record", persistence_store=store, config=BY_ORDER)
    async def ship(record: Any) -> str:
        runs.append("ran")
        return "shipped"

    assert await ship(record=SQSRecord(sqs("m-1", "o-1"))) == "shipped"
    assert await ship(record=sqs("m-2", "o-1")) == "shipped"  # the same key as its dict
    assert runs == ["ran"]


class LambdaContext:
    """The part of Lambda's context object the engine reads: the time left."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def lock_reading_handler(
    store: InMemoryStore, locks: list[DataRecord]
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """A record handler that appends to ``locks`` the lock it runs under, the store's only
    record."""

    async def record_handler(record: dict[str, Any]) -> None:
        (item,) = store.items().values()
        locks.append(from_item(store.schema, item))

    return record_handler


@pytest.mark.asyncio
async def test_the_lock_lasts_until_the_lambda_deadline() -> None:
    store = InMemoryStore()
    locks: list[DataRecord] = []

    await process_partial_response(
        event(sqs("m-1")),
        lock_reading_handler(store, locks),
        persistence_store=store,
        config=BY_MESSAGE_ID,
        context=LambdaContext(5_000),
    )

    assert locks[0].status is RecordStatus.INPROGRESS
    assert locks[0].in_progress_expiry_timestamp == int(NOW * 1000) + 5_000


# --- concurrency, duplicates, order ------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrency_is_bounded() -> None:
    recorder = Recorder()
    processor = BatchProcessor(
        handler_for(recorder),
        persistence_store=InMemoryStore(),
        config=BY_MESSAGE_ID,
        max_concurrency=3,
    )

    await processor.process(event(*(sqs(f"m-{i}") for i in range(10))))

    assert recorder.peak == 3
    assert sorted(recorder.ran) == sorted(f"m-{i}" for i in range(10))


@pytest.mark.asyncio
async def test_duplicates_in_one_batch_run_once_and_replay_it() -> None:
    recorder = Recorder()
    store = InMemoryStore()
    log = RequestLog().watch(store)
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=BY_ORDER)

    result = await processor.process(
        event(sqs("m-1", "o-1"), sqs("m-2", "o-1"), sqs("m-3", "o-2"), sqs("m-4", "o-1"))
    )

    assert failed(result.response()) == []
    assert sorted(recorder.ran) == ["m-1", "m-3"]
    kinds = [r.outcome.kind for r in result.results if r.outcome]
    assert kinds == [
        OutcomeKind.EXECUTED,
        OutcomeKind.ATTACHED,
        OutcomeKind.EXECUTED,
        OutcomeKind.ATTACHED,
    ]
    assert [r.outcome.value for r in result.results if r.outcome][1] == {"done": "m-1"}
    assert sorted(log.operations) == ["PutItem", "PutItem", "UpdateItem", "UpdateItem"]


@pytest.mark.asyncio
async def test_duplicates_of_a_failed_record_are_reported_failed_without_running() -> None:
    recorder = Recorder(fail={"m-1"})
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=BY_ORDER
    )

    result = await processor.process(event(sqs("m-1", "o-1"), sqs("m-2", "o-1")))

    assert failed(result.response()) == ["m-1", "m-2"]
    assert recorder.ran == ["m-1"]


@pytest.mark.asyncio
async def test_duplicates_with_a_different_payload_fail_validation() -> None:
    config = IdempotencyConfig(
        event_key_jmespath="powertools_json(body).order",
        payload_validation_jmespath="messageId",
    )
    recorder = Recorder()
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=config
    )

    result = await processor.process(event(sqs("m-1", "o-1"), sqs("m-2", "o-1")))

    assert failed(result.response()) == ["m-2"]
    assert isinstance(result.results[1].error, IdempotencyValidationError)
    assert recorder.ran == ["m-1"]


@pytest.mark.asyncio
async def test_fifo_groups_run_in_order_concurrently_and_a_failure_stops_its_group() -> None:
    recorder = Recorder(fail={"a-2"})
    recorder.gate["a-1"] = asyncio.Event()
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=BY_MESSAGE_ID
    )
    batch = event(
        sqs("a-1", group="A"),
        sqs("b-1", group="B"),
        sqs("a-2", group="A"),
        sqs("b-2", group="B"),
        sqs("a-3", group="A"),
        sqs("b-3", group="B"),
    )

    async def release_a_when_b_is_done() -> None:
        # Polls the loop rather than an event: the handler under test knows no test hooks.
        while len([name for name in recorder.ran if name.startswith("b")]) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0)
        recorder.gate["a-1"].set()

    result, _ = await asyncio.gather(processor.process(batch), release_a_when_b_is_done())

    # Group B ran to its end while A's first record was held: groups run concurrently.
    assert recorder.ran == ["b-1", "b-2", "b-3", "a-1", "a-2"]
    assert failed(result.response()) == ["a-2", "a-3"]
    assert result.results[4].skipped
    assert recorder.peak == 2  # one record at a time per group


@pytest.mark.asyncio
async def test_fifo_may_fail_the_rest_of_the_whole_batch() -> None:
    recorder = Recorder(fail={"a-2"})
    processor = BatchProcessor(
        handler_for(recorder),
        persistence_store=InMemoryStore(),
        config=BY_MESSAGE_ID,
        fifo_failure_scope="batch",
    )

    result = await processor.process(
        event(sqs("a-1", group="A"), sqs("a-2", group="A"), sqs("b-1", group="B"))
    )

    assert recorder.ran == ["a-1", "a-2"]
    assert failed(result.response()) == ["a-2", "b-1"]


@pytest.mark.asyncio
@pytest.mark.parametrize("source", STREAM_SOURCES, ids=lambda source: source.event_type)
async def test_streams_run_in_order_and_stop_at_the_first_failure(source: EventSource) -> None:
    recorder = Recorder(fail={"2"})
    processor = source.processor(recorder)

    result = await processor.process(event(*(source.record(str(n)) for n in range(1, 6))))

    assert recorder.ran == ["1", "2"]
    assert recorder.peak == 1
    assert failed(result.response()) == ["2", "3", "4", "5"]
    assert [r.skipped for r in result.results] == [False, False, True, True, True]


# --- the batch read ------------------------------------------------------------------------


async def completed_batch(store: InMemoryStore, count: int) -> tuple[Recorder, BatchProcessor]:
    recorder = Recorder()
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=BY_MESSAGE_ID)
    await processor.process(event(*(sqs(f"m-{i}") for i in range(count))))
    return recorder, processor


@pytest.mark.asyncio
async def test_a_first_delivery_makes_no_batch_read() -> None:
    store = InMemoryStore()
    log = RequestLog().watch(store)

    await completed_batch(store, 4)

    assert sorted(log.operations) == ["PutItem"] * 4 + ["UpdateItem"] * 4


class StoreWithoutBatchRead:
    """A store written against the contract before ``get_records`` was part of it."""

    def __init__(self, inner: InMemoryStore) -> None:
        self.inner = inner
        self.schema = inner.schema
        self.get_record = inner.get_record
        self.put_record = inner.put_record
        self.update_record = inner.update_record
        self.renew_lease = inner.renew_lease
        self.delete_record = inner.delete_record


class FailingBatchRead(StoreWithoutBatchRead):
    """A store whose batch read fails."""

    async def get_records(self, idempotency_keys: Any) -> dict[str, DataRecord]:
        raise IdempotencyPersistenceLayerError("BatchGetItem failed")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("wrapper", "options", "receive_count", "operations"),
    [
        pytest.param(None, {}, 2, ["BatchGetItem"], id="one-read"),
        pytest.param(None, {"precheck": "never"}, 2, ["PutItem"] * 4, id="precheck-never"),
        pytest.param(None, {"precheck": "always"}, 1, ["BatchGetItem"], id="precheck-always"),
        pytest.param(
            None, {"precheck": "on_redelivery"}, 1, ["PutItem"] * 4, id="precheck-on-redelivery"
        ),
        pytest.param(FailingBatchRead, {}, 3, ["PutItem"] * 4, id="failed-read-falls-back"),
        pytest.param(StoreWithoutBatchRead, {}, 2, ["PutItem"] * 4, id="store-without-batch-read"),
    ],
)
async def test_a_redelivered_batch_of_completed_records_replays_it(
    wrapper: Callable[[InMemoryStore], Any] | None,
    options: dict[str, Any],
    receive_count: int,
    operations: list[str],
) -> None:
    """By one batch read where the precheck and the store allow it, else by the usual path."""
    inner = InMemoryStore()
    recorder, _ = await completed_batch(inner, 4)
    store = inner if wrapper is None else wrapper(inner)
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=store, config=BY_MESSAGE_ID, **options
    )
    log = RequestLog().watch(inner)

    result = await processor.process(
        event(*(sqs(f"m-{i}", receive_count=receive_count) for i in range(4)))
    )

    assert log.operations == operations
    assert result.batch_read is ("BatchGetItem" in operations)
    assert failed(result.response()) == []
    assert len(recorder.ran) == 4  # only the first delivery ran
    assert [r.outcome.value for r in result.results if r.outcome] == [
        {"done": f"m-{i}"} for i in range(4)
    ]
    assert {r.outcome.kind for r in result.results if r.outcome} == {OutcomeKind.REPLAYED}


@pytest.mark.asyncio
async def test_records_in_progress_or_missing_take_the_usual_path_after_the_read() -> None:
    store = InMemoryStore()
    recorder, processor = await completed_batch(store, 1)
    locked = processor.engine.identify(sqs("m-1"))
    assert locked is not None
    store.overwrite(
        DataRecord(
            idempotency_key=locked.key,
            status=RecordStatus.INPROGRESS,
            expiry_timestamp=int(NOW) + 3600,
            in_progress_expiry_timestamp=int(NOW * 1000) + 60_000,
            owner_token="another-caller",
        )
    )
    log = RequestLog().watch(store)

    result = await processor.process(
        event(sqs("m-0", receive_count=2), sqs("m-1", receive_count=2), sqs("m-2", receive_count=2))
    )

    assert sorted(log.operations) == ["BatchGetItem", "PutItem", "PutItem", "UpdateItem"]
    assert failed(result.response()) == ["m-1"]
    assert isinstance(result.results[1].error, IdempotencyAlreadyInProgressError)
    assert recorder.ran == ["m-0", "m-2"]


@pytest.mark.asyncio
async def test_an_expired_record_found_by_the_read_runs_again() -> None:
    now = [NOW]
    config = IdempotencyConfig(
        event_key_jmespath="messageId", expires_after_seconds=10, clock=lambda: now[0]
    )
    recorder = Recorder()
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=config
    )
    await processor.process(event(sqs("m-1")))
    now[0] += 60

    result = await processor.process(event(sqs("m-1", receive_count=2)))

    assert result.batch_read
    assert recorder.ran == ["m-1", "m-1"]
    assert result.results[0].outcome is not None
    assert result.results[0].outcome.kind is OutcomeKind.EXECUTED


@pytest.mark.asyncio
async def test_a_record_read_for_another_payload_fails_validation_without_running() -> None:
    config = IdempotencyConfig(
        event_key_jmespath="powertools_json(body).order", payload_validation_jmespath="messageId"
    )
    store = InMemoryStore()
    recorder = Recorder()
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=config)
    await processor.process(event(sqs("m-1", "o-1")))
    log = RequestLog().watch(store)

    result = await processor.process(event(sqs("m-2", "o-1", receive_count=2)))

    assert log.operations == ["BatchGetItem"]
    assert isinstance(result.results[0].error, IdempotencyValidationError)
    assert recorder.ran == ["m-1"]


@pytest.mark.asyncio
async def test_memory_store_reads_many_records_at_once() -> None:
    store = InMemoryStore()
    _, processor = await completed_batch(store, 2)
    keys = [
        identity.key
        for identity in (processor.engine.identify(sqs(f"m-{i}")) for i in range(3))
        if identity is not None
    ]

    found = await store.get_records([keys[0], keys[2], keys[1], keys[0]])

    assert sorted(found) == sorted(keys[:2])
    assert all(found[key].idempotency_key == key for key in found)


# --- the per-handler processor, the kill switch -----------------------------------------------


@pytest.mark.asyncio
async def test_process_partial_response_reuses_one_engine_per_handler() -> None:
    store = InMemoryStore()
    recorder = Recorder()
    record_handler = handler_for(recorder)

    async def invoke() -> dict[str, Any]:
        # A config built per invocation, as in a handler body: the same settings.
        config = IdempotencyConfig(event_key_jmespath="messageId", use_local_cache=True)
        return await process_partial_response(
            event(sqs("m-1")), record_handler, persistence_store=store, config=config
        )

    await invoke()
    log = RequestLog().watch(store)
    await invoke()

    assert log.operations == []  # replayed from the engine's local cache
    assert recorder.ran == ["m-1"]


@pytest.mark.asyncio
async def test_the_kill_switch_runs_every_record_unprotected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from idemstore.engine import DISABLED_NOTICE

    monkeypatch.setenv("IDEMSTORE_DISABLED", "1")
    monkeypatch.setattr(DISABLED_NOTICE, "given", False)
    store = InMemoryStore()
    recorder = Recorder()
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=BY_MESSAGE_ID)

    with pytest.warns(IdempotencyWarning, match="IDEMSTORE_DISABLED"):
        result = await processor.process(event(sqs("m-1", receive_count=2), sqs("m-1")))

    assert recorder.ran == ["m-1", "m-1"]
    assert {r.outcome.kind for r in result.results if r.outcome} == {OutcomeKind.DISABLED}
    assert store.requests == 0


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"config": IdempotencyConfig()}, "event_key_jmespath"),
        ({"config": IdempotencyConfig(event_key_jmespath="")}, "ApproximateReceiveCount"),
        ({"config": BY_MESSAGE_ID, "event_type": "Kafka"}, "event_type"),
        ({"config": BY_MESSAGE_ID, "precheck": "sometimes"}, "precheck"),
        ({"config": BY_MESSAGE_ID, "fifo_failure_scope": "queue"}, "fifo_failure_scope"),
        ({"config": BY_MESSAGE_ID, "max_concurrency": 0}, "at least 1"),
        ({"config": BY_MESSAGE_ID, "max_concurrency": 2.5}, "int"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(IdempotencyConfigurationError, match=message):
        BatchProcessor(handler_for(Recorder()), persistence_store=InMemoryStore(), **options)


def test_a_sync_handler_or_a_missing_store_is_a_configuration_error() -> None:
    def sync_handler(record: dict[str, Any]) -> None:
        return None

    with pytest.raises(IdempotencyConfigurationError, match="async"):
        BatchProcessor(sync_handler, persistence_store=InMemoryStore(), config=BY_MESSAGE_ID)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(IdempotencyConfigurationError, match="persistence_store"):
        BatchProcessor(handler_for(Recorder()), config=BY_MESSAGE_ID)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("bad_event", "message"),
    [
        ({}, "Records"),
        ({"Records": "m-1"}, "Records"),
        ({"Records": [sqs("m-1"), 42]}, "record 1 is a int"),
        ({"Records": [sqs("m-1"), {"body": "{}"}]}, "record 1 has no messageId"),
        ({"Records": [kinesis("1")]}, "is event_type right"),
    ],
)
async def test_a_malformed_event_raises_before_any_record_runs(
    bad_event: Any, message: str
) -> None:
    recorder = Recorder()
    store = InMemoryStore()
    processor = BatchProcessor(handler_for(recorder), persistence_store=store, config=BY_MESSAGE_ID)

    with pytest.raises(IdempotencyBatchEventError, match=message):
        await processor.process(bad_event)

    assert recorder.ran == []
    assert store.requests == 0


@pytest.mark.asyncio
async def test_duplicates_of_an_unstored_result_get_its_value_and_it_runs_once() -> None:
    store = InMemoryStore()
    runs: list[str] = []

    async def quote(record: dict[str, Any]) -> Unstored[str]:
        runs.append(record["messageId"])
        return Unstored(f"quote for {record['messageId']}", reason="prices change")

    result = await BatchProcessor(quote, persistence_store=store, config=BY_ORDER).process(
        event(sqs("m-1", "o-1"), sqs("m-2", "o-1"))
    )

    assert runs == ["m-1"]
    assert [(r.outcome.kind, r.outcome.value) for r in result.results if r.outcome] == [
        (OutcomeKind.EXECUTED, "quote for m-1"),
        (OutcomeKind.ATTACHED, "quote for m-1"),
    ]
    assert store.items() == {}  # nothing stored: a redelivery runs again


@pytest.mark.asyncio
async def test_without_a_context_the_one_registered_for_the_invocation_is_used() -> None:
    store = InMemoryStore()
    locks: list[DataRecord] = []
    processor = BatchProcessor(
        lock_reading_handler(store, locks), persistence_store=store, config=BY_MESSAGE_ID
    )

    with lambda_context_scope(LambdaContext(7_000)):  # as an @idempotent handler registers it
        await processor.process(event(sqs("m-1")))

    assert [lock.in_progress_expiry_timestamp for lock in locks] == [int(NOW * 1000) + 7_000]


@pytest.mark.asyncio
async def test_a_batch_read_is_reported_as_a_precheck_event() -> None:
    events: list[Event] = []

    class Recorded:
        def call_started(self, start: CallStart) -> None:
            return None

        def event(self, event: Event) -> None:
            events.append(event)

    recorder = Recorder()
    processor = BatchProcessor(
        handler_for(recorder), persistence_store=InMemoryStore(), config=BY_MESSAGE_ID
    )
    await processor.process(event(sqs("m-1"), sqs("m-2")))
    with observing(Recorded()):
        await processor.process(event(*(sqs(f"m-{i}", receive_count=2) for i in (1, 2, 3))))
    (precheck,) = [e for e in events if isinstance(e, BatchPrecheck)]
    assert (precheck.hits, precheck.misses) == (2, 1)
