"""``Idempotency-Key`` for aiohttp: a middleware, and ``setup`` with typed app keys.

::

    app = web.Application()
    setup(app, store=store, config=HttpIdempotencyConfig())

or ``web.Application(middlewares=[idempotency_middleware(store=store)])``.

A guarded request (POST and PATCH by default) carrying the header runs through
the idempotency engine. The handler's ``web.Response`` is stored once made and
replayed to duplicates with ``Idempotent-Replayed: true``; a raised
``web.HTTPException`` counts as the response it is. A response the middleware
cannot hold (a ``StreamResponse`` the handler prepared and wrote itself, which
reached the client as it was written, a ``FileResponse``, a streamed payload, a
body over ``max_capture_bytes``) is passed on and not stored;
``unstorable_responses`` says what that does to the key.

The request body is read (``await request.read()``) to fingerprint it;
handlers read it again with ``read()``, ``text()``, ``json()`` or ``post()``
for url-encoded forms. Run the app with ``handler_cancellation=True``
(``web.run_app``, ``web.AppRunner``) so that a client disconnecting mid-request
cancels its handler, which releases the key; aiohttp lets handlers run on
otherwise, and the response they make is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from aiohttp import web
from multidict import CIMultiDict

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
    from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "CONFIG_KEY",
    "STORE_KEY",
    "HttpIdempotencyConfig",
    "idempotency_middleware",
    "setup",
]

STORE_KEY = web.AppKey("idemstore_store", RecordStore)
"""The store ``setup`` guards the app with, for handlers that want it too."""
CONFIG_KEY = web.AppKey("idemstore_http_config", HttpIdempotencyConfig)
"""The configuration ``setup`` guards the app with."""


def setup(
    app: web.Application, *, store: RecordStore, config: HttpIdempotencyConfig | None = None
) -> None:
    """Guard ``app``: add the middleware (innermost so far) and record store and config.

    The store stays the caller's to close.
    """
    http_config = config or HttpIdempotencyConfig()
    app[STORE_KEY] = store
    app[CONFIG_KEY] = http_config
    app.middlewares.append(idempotency_middleware(store=store, config=http_config))


def idempotency_middleware(
    *, store: RecordStore, config: HttpIdempotencyConfig | None = None
) -> Middleware:
    """A middleware running each guarded request at most once per ``Idempotency-Key``."""
    http_config = config or HttpIdempotencyConfig()
    engine = build_engine(store, http_config)

    @web.middleware
    async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not http_config.guards(request.method):
            return await handler(request)
        try:
            key = parse_idempotency_key(request.headers.getall(HEADER_NAME, []))
        except InvalidIdempotencyKeyError as exc:
            return _problem_response(invalid_key_problem(exc))
        if key is None:
            if http_config.require_key:
                return _problem_response(missing_key_problem())
            return await handler(request)
        body = await request.read()
        exchange = _Exchange(http_config, request, handler)
        answer = await answer_request(
            engine,
            http_config,
            request_line=f"{request.method} {request.path}",
            key=key,
            scope=await resolve_scope(http_config, request),
            fingerprint=request_fingerprint(
                request.method, request.path, request.query_string, body
            ),
            call=exchange.call,
        )
        return await exchange.render(answer)

    return idempotency


class _Exchange:
    """One guarded request: the handler run through the engine, its response kept."""

    def __init__(self, config: HttpIdempotencyConfig, request: web.Request, handler: Handler):
        self.config = config
        self.request = request
        self.handler = handler
        self.response: web.StreamResponse | None = None
        self.raised: web.HTTPException | None = None

    async def call(self) -> dict[str, Any] | Unstored[None]:
        """Run the handler; what the engine records for its response."""
        try:
            response = await self.handler(self.request)
        except web.HTTPException as exc:
            self.raised = exc
            response = exc
        self.response = response
        return record_for(self.config, self.held(response))

    def held(self, response: web.StreamResponse) -> CapturedResponse | PassedOn:
        """The response in stored form, or why it cannot be held."""
        if response.prepared or not isinstance(response, web.Response):
            return PassedOn(response.status, STREAMED)
        body = response.body
        if body is None:
            body = b""
        if not isinstance(body, bytes | bytearray):
            return PassedOn(response.status, STREAMED)
        if len(body) > self.config.max_capture_bytes:
            return PassedOn(response.status, over_capture_limit(self.config))
        headers = storable_headers(response.headers.items(), self.config.header_denylist)
        return CapturedResponse(status=response.status, headers=headers, body=bytes(body))

    async def render(self, answer: Answer) -> web.StreamResponse:
        if isinstance(answer, DeliverOwn):
            return self.deliver()
        if isinstance(answer, Replay):
            headers = CIMultiDict(answer.headers)
            return web.Response(status=answer.status, body=answer.body, headers=headers)
        if isinstance(answer, Problem):
            return _problem_response(answer)
        if isinstance(answer, PassThrough):  # fail open: the handler answers unprotected
            return await self.handler(self.request)
        assert_never(answer)

    def deliver(self) -> web.StreamResponse:
        """The handler's own response, as it made it (cookies included)."""
        if self.raised is not None:
            raise self.raised
        assert self.response is not None  # the handler ran and returned
        return self.response


def _problem_response(problem: Problem) -> web.Response:
    return web.Response(
        status=problem.status, body=problem.body(), headers=CIMultiDict(problem.response_headers())
    )
