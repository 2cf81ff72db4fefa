"""``Idempotency-Key`` for FastAPI, Starlette and other ASGI apps: a pure ASGI middleware.

App-wide::

    app.add_middleware(IdempotencyMiddleware, store=store, config=HttpIdempotencyConfig())

On some routes only (FastAPI), give their router the route class::

    router = APIRouter(route_class=idempotent_route_class(store=store))

A guarded request (POST and PATCH by default) carrying the header runs through
the idempotency engine: the request body is read and hashed, the app's response
is held and stored once complete, then sent. A duplicate gets the stored
response with ``Idempotent-Replayed: true``. A streamed response (its first
body message says more is coming) and a body larger than ``max_capture_bytes``
go to the client as the app sends them; they cannot be stored, and
``unstorable_responses`` says what that does to the key.

A client that disconnects while the app is handling its request cancels that
handling, which releases the key, so a retry runs again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from enum import Enum, auto
from typing import TYPE_CHECKING, Any, assert_never

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idemstore.engine import IdempotencyEngine
from idemstore.integrations._http import (
    HEADER_NAME,
    STREAMED,
    Answer,
    CapturedResponse,
    DeliverOwn,
    HttpIdempotencyConfig,
    InvalidIdempotencyKeyError,
    PassedOn,
    PassThrough,
    Problem,
    Replay,
    answer_request,
    build_engine,
    invalid_key_problem,
    missing_key_problem,
    over_capture_limit,
    parse_idempotency_key,
    record_for,
    request_fingerprint,
    resolve_scope,
    storable_headers,
)
from idemstore.outcome import Unstored
from idemstore.stores.contract import RecordStore

if TYPE_CHECKING:
    from fastapi.routing import APIRoute

__all__ = ["HttpIdempotencyConfig", "IdempotencyMiddleware", "idempotent_route_class"]

_HEADER_BYTES = HEADER_NAME.lower().encode()
# Extensions that let an app hand the body to the server, out of the middleware's sight.
_BODY_BYPASS_EXTENSIONS = ("http.response.pathsend", "http.response.zerocopysend")


class IdempotencyMiddleware:
    """Runs each guarded request at most once per ``Idempotency-Key``.

    One engine per middleware instance; ``store`` and ``config`` are only read.
    """

    def __init__(
        self, app: ASGIApp, *, store: RecordStore, config: HttpIdempotencyConfig | None = None
    ) -> None:
        self.app = app
        self.config = config or HttpIdempotencyConfig()
        self.engine: IdempotencyEngine = build_engine(store, self.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.config.guards(scope["method"]):
            await self.app(scope, receive, send)
            return
        try:
            key = parse_idempotency_key(_header_values(scope, _HEADER_BYTES))
        except InvalidIdempotencyKeyError as exc:
            await _send_problem(send, invalid_key_problem(exc))
            return
        if key is None:
            if self.config.require_key:
                await _send_problem(send, missing_key_problem())
            else:
                await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its whole body
        request = Request(scope, _replaying(body)) if self.config.scope is not None else None
        scope_value = await resolve_scope(self.config, request)
        fingerprint = request_fingerprint(
            scope["method"], scope["path"], scope["query_string"].decode("latin-1"), body
        )
        exchange = _Exchange(self.app, self.config, scope, body, send)
        answering = functools.partial(
            answer_request,
            self.engine,
            self.config,
            request_line=f"{scope['method']} {scope['path']}",
            key=key,
            scope=scope_value,
            fingerprint=fingerprint,
            call=exchange.call,
        )
        await exchange.run(answering, receive)


def idempotent_route_class(
    *, store: RecordStore, config: HttpIdempotencyConfig | None = None
) -> type[APIRoute]:
    """A FastAPI route class whose routes are guarded, for idempotency on some routes only.

    ``APIRouter(route_class=idempotent_route_class(store=store))`` guards the
    router's routes; ``router.add_api_route(..., route_class_override=...)`` a
    single one. Each route wraps its own ``IdempotencyMiddleware``; keys share
    one namespace across routes, so reusing a key on another route is a 422.
    """
    from fastapi.routing import APIRoute

    http_config = config or HttpIdempotencyConfig()

    class IdempotentAPIRoute(APIRoute):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Around handle(), the one entry point for direct and included routes alike.
            self._guarded = IdempotencyMiddleware(super().handle, store=store, config=http_config)

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self._guarded(scope, receive, send)

    return IdempotentAPIRoute


class Phase(Enum):
    """Where one guarded exchange stands; ``_Exchange.advance`` is the only way between them."""

    WAITING_FOR_APP = auto()
    """The app runs, or is yet to: nothing of its response has come."""
    HOLDING = auto()
    """Its response start is held, waiting for the body."""
    STREAMING = auto()
    """Its response goes to the client as the app sends it (streamed, or unprotected)."""
    HELD = auto()
    """The app has made its whole response; what the client lacks of it (all of it, or the
    last message of a stream) is held until the engine has recorded the key."""
    FINISHED = auto()
    """The client has a whole response: the app's, a replay or a problem."""
    CLIENT_GONE = auto()
    """The client left before it had a whole response."""


