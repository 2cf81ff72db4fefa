"""The HTTP policy in one place: what the engine records for a response, and the answer
to each engine outcome or error, which both middlewares render. Pure, with the engine
on ``InMemoryStore`` where an outcome has to be real."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from idemstore import IdempotencyConfig, InMemoryStore
from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
    IdempotencyError,
    IdempotencyInconsistentStateError,
    IdempotencyKeyError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyTableNotFoundError,
    IdempotencyValidationError,
)
from idemstore.integrations._http import (
    STREAMED,
    UNREPLAYABLE_MARKER,
    Answer,
    CapturedResponse,
    DeliverOwn,
    HttpIdempotencyConfig,
    PassedOn,
    PassThrough,
    Problem,
    Replay,
    answer_for,
    answer_request,
    build_engine,
    key_data,
    record_for,
    request_fingerprint,
)
from idemstore.outcome import Outcome, OutcomeKind, Unstored

FINGERPRINT = request_fingerprint("POST", "/orders", "", b"{}")
OK = CapturedResponse(201, (("Content-Type", "application/json"),), b'{"id": 1}')


# --- what the engine records ------------------------------------------------------------


def test_a_held_response_of_a_stored_status_is_recorded_as_it_is() -> None:
    assert record_for(HttpIdempotencyConfig(), OK) == OK.to_stored()


@pytest.mark.parametrize(
    "response", [None, CapturedResponse(503, (), b""), PassedOn(429, STREAMED)]
)
def test_no_response_or_a_status_not_stored_releases_the_key(
    response: CapturedResponse | PassedOn | None,
) -> None:
    recorded = record_for(HttpIdempotencyConfig(), response)
    assert isinstance(recorded, Unstored)
    assert recorded.releases


def test_a_response_passed_on_is_recorded_as_not_replayable_by_default() -> None:
    recorded = record_for(HttpIdempotencyConfig(), PassedOn(200, STREAMED))
    assert isinstance(recorded, Unstored)
    assert recorded.record_as == {UNREPLAYABLE_MARKER: STREAMED}
    released = record_for(HttpIdempotencyConfig(unstorable_responses="release"), PassedOn(200, "x"))
    assert isinstance(released, Unstored)
    assert released.releases


@pytest.mark.asyncio
async def test_a_response_too_large_for_an_item_is_recorded_as_not_replayable() -> None:
    """The engine's size check, not the middleware's: the body compresses, its base64 does not."""
    store = InMemoryStore()
    engine = build_engine(store, HttpIdempotencyConfig())
    huge = CapturedResponse(200, (), random.Random(7).randbytes(600_000))

    async def call() -> Any:
        return record_for(HttpIdempotencyConfig(max_capture_bytes=10**7), huge)

    outcome = await engine.process_keyed(key_data("k", None), FINGERPRINT, call)
    assert outcome.executed
    assert not outcome.stored
    assert outcome.record is not None
    assert "at most" in str(outcome.unstored_reason)
    duplicate = await engine.process_keyed(key_data("k", None), FINGERPRINT, call)
    answer = answer_for(duplicate, HttpIdempotencyConfig())
    assert isinstance(answer, Problem)
    assert answer.status == 409
    assert "cannot be replayed" in answer.detail


# --- outcomes to answers ---------------------------------------------------------------


def outcome(kind: OutcomeKind, value: Any = None, **fields: Any) -> Outcome[Any]:
    return Outcome(kind, value, **fields)


@pytest.mark.parametrize(
    "kind", [OutcomeKind.EXECUTED, OutcomeKind.UNPROTECTED, OutcomeKind.DISABLED]
)
def test_a_call_that_ran_delivers_the_apps_own_response(kind: OutcomeKind) -> None:
    assert answer_for(outcome(kind, OK.to_stored()), HttpIdempotencyConfig()) == DeliverOwn()


@pytest.mark.parametrize("kind", [OutcomeKind.REPLAYED, OutcomeKind.CACHED, OutcomeKind.ATTACHED])
def test_a_replay_sends_the_stored_response_marked(kind: OutcomeKind) -> None:
    stored = CapturedResponse(201, (("set-cookie", "a=1"), ("x-order", "7")), b"body")
    answer = answer_for(outcome(kind, stored.to_stored()), HttpIdempotencyConfig())
    assert answer == Replay(201, (("x-order", "7"), ("Idempotent-Replayed", "true")), b"body")


def test_a_duplicate_of_an_unreplayable_response_is_a_409_without_retry_after() -> None:
    recorded = {UNREPLAYABLE_MARKER: STREAMED}
    answer = answer_for(outcome(OutcomeKind.REPLAYED, recorded), HttpIdempotencyConfig())
    assert isinstance(answer, Problem)
    assert answer.status == 409
    assert STREAMED in answer.detail
    assert answer.headers == ()  # retrying will never help


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (IdempotencyValidationError("x"), 422),
        (IdempotencyAlreadyInProgressError("x"), 409),
        (IdempotencyInconsistentStateError("x"), 409),
        (IdempotencyPersistenceLayerError("x"), 503),
        (IdempotencyTableNotFoundError("t", region_name="r", endpoint_url=None), 503),
    ],
)
def test_engine_errors_map_to_problems(error: IdempotencyError, status: int) -> None:
    answer = answer_for(error, HttpIdempotencyConfig(retry_after_seconds=5))
    assert isinstance(answer, Problem)
    assert answer.status == status
    assert (("Retry-After", "5") in answer.headers) == (status != 422)


def test_a_dead_store_fails_open_when_configured() -> None:
    config = HttpIdempotencyConfig(fail_open=True)
    answer = answer_for(IdempotencyPersistenceLayerError("down"), config)
    assert isinstance(answer, PassThrough)
    assert "runs unprotected" in answer.warning


def test_an_error_after_the_app_ran_still_delivers_its_response() -> None:
    error = IdempotencyPersistenceLayerError("completion failed")
    error.function_ran = True
    for config in (HttpIdempotencyConfig(), HttpIdempotencyConfig(fail_open=True)):
        answer = answer_for(error, config)
        assert isinstance(answer, DeliverOwn)
        assert answer.warning is not None
        assert "not stored" in answer.warning


@pytest.mark.parametrize(
    "error",
    [
        IdempotencyKeyError("x"),
        # The app raised and the release failed too: never run it again unprotected.
        IdempotencyPersistenceLayerError("x", function_error=RuntimeError("app")),
    ],
)
def test_errors_without_an_http_answer_are_raised(error: IdempotencyError) -> None:
    with pytest.raises(type(error)) as raised:
        answer_for(error, HttpIdempotencyConfig(fail_open=True))
    assert raised.value is error


# --- the engine says when the app ran --------------------------------------------------------


@pytest.mark.asyncio
async def test_a_lost_lease_says_the_function_ran_and_keeps_its_result() -> None:
    now = [1000.0]
    config = IdempotencyConfig(in_progress_lease_seconds=10, clock=lambda: now[0])
    store = InMemoryStore()
    slow = build_engine(store, HttpIdempotencyConfig(idempotency_config=config))
    other = build_engine(store, HttpIdempotencyConfig(idempotency_config=config))

    async def taken_over() -> Any:
        now[0] += 60  # the lease lapses while the app runs, and another caller takes over
        await other.process_keyed(key_data("k", None), FINGERPRINT, lambda: _stored(OK))
        return OK.to_stored()

    with pytest.raises(IdempotencyLeaseLostError) as raised:
        await slow.process_keyed(key_data("k", None), FINGERPRINT, taken_over)
    assert raised.value.function_ran
    assert raised.value.result == OK.to_stored()
    assert isinstance(answer_for(raised.value, HttpIdempotencyConfig()), DeliverOwn)


@pytest.mark.asyncio
async def test_errors_before_the_function_ran_say_so() -> None:
    engine = build_engine(InMemoryStore(), HttpIdempotencyConfig())

    async def call() -> Any:
        return OK.to_stored()

    await engine.process_keyed(key_data("k", None), FINGERPRINT, call)
    with pytest.raises(IdempotencyValidationError) as raised:
        await engine.process_keyed(key_data("k", None), {"other": "request"}, call)
    assert not raised.value.function_ran
    assert raised.value.result is None


async def _stored(response: CapturedResponse) -> dict[str, Any]:
    return response.to_stored()


@pytest.mark.asyncio
async def test_answer_request_logs_the_warning_of_its_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = build_engine(InMemoryStore(), HttpIdempotencyConfig())

    async def streamed() -> Any:
        return record_for(HttpIdempotencyConfig(), PassedOn(200, STREAMED))

    answers: list[Answer] = [
        await answer_request(
            engine,
            HttpIdempotencyConfig(),
            request_line="POST /stream",
            key="k",
            scope=None,
            fingerprint=FINGERPRINT,
            call=streamed,
        )
        for _ in range(2)
    ]
    assert isinstance(answers[0], DeliverOwn)
    assert isinstance(answers[1], Problem)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"POST /stream: response not stored ({STREAMED}); duplicates are told it cannot be replayed"
    ]
    assert json.loads(answers[1].body())["status"] == 409
