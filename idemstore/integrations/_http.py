"""The HTTP behaviour both middlewares share, framework-free and without I/O.

- ``parse_idempotency_key``: the ``Idempotency-Key`` header, as the IETF draft's
  structured-field string (``"abc"``, with ``\\"`` and ``\\\\`` escapes) or a bare token;
- ``HttpIdempotencyConfig``: which requests are guarded and how;
- ``request_fingerprint``: what the engine's payload hash covers (method, path,
  query, SHA-256 of the body); the engine derives the key from the scope and
  header key (``key_data``; ``call_identity`` asks it, for tools);
- ``record_for``: what the engine records for the app's response: the response
  (JSON, body in base64), a marker saying it cannot be replayed, or nothing;
- ``answer_for``: the one mapping of an engine outcome or error to the HTTP
  answer each adapter renders: ``DeliverOwn``, ``Replay``, ``Problem`` or ``PassThrough``.

An adapter holds no policy: it reads the request, runs the app through
``answer_request`` and renders the answer in its framework's terms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError, field_validator

from idemstore.codec import RESULT_LIMIT_BYTES
from idemstore.config import IdempotencyConfig
from idemstore.engine import Call, IdempotencyEngine
from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
    IdempotencyConfigurationError,
    IdempotencyError,
    IdempotencyInconsistentStateError,
    IdempotencyKeyError,
    IdempotencyPersistenceLayerError,
    IdempotencySerializationError,
    IdempotencyValidationError,
)
from idemstore.outcome import CallIdentity, Outcome, Unstored
from idemstore.serialization import NoOpSerializer
from idemstore.stores.contract import RecordStore
from idemstore.stores.memory import InMemoryStore

logger = logging.getLogger("idemstore.integrations")

HEADER_NAME = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
DEFAULT_MAX_CAPTURE_BYTES = RESULT_LIMIT_BYTES
"""A body is held for storing only if it could fit in one item as it is. Stored in
base64 it grows by a third, which compression usually wins back; a body that
still does not fit is recorded as not replayable (see ``unstorable_responses``)."""
UNREPLAYABLE_MARKER = "idemstore_unreplayable"
"""The one field of what is recorded for a response that could not be stored."""

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
UNREPLAYED_HEADERS = HOP_BY_HOP_HEADERS | {"content-length"}
"""Never stored: hop-by-hop headers, and the length, which the server sets for the replay."""

ScopeFunction = Callable[[Any], str | Awaitable[str]]
"""Called with the framework's request; returns the namespace its key lives in (a tenant)."""

StatusPredicate = Callable[[int], bool]


# --- the header ----------------------------------------------------------------------


class InvalidIdempotencyKeyError(ValueError):
    """The ``Idempotency-Key`` header is malformed; the request gets a 400."""


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The key from the header's values (one per header line); None when absent.

    Raises ``InvalidIdempotencyKeyError`` for more than one header, a malformed
    string, or a key that is not 1-255 printable ASCII characters.
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKeyError(f"more than one {HEADER_NAME} header")
    value = values[0].strip(" \t")
    key = _parse_sf_string(value) if value.startswith('"') else _parse_bare_token(value)
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKeyError(
            f"{HEADER_NAME} must be 1 to {MAX_KEY_LENGTH} characters long, not {len(key)}"
        )
    return key


def _parse_sf_string(value: str) -> str:
    """A structured-field string: quotes, printable ASCII, ``\\"`` and ``\\\\`` escapes."""
    chars: list[str] = []
    escaped = False
    for position, char in enumerate(value[1:], start=1):
        if not " " <= char <= "~":
            raise InvalidIdempotencyKeyError(f"{HEADER_NAME} holds a non-printable character")
        if escaped:
            if char not in '"\\':
                raise InvalidIdempotencyKeyError(f"{HEADER_NAME} has an invalid escape \\{char}")
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            if position != len(value) - 1:
                raise InvalidIdempotencyKeyError(f"{HEADER_NAME} has text after its string")
            return "".join(chars)
        else:
            chars.append(char)
    raise InvalidIdempotencyKeyError(f"{HEADER_NAME} string is not closed")