class Event(Enum):
    """What moves an exchange from one phase to the next."""

    START = auto()
    """The app sent ``http.response.start``."""
    STREAM = auto()
    """The app sent a message that goes straight to the client, more to come."""
    END = auto()
    """The app sent the last message of its response."""
    PASS_THROUGH = auto()
    """Fail open: the app's response goes straight to the client from its start."""
    SENT = auto()
    """The middleware sent what the client lacked: the held response, a replay or a problem."""
    DISCONNECT = auto()
    """The client went away."""


_TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.WAITING_FOR_APP, Event.START): Phase.HOLDING,
    (Phase.WAITING_FOR_APP, Event.STREAM): Phase.STREAMING,
    (Phase.WAITING_FOR_APP, Event.PASS_THROUGH): Phase.STREAMING,
    (Phase.WAITING_FOR_APP, Event.SENT): Phase.FINISHED,
    (Phase.WAITING_FOR_APP, Event.DISCONNECT): Phase.CLIENT_GONE,
    (Phase.HOLDING, Event.END): Phase.HELD,
    (Phase.HOLDING, Event.STREAM): Phase.STREAMING,
    (Phase.HOLDING, Event.DISCONNECT): Phase.CLIENT_GONE,
    (Phase.STREAMING, Event.STREAM): Phase.STREAMING,
    (Phase.STREAMING, Event.END): Phase.HELD,
    (Phase.STREAMING, Event.DISCONNECT): Phase.CLIENT_GONE,
    (Phase.HELD, Event.SENT): Phase.FINISHED,
    (Phase.HELD, Event.DISCONNECT): Phase.HELD,  # made already: recorded for the retry
    (Phase.FINISHED, Event.DISCONNECT): Phase.FINISHED,
    (Phase.CLIENT_GONE, Event.DISCONNECT): Phase.CLIENT_GONE,
}
"""Every move an exchange may make; any other is a bug, or an app breaking the ASGI protocol."""

_RESPONSE_MADE = frozenset({Phase.HELD, Phase.FINISHED})
"""The app's response is complete (or another answer was sent): the engine's call may return."""
_CLOSED = _RESPONSE_MADE | {Phase.CLIENT_GONE}
"""Nothing more is coming from the client: the app's receive reports a disconnect."""


