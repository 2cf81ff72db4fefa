"""``Idempotency-Key`` for aiohttp: a middleware, and ``setup`` with typed app keys.

::

    app = web.Application()
    setup(app, store=store, config=HttpIdempotencyConfig())

or ``web.Application(middlewares=[idempotency_middleware(store=store)])``.

A guarded request (POST and PATCH by default) carrying the header runs through
the idempotency engine. The handler's ``web.Response`` is stored once made and
replayed to duplicates with ``Idempotent-Replayed: true``; a raised
``web.HTTPException`` counts as the response it is. A response the middleware
cannot hold (a ``StreamResponse`` the handler prepared and wrote itself, a
``FileResponse``, a streamed payload, a body over ``max_capture_bytes``) is
passed on, not stored, and the key released.

The request body is read (``await request.read()``) to fingerprint it;
handlers read it again with ``read()``, ``text()``, ``json()`` or ``post()``
for url-encoded forms. Run the app with ``handler_cancellation=True``
(``web.run_app``, ``web.AppRunner``) so that a client disconnecting mid-request
cancels its handler, which releases the key; aiohttp lets handlers run on
otherwise, and the response they make is stored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from idemstore.engine import CallIdentity, IdempotencyEngine, disabled_by_environment
from idemstore.errors import IdempotencyError, IdempotencyPersistenceLayerError
from idemstore.integrations._http import (
    HEADER_NAME,
    CapturedResponse,
    HttpIdempotencyConfig,
    InvalidIdempotencyKeyError,
    Problem,
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
    from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "CONFIG_KEY",
    "STORE_KEY",
    "HttpIdempotencyConfig",
    "idempotency_middleware",
    "setup",
]

logger = logging.getLogger("idemstore.integrations")

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
        if not http_config.guards(request.method) or disabled_by_environment():
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
        scope_value = await resolve_scope(http_config, request)
        fingerprint = request_fingerprint(request.method, request.path, request.query_string, body)
        identity = call_identity(http_config, key=key, scope=scope_value, fingerprint=fingerprint)
        return await _Exchange(http_config, request, handler).settle(engine, identity)

    return idempotency


class _Exchange:
    """One guarded request: the handler run through the engine, its response kept."""

    def __init__(self, config: HttpIdempotencyConfig, request: web.Request, handler: Handler):
        self.config = config
        self.request = request
        self.handler = handler
        self.ran = False
        self.response: web.StreamResponse | None = None
        self.raised: web.HTTPException | None = None

    async def settle(self, engine: IdempotencyEngine, identity: CallIdentity) -> web.StreamResponse:
        try:
            outcome = await engine.execute(identity, self.call)
        except IdempotencyPersistenceLayerError as exc:
            if self.ran:
                return self.deliver_despite(exc)
            if self.config.fail_open:
                logger.warning(
                    "idempotency store unavailable; %s %s runs unprotected: %s",
                    self.request.method,
                    self.request.path,
                    exc,
                )
                return await self.handler(self.request)
            logger.warning("idempotency store unavailable: %s", exc)
            return _problem_response(store_unavailable_problem(self.config))
        except IdempotencyError as exc:
            if self.ran:
                return self.deliver_despite(exc)
            problem = problem_for(exc, self.config)
            if problem is None:
                raise
            return _problem_response(problem)
        if outcome.executed:
            return self.deliver()
        return self.replay(CapturedResponse.from_stored(outcome.value))

    async def call(self) -> dict[str, Any] | Unstored[None]:
        """Run the handler; its response's stored form, or ``Unstored``."""
        self.ran = True
        try:
            response = await self.handler(self.request)
        except web.HTTPException as exc:
            self.raised = exc
            response = exc
        self.response = response
        captured = self.capture(response)
        if isinstance(captured, str):
            logger.warning(
                "%s %s: response passed on and not stored (%s); idempotency key released",
                self.request.method,
                self.request.path,
                captured,
            )
            return Unstored(None, captured)
        if not self.config.stores(captured.status):
            return Unstored(None, f"status {captured.status} is not stored")
        return captured.to_stored()

    def capture(self, response: web.StreamResponse) -> CapturedResponse | str:
        """The response in stored form, or why it cannot be held."""
        if response.prepared or not isinstance(response, web.Response):
            return "the handler streams its response"
        body = response.body
        if body is None:
            body = b""
        if not isinstance(body, bytes | bytearray):
            return "the response body is a stream"
        if len(body) > self.config.max_capture_bytes:
            return f"the response body exceeded {self.config.max_capture_bytes} bytes"
        headers = storable_headers(response.headers.items(), self.config.header_denylist)
        return CapturedResponse(status=response.status, headers=headers, body=bytes(body))

    def deliver(self) -> web.StreamResponse:
        """The handler's own response, as it made it (cookies included)."""
        if self.raised is not None:
            raise self.raised
        assert self.response is not None  # the handler ran and returned
        return self.response

    def deliver_despite(self, error: IdempotencyError) -> web.StreamResponse:
        """The handler made its response but it could not be stored: give it all the same."""
        if self.response is None:
            raise error
        logger.warning(
            "%s %s: response sent but not stored: %s", self.request.method, self.request.path, error
        )
        return self.deliver()

    def replay(self, stored: CapturedResponse) -> web.Response:
        headers = CIMultiDict(replay_headers(stored, self.config.header_denylist))
        return web.Response(status=stored.status, body=stored.body, headers=headers)


def _problem_response(problem: Problem) -> web.Response:
    return web.Response(
        status=problem.status, body=problem.body(), headers=CIMultiDict(problem.response_headers())
    )