def _parse_bare_token(value: str) -> str:
    """A bare key: visible ASCII without quotes, backslashes, commas or spaces."""
    for char in value:
        if not "!" <= char <= "~" or char in '"\\,':
            raise InvalidIdempotencyKeyError(
                f"{HEADER_NAME} must be a quoted string or a token of visible ASCII "
                "characters without quotes, backslashes or commas"
            )
    return value


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusSet:
    """Stored statuses given as codes and ranges, e.g. ``StatusSet.of(range(200, 300), 404)``."""

    ranges: tuple[range, ...]

    @classmethod
    def of(cls, *codes: int | range) -> StatusSet:
        return cls(
            tuple(code if isinstance(code, range) else range(code, code + 1) for code in codes)
        )

    def __call__(self, status: int) -> bool:
        return any(status in allowed for allowed in self.ranges)


def stored_by_default(status: int) -> bool:
    """Everything but server errors (5xx) and 429: those may succeed when retried."""
    return status < 500 and status != 429


class HttpIdempotencyConfig(BaseModel):
    """How the HTTP middleware guards requests. Frozen; validated when built.

    - ``methods``: the guarded methods; others pass through untouched.
    - ``require_key``: a guarded request without the header gets a 400 instead
      of passing through.
    - ``scope``: called with the request (Starlette ``Request`` or aiohttp
      ``web.Request``), sync or async; its string becomes part of the key so
      tenants or users never share a key. Without it, every client shares one
      namespace: the same key from two clients is one request.
    - ``stored_statuses``: which response statuses are stored and replayed: a
      predicate, or status codes and ranges. Other responses are sent and the
      key released, so a retry runs again.
    - ``header_denylist``: response headers never stored nor replayed (besides
      hop-by-hop headers and Content-Length, which never are).
    - ``max_capture_bytes``: a response body larger than this is passed through
      as it comes, not held; like a streamed response it cannot be stored.
    - ``unstorable_responses``: what a response that cannot be stored (streamed,
      larger than ``max_capture_bytes``, or too large for an item even
      compressed) does to its key: ``"record"`` (the default) records the key as
      done, and duplicates get a 409 problem saying the response cannot be
      replayed, so the handler never runs twice; ``"release"`` releases the key,
      and a retry runs the handler again.
    - ``fail_open``: when the store cannot be reached, run the request without
      protection (with a logged warning) instead of answering 503.
    - ``key_prefix``: first part of the record key, ``{key_prefix}#{digest}``.
    - ``retry_after_seconds``: the ``Retry-After`` of a 409 for a request still running.
    - ``idempotency_config``: the engine's settings: record expiry, lease,
      ``wait_for_in_progress_seconds`` (wait for a running duplicate and replay
      it instead of answering 409), hash function, local cache.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    methods: frozenset[str] = frozenset({"POST", "PATCH"})
    require_key: bool = False
    scope: ScopeFunction | None = None
    stored_statuses: StatusPredicate = stored_by_default
    header_denylist: frozenset[str] = frozenset({"set-cookie"})
    max_capture_bytes: int = Field(default=DEFAULT_MAX_CAPTURE_BYTES, gt=0)
    unstorable_responses: Literal["record", "release"] = "record"
    fail_open: bool = False
    key_prefix: str = Field(default="http", min_length=1)
    retry_after_seconds: int = Field(default=1, ge=0)
    # A frozen dataclass, already validated when built: checked as an instance only.
    idempotency_config: InstanceOf[IdempotencyConfig] = Field(default_factory=IdempotencyConfig)

    if TYPE_CHECKING:
        # What type checkers see: every option with the types it accepts (collections
        # are normalised by the validators below), with or without the pydantic mypy
        # plugin. A test keeps these defaults equal to the fields'.
        def __init__(
            self,
            *,
            methods: Iterable[str] = frozenset({"POST", "PATCH"}),
            require_key: bool = False,
            scope: ScopeFunction | None = None,
            stored_statuses: StatusPredicate | int | range | Iterable[int | range] = (
                stored_by_default
            ),
            header_denylist: Iterable[str] = frozenset({"set-cookie"}),
            max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES,
            unstorable_responses: Literal["record", "release"] = "record",
            fail_open: bool = False,
            key_prefix: str = "http",
            retry_after_seconds: int = 1,
            idempotency_config: IdempotencyConfig = ...,
        ) -> None: ...
    else:

        def __init__(self, **data: Any) -> None:
            # Any keyword reaches pydantic, so a misspelt option unseen by a type checker
            # is IdempotencyConfigurationError too, not Python's TypeError.
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise IdempotencyConfigurationError(str(exc)) from exc

    @field_validator("methods", mode="before")
    @classmethod
    def _upper_case_methods(cls, methods: Any) -> Any:
        if isinstance(methods, str):
            raise ValueError("methods must be a collection of method names, not one string")
        if isinstance(methods, Iterable):
            methods = frozenset(str(method).upper() for method in methods)
            if not methods or not all(method.isalpha() for method in methods):
                raise ValueError("methods must be non-empty method names such as 'POST'")
        return methods

    @field_validator("header_denylist", mode="before")
    @classmethod
    def _lower_case_headers(cls, names: Any) -> Any:
        if isinstance(names, str):
            raise ValueError("header_denylist must be a collection of header names")
        if isinstance(names, Iterable):
            return frozenset(str(name).lower() for name in names)
        return names

    @field_validator("stored_statuses", mode="before")
    @classmethod
    def _statuses_to_predicate(cls, statuses: Any) -> Any:
        if callable(statuses):
            return statuses
        if isinstance(statuses, int | range):
            statuses = [statuses]
        if isinstance(statuses, Iterable) and not isinstance(statuses, str | bytes):
            codes = list(statuses)
            if all(isinstance(code, int | range) for code in codes):
                return StatusSet.of(*codes)
        raise ValueError("stored_statuses must be a predicate or status codes and ranges")

    @field_validator("idempotency_config")
    @classmethod
    def _no_payload_extraction(cls, config: IdempotencyConfig) -> IdempotencyConfig:
        if config.event_key_jmespath or config.payload_validation_jmespath:
            raise ValueError(
                "the HTTP middleware derives keys from the Idempotency-Key header and validates "
                "the request fingerprint; event_key_jmespath and payload_validation_jmespath "
                "must be empty"
            )
        return config

    def guards(self, method: str) -> bool:
        return method.upper() in self.methods

    def stores(self, status: int) -> bool:
        return bool(self.stored_statuses(status))


def build_engine(store: RecordStore, config: HttpIdempotencyConfig) -> IdempotencyEngine:
    """The engine one middleware instance runs every guarded request through.

    A response too large for an item even compressed is handled as
    ``unstorable_responses`` says, like a streamed one.
    """

    def unstorable(result: Any, error: IdempotencyError) -> Unstored[None]:
        return not_replayable(config, str(error))

    return IdempotencyEngine(
        store,
        config.idempotency_config,
        key_prefix=config.key_prefix,
        serializer=NoOpSerializer(),
        unstorable=unstorable,
    )


async def resolve_scope(config: HttpIdempotencyConfig, request: Any) -> str | None:
    """The request's key namespace from the configured callable; None without one."""
    if config.scope is None:
        return None
    value = config.scope(request)
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str):
        raise TypeError(f"the idempotency scope callable returned {type(value).__name__}, not str")
    return value