class _Exchange:
    """One guarded request: its body replayed to the app, the app's response held or
    passed through, and the engine's answer rendered.

    A whole response is held until the engine has recorded it, then sent; a
    streamed one goes to the client as it comes but for its last message, so a
    client that has the whole response finds its key recorded. The app runs in
    a task of its own, so work it does after its response (background tasks)
    delays neither recording nor sending.
    """

    def __init__(
        self, app: ASGIApp, config: HttpIdempotencyConfig, scope: Scope, body: bytes, send: Send
    ) -> None:
        self.app = app
        self.config = config
        self.scope = _without_body_bypass(scope)
        self.body = body
        self.client_send = send
        self.phase = Phase.WAITING_FOR_APP
        self.made = asyncio.Event()
        """Set on entering a phase of ``_RESPONSE_MADE``."""
        self.closed = asyncio.Event()
        """Set on entering a phase of ``_CLOSED``."""
        self.body_delivered = False
        self.app_task: asyncio.Future[None] | None = None
        self.start: Message | None = None
        self.unsent: list[Message] = []
        """The app's messages held back from the client."""
        self.passed_on: str | None = None
        """Why the response cannot be stored, when it cannot."""

    def advance(self, event: Event) -> None:
        try:
            self.phase = _TRANSITIONS[self.phase, event]
        except KeyError:
            raise RuntimeError(
                f"unexpected {event.name.lower()} while {self.phase.name.lower()}: "
                "the application broke the ASGI protocol"
            ) from None
        if self.phase in _RESPONSE_MADE:
            self.made.set()
        if self.phase in _CLOSED:
            self.closed.set()

    # --- lifecycle --------------------------------------------------------------

    async def run(self, answering: Callable[[], Awaitable[Answer]], receive: Receive) -> None:
        work = asyncio.ensure_future(self.answer(answering))
        watcher = asyncio.ensure_future(self.watch_disconnect(receive))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and self.abandoned:
                # Nobody waits for this response any more: stopping the app makes
                # the engine release the key, so a retry runs again.
                work.cancel()
                await asyncio.wait({work})
                if work.cancelled():
                    return
            await work
            if self.app_task is not None:
                await self.app_task  # what the app does after its response
        finally:
            for task in (watcher, work, self.app_task):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()  # we are cancelled: so is the request's work
                    await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # already raised or superseded: never "unretrieved"

    @property
    def abandoned(self) -> bool:
        """The client left while the app was still making its response."""
        return (
            self.phase is Phase.CLIENT_GONE
            and self.app_task is not None
            and not self.app_task.done()
        )

    async def watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.advance(Event.DISCONNECT)
                return

    async def answer(self, answering: Callable[[], Awaitable[Answer]]) -> None:
        answer = await answering()
        if isinstance(answer, DeliverOwn):
            await self.send_held()
        elif isinstance(answer, Replay):
            await self.send_whole(answer.status, list(answer.headers), answer.body)
        elif isinstance(answer, Problem):
            await self.send_whole(answer.status, answer.response_headers(), answer.body())
        elif isinstance(answer, PassThrough):  # fail open: the app answers unprotected
            self.advance(Event.PASS_THROUGH)
            await self.run_app()
            await self.send_held()
        else:
            assert_never(answer)

    # --- the engine's call --------------------------------------------------------

    async def call(self) -> dict[str, Any] | Unstored[None]:
        """Run the app until its response is made; what the engine records for it."""
        if self.phase is Phase.CLIENT_GONE:
            return Unstored(None, "the client disconnected before the request ran")
        if not await self.run_app():
            return Unstored(None, "the application returned before its response was complete")
        return record_for(self.config, self.response())

    async def run_app(self) -> bool:
        """Start the app; whether it made its whole response (False: it returned first).

        Raises what the app raised before its response was made.
        """
        app_task = self.app_task = asyncio.ensure_future(
            self.app(self.scope, self.receive, self.app_send)
        )
        made = asyncio.ensure_future(self.made.wait())
        try:
            await asyncio.wait({app_task, made}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            app_task.cancel()  # our caller is cancelled: so is the app
            await asyncio.wait({app_task})
            raise
        finally:
            made.cancel()
        if not self.made.is_set():
            app_task.result()
            return False
        return True

    def response(self) -> CapturedResponse | PassedOn | None:
        if self.start is None:
            return None
        status = int(self.start["status"])
        if self.passed_on is not None:
            return PassedOn(status, self.passed_on)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.start.get("headers", [])
        ]
        return CapturedResponse(
            status=status,
            headers=storable_headers(headers, self.config.header_denylist),
            body=self.unsent[-1].get("body", b""),
        )

    async def receive(self) -> Message:
        """The app's receive: the buffered body, then a disconnect once the exchange closes."""
        if not self.body_delivered:
            self.body_delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def app_send(self, message: Message) -> None:
        """The app's send: hold a whole response, or pass a streamed one on as it comes."""
        kind = message["type"]
        if self.phase is Phase.CLIENT_GONE:
            return  # nobody to send to; the app is being stopped
        if _last(message):
            size = len(message.get("body", b""))
            if self.phase is Phase.HOLDING and size > self.config.max_capture_bytes:
                # Held all the same (the app made it whole), but not stored.
                self.passed_on = over_capture_limit(self.config)
            self.advance(Event.END)  # first: it refuses a message after the end
            self.unsent.append(message)
        elif kind == "http.response.start" and self.phase is Phase.WAITING_FOR_APP:
            self.start = message
            self.unsent.append(message)
            self.advance(Event.START)
        else:  # a body part, trailers or an extension: no longer a response to hold
            if self.phase is not Phase.STREAMING:
                self.passed_on = STREAMED if kind == "http.response.body" else f"{kind} was sent"
            self.advance(Event.STREAM)
            unsent, self.unsent = self.unsent, []
            for held in (*unsent, message):
                await self.client_send(held)

    # --- answers --------------------------------------------------------------------

    async def send_held(self) -> None:
        """What the client lacks of the app's own response, as the app made it."""
        if self.phase is not Phase.HELD:
            return  # the app made no whole response, or the client is gone
        unsent, self.unsent = self.unsent, []
        for message in unsent:
            await self.client_send(message)
        self.advance(Event.SENT)

    async def send_whole(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        await _send_response(self.client_send, status, headers, body)
        if self.phase is Phase.WAITING_FOR_APP:  # else the client is gone
            self.advance(Event.SENT)


# --- plumbing --------------------------------------------------------------------------


def _last(message: Message) -> bool:
    """Whether an app's message ends its response."""
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnects first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replaying(body: bytes) -> Receive:
    """A receive that gives the buffered body once, then reports a disconnect."""
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _without_body_bypass(scope: Scope) -> Scope:
    extensions = scope.get("extensions") or {}
    if not any(name in extensions for name in _BODY_BYPASS_EXTENSIONS):
        return scope
    kept = {
        name: value for name, value in extensions.items() if name not in _BODY_BYPASS_EXTENSIONS
    }
    return {**scope, "extensions": kept}


async def _send_response(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
    ]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_problem(send: Send, problem: Problem) -> None:
    await _send_response(send, problem.status, problem.response_headers(), problem.body())
