"""``Idempotency-Key`` for FastAPI, Starlette and other ASGI apps: a pure ASGI middleware.

App-wide::

    app.add_middleware(IdempotencyMiddleware, store=store, config=HttpIdempotencyConfig())

On some routes only (FastAPI), give their router the route class::

    router = APIRouter(route_class=idempotent_route_class(store=store))

A guarded request (POST and PATCH by default) carrying the header runs through
the idempotency engine: the request body is read and hashed, the app's response
is captured and stored once complete, then sent. A duplicate gets the stored
response with ``Idempotent-Replayed: true``. Responses larger than
``max_capture_bytes`` are streamed through as they come and not stored.

A client that disconnects while the app is handling its request cancels that
handling, which releases the key, so a retry runs again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idemstore.engine import CallIdentity, IdempotencyEngine, disabled_by_environment
from idemstore.errors import IdempotencyError, IdempotencyPersistenceLayerError
from idemstore.integrations._http import (
    HEADER_NAME,
    CapturedResponse,
    HttpIdempotencyConfig,
    InvalidIdempotencyKeyError,
    Problem,
    ResponseNotStored,
    build_engine,
    call_identity,
    invalid_key_problem,
    missing_key_problem,
    parse_idempotency_key,
    problem_for,
    replay_headers,
    request_fingerprint,
    resolve_scope,
    storable_headers,
    store_unavailable_problem,
)
from idemstore.outcome import Unstored
from idemstore.stores.contract import RecordStore

if TYPE_CHECKING:
    from fastapi.routing import APIRoute

__all__ = ["HttpIdempotencyConfig", "IdempotencyMiddleware", "idempotent_route_class"]

logger = logging.getLogger("idemstore.integrations")

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
        if (
            scope["type"] != "http"
            or not self.config.guards(scope["method"])
            or disabled_by_environment()
        ):
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
        identity = call_identity(self.config, key=key, scope=scope_value, fingerprint=fingerprint)
        exchange = _Exchange(self.app, self.config, scope, body, send)
        await exchange.run(self.engine, identity, receive)


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


class _Exchange:
    """One guarded request: its body replayed to the app, the app's response captured.

    The response is held until the engine has stored it, then sent; once it
    outgrows the capture limit it goes straight to the client instead. The app
    runs in a task of its own, so work it does after its response (background
    tasks) delays neither storing nor sending.
    """

    def __init__(
        self, app: ASGIApp, config: HttpIdempotencyConfig, scope: Scope, body: bytes, send: Send
    ) -> None:
        self.app = app
        self.config = config
        self.scope = _without_body_bypass(scope)
        self.body = body
        self.client_send = send
        self.body_delivered = False
        self.response_finished = asyncio.Event()
        """Set once the app has sent its whole response, held or streamed."""
        self.closed = asyncio.Event()
        """Set when the response is finished or the client is gone: the app's receive ends."""
        self.client_gone = False
        self.app_task: asyncio.Future[None] | None = None
        self.ran = False
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False
        self.response_complete = False

    # --- lifecycle --------------------------------------------------------------

    async def run(
        self, engine: IdempotencyEngine, identity: CallIdentity, receive: Receive
    ) -> None:
        work = asyncio.ensure_future(self.settle(engine, identity))
        watcher = asyncio.ensure_future(self.watch_disconnect(receive))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and self.client_gone and self.handling:
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
    def handling(self) -> bool:
        """Whether the app is still making its response."""
        return (
            self.app_task is not None
            and not self.app_task.done()
            and not self.response_finished.is_set()
        )

    async def watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone = not self.response_complete
                self.closed.set()
                return

    async def settle(self, engine: IdempotencyEngine, identity: CallIdentity) -> None:
        try:
            outcome = await engine.execute(identity, self.call)
        except IdempotencyPersistenceLayerError as exc:
            if self.ran:
                await self.deliver_despite(exc)
            elif self.config.fail_open:
                logger.warning(
                    "idempotency store unavailable; %s %s runs unprotected: %s",
                    self.scope["method"],
                    self.scope["path"],
                    exc,
                )
                await self.pass_through()
            else:
                logger.warning("idempotency store unavailable: %s", exc)
                await _send_problem(self.to_client, store_unavailable_problem(self.config))
        except IdempotencyError as exc:
            if self.ran:
                await self.deliver_despite(exc)
                return
            problem = problem_for(exc, self.config)
            if problem is None:
                raise
            await _send_problem(self.to_client, problem)
        else:
            if isinstance(outcome.value, ResponseNotStored):
                await self.deliver_unstored(outcome.value)
            elif outcome.executed:
                await self.send_captured()
            else:
                await self.send_replay(CapturedResponse.from_stored(outcome.value))

    # --- the engine's call --------------------------------------------------------

    async def call(self) -> dict[str, Any] | Unstored[ResponseNotStored]:
        """Run the app until its response is made; the response's stored form.

        ``Unstored`` (so the engine releases the key) when the response is
        streamed, missing or of a status not stored.
        """
        self.ran = True
        if self.client_gone:
            return _unstored(None, "the client disconnected before the request ran")
        app_task = self.app_task = asyncio.ensure_future(
            self.app(self.scope, self.receive, self.capture)
        )
        finished = asyncio.ensure_future(self.response_finished.wait())
        try:
            await asyncio.wait({app_task, finished}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            app_task.cancel()  # the engine's call is cancelled: so is the app
            await asyncio.wait({app_task})
            raise
        finally:
            finished.cancel()
        if not self.response_finished.is_set():
            app_task.result()  # the app's exception, raised before its response was made
        if self.streaming:
            limit = self.config.max_capture_bytes
            return _unstored(None, f"the response body exceeded {limit} bytes")
        if self.start is None:
            return _unstored(None, "the application sent no response")
        status = int(self.start["status"])
        if not self.config.stores(status):
            return _unstored(self.start, f"status {status} is not stored")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.start.get("headers", [])
        ]
        stored = CapturedResponse(
            status=status,
            headers=storable_headers(headers, self.config.header_denylist),
            body=b"".join(self.chunks),
        )
        return stored.to_stored()

    async def receive(self) -> Message:
        """The app's receive: the buffered body, then a disconnect once the exchange closes."""
        if not self.body_delivered:
            self.body_delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def capture(self, message: Message) -> None:
        """The app's send: hold the response, or stream it once past the capture limit."""
        if self.streaming:
            await self.to_client(message)
        elif message["type"] == "http.response.start":
            self.start = message
        elif message["type"] != "http.response.body":
            await self.stream_out()  # trailers or an extension: no longer a plain response
            await self.to_client(message)
        else:
            chunk = message.get("body", b"")
            self.chunks.append(chunk)
            self.size += len(chunk)
            more_body = message.get("more_body", False)
            if self.size > self.config.max_capture_bytes:
                await self.stream_out(more_body=more_body)
            elif not more_body:
                self.finish_response()

    async def stream_out(self, *, more_body: bool = True) -> None:
        """Send what was held and let the rest of the response through as it comes."""
        self.streaming = True
        if self.start is not None:
            await self.to_client(self.start)
        held, self.chunks = b"".join(self.chunks), []
        await self.to_client({"type": "http.response.body", "body": held, "more_body": more_body})

    def finish_response(self) -> None:
        self.response_finished.set()
        self.closed.set()

    # --- answers --------------------------------------------------------------------

    async def to_client(self, message: Message) -> None:
        await self.client_send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_complete = True
            if self.streaming:
                self.finish_response()

    async def send_captured(self) -> None:
        """The app's own response, as it made it (Set-Cookie included)."""
        assert self.start is not None  # call() returned, so the app started a response
        await self.to_client(self.start)
        body = b"".join(self.chunks)
        await self.to_client({"type": "http.response.body", "body": body, "more_body": False})

    async def deliver_unstored(self, signal: ResponseNotStored) -> None:
        if self.streaming:
            logger.warning(
                "%s %s: response streamed through and not stored (%s); idempotency key released",
                self.scope["method"],
                self.scope["path"],
                signal.reason,
            )
        if signal.response is not None:
            await self.send_captured()

    async def deliver_despite(self, error: IdempotencyError) -> None:
        """The app made its response but it could not be stored: send it all the same."""
        if self.start is None or self.streaming or not self.response_finished.is_set():
            raise error
        logger.warning(
            "%s %s: response sent but not stored: %s",
            self.scope["method"],
            self.scope["path"],
            error,
        )
        await self.send_captured()

    async def send_replay(self, stored: CapturedResponse) -> None:
        headers = replay_headers(stored, self.config.header_denylist)
        await _send_response(self.to_client, stored.status, headers, stored.body)

    async def pass_through(self) -> None:
        """Fail open: the app answers the client directly, unprotected."""
        await self.app(self.scope, self.receive, self.to_client)


# --- plumbing --------------------------------------------------------------------------


def _unstored(response: Any, reason: str) -> Unstored[ResponseNotStored]:
    return Unstored(ResponseNotStored(response, reason), reason)


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