# --- identity ----------------------------------------------------------------------------


def request_fingerprint(method: str, path: str, query: str, body: bytes) -> dict[str, str]:
    """What makes a retry the same request: a different one under the same key gets a 422."""
    return {
        "method": method.upper(),
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


def key_data(key: str, scope: str | None) -> dict[str, str | None]:
    """What the engine derives the record key from: ``{prefix}#{hash of this}``.

    Unchanged since the first release, so records already stored still match.
    """
    return {"scope": scope, "key": key}


def call_identity(
    config: HttpIdempotencyConfig, *, key: str, scope: str | None, fingerprint: dict[str, str]
) -> CallIdentity:
    """A request's record key and payload hash, derived by the engine as for the middleware.

    For tools that name a request's record (the command line, tests); the
    middlewares leave it to ``engine.process_keyed``.
    """
    engine = build_engine(InMemoryStore(), config)  # identity needs no store
    identity = engine.identity_of(key_data(key, scope), fingerprint)
    if identity is None:  # unreachable: a parsed key is never empty
        raise IdempotencyKeyError(f"{HEADER_NAME} is empty")
    return identity


# --- responses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapturedResponse:
    """A complete response: what the engine stores and a replay sends."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_stored(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": [[name, value] for name, value in self.headers],
            "body": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_stored(cls, data: Any) -> CapturedResponse:
        """Read a stored response back; raises ``IdempotencySerializationError`` if malformed."""
        try:
            status = data["status"]
            headers = tuple((str(name), str(value)) for name, value in data["headers"])
            body = base64.b64decode(data["body"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise IdempotencySerializationError(f"stored response is malformed: {exc!r}") from exc
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise IdempotencySerializationError(f"stored response has status {status!r}")
        return cls(status=status, headers=headers, body=body)


def storable_headers(
    headers: Iterable[tuple[str, str]], denylist: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """The headers worth storing: no hop-by-hop, no Content-Length, nothing deny-listed."""
    headers = list(headers)
    excluded = UNREPLAYED_HEADERS | denylist | _connection_options(headers)
    return tuple((name, value) for name, value in headers if name.lower() not in excluded)


def replay_headers(stored: CapturedResponse, denylist: frozenset[str]) -> list[tuple[str, str]]:
    """A replay's headers: the stored ones, filtered again, plus ``Idempotent-Replayed``."""
    return [*storable_headers(stored.headers, denylist), (REPLAYED_HEADER, "true")]


def _connection_options(headers: Sequence[tuple[str, str]]) -> frozenset[str]:
    """Headers a Connection header names, which are hop-by-hop too."""
    return frozenset(
        option.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for option in value.split(",")
    )


@dataclass(frozen=True, slots=True)
class Problem:
    """An ``application/problem+json`` response (RFC 9457) the middleware answers with."""

    status: int
    detail: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        document = {
            "type": "about:blank",
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        return json.dumps(document).encode()

    def response_headers(self) -> list[tuple[str, str]]:
        return [("Content-Type", "application/problem+json"), *self.headers]


def missing_key_problem() -> Problem:
    return Problem(400, f"this request requires an {HEADER_NAME} header")


def invalid_key_problem(error: InvalidIdempotencyKeyError) -> Problem:
    return Problem(400, str(error))


# --- what the engine records -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassedOn:
    """A response the adapter could not hold: it reached the client as the app made it."""

    status: int
    reason: str


def record_for(
    config: HttpIdempotencyConfig, response: CapturedResponse | PassedOn | None
) -> dict[str, Any] | Unstored[None]:
    """What the engine's call returns for the app's response (None: the app made none).

    A stored status: the response, or for one that cannot be stored, what
    ``unstorable_responses`` says. Any other status (5xx, 429 by default)
    releases the key, since a retry may succeed.
    """
    if response is None:
        return Unstored(None, "the application sent no response")
    if not config.stores(response.status):
        return Unstored(None, f"status {response.status} is not stored")
    if isinstance(response, PassedOn):
        return not_replayable(config, response.reason)
    return response.to_stored()


def not_replayable(config: HttpIdempotencyConfig, reason: str) -> Unstored[None]:
    """A response that cannot be stored: the key recorded as done, or released."""
    if config.unstorable_responses == "release":
        return Unstored(None, reason)
    return Unstored(None, reason, record_as={UNREPLAYABLE_MARKER: reason})


def unreplayable_reason(stored: Any) -> str | None:
    """Why the recorded response cannot be replayed; None for a stored response."""
    if isinstance(stored, dict) and UNREPLAYABLE_MARKER in stored:
        return str(stored[UNREPLAYABLE_MARKER])
    return None


def over_capture_limit(config: HttpIdempotencyConfig) -> str:
    return f"the response body exceeds max_capture_bytes ({config.max_capture_bytes} bytes)"


STREAMED = "the response is streamed"


# --- answers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliverOwn:
    """Send the app's own response as it made it (Set-Cookie included), if not sent already.

    ``warning``, when set, is logged: the response was not stored, or could not be.
    """

    warning: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """Send a stored response again, marked ``Idempotent-Replayed: true``."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class PassThrough:
    """Fail open: run the app unprotected and let its response through; ``warning`` is logged."""

    warning: str


Answer = DeliverOwn | Replay | Problem | PassThrough
"""What a guarded request gets; each adapter renders these four and nothing else."""


def answer_for(result: Outcome[Any] | IdempotencyError, config: HttpIdempotencyConfig) -> Answer:
    """The HTTP answer to the engine's outcome, or to the error it raised.

    Raises the error when HTTP has no answer of its own for it (the app's own
    failure is the framework's to report).
    """
    if isinstance(result, IdempotencyError):
        return _answer_for_error(result, config)
    if not result.replayed:  # the app ran in this call: protected, unprotected or disabled
        if result.record is not None and not result.stored:
            return DeliverOwn(
                f"response not stored ({result.unstored_reason}); "
                "duplicates are told it cannot be replayed"
            )
        return DeliverOwn()
    reason = unreplayable_reason(result.value)
    if reason is not None:
        return Problem(
            409,
            f"the request with this {HEADER_NAME} was processed, but its response was not "
            f"stored ({reason}) and cannot be replayed",
        )
    stored = CapturedResponse.from_stored(result.value)
    headers = tuple(replay_headers(stored, config.header_denylist))
    return Replay(stored.status, headers, stored.body)


def _answer_for_error(error: IdempotencyError, config: HttpIdempotencyConfig) -> Answer:
    if error.function_ran:  # completion failed or the lease was lost: the response exists
        return DeliverOwn(f"response sent but not stored: {error}")
    retry_after = (("Retry-After", str(config.retry_after_seconds)),)
    if isinstance(error, IdempotencyValidationError):
        return Problem(
            422,
            f"this {HEADER_NAME} was used with a different request (method, path, query or body)",
        )
    if isinstance(error, IdempotencyAlreadyInProgressError | IdempotencyInconsistentStateError):
        return Problem(
            409, f"a request with this {HEADER_NAME} is still being processed", retry_after
        )
    if isinstance(error, IdempotencyPersistenceLayerError) and error.function_error is None:
        if config.fail_open:
            return PassThrough(f"idempotency store unavailable; runs unprotected: {error}")
        return Problem(503, "the idempotency store is unavailable", retry_after)
    raise error


async def answer_request(
    engine: IdempotencyEngine,
    config: HttpIdempotencyConfig,
    *,
    request_line: str,
    key: str,
    scope: str | None,
    fingerprint: dict[str, str],
    call: Call,
) -> Answer:
    """Run the app's ``call`` through the engine once per key; the answer to render.

    The answer's warning, if any, is logged with ``request_line`` (``"POST /orders"``).
    """
    try:
        outcome = await engine.process_keyed(key_data(key, scope), fingerprint, call)
    except IdempotencyError as error:
        answer = answer_for(error, config)
        if isinstance(answer, Problem) and answer.status == 503:
            logger.warning("%s: idempotency store unavailable: %s", request_line, error)
    else:
        answer = answer_for(outcome, config)
    if isinstance(answer, DeliverOwn | PassThrough) and answer.warning:
        logger.warning("%s: %s", request_line, answer.warning)
    return answer
