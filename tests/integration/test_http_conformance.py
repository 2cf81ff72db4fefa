"""Both ``Idempotency-Key`` middlewares behave the same: one suite, run on each framework.

Each test gets the same small app written for ASGI (FastAPI) and for aiohttp,
guarded by the framework's middleware, with its records in a fresh table of
the local DynamoDB-protocol server, and drives it with one HTTP client. ASGI
apps run in process (httpx's ASGI transport) unless a test needs a real
connection (streaming, disconnects): then uvicorn serves them on loopback.
aiohttp apps are always served on loopback, by aiohttp's own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
import pytest_asyncio
import uvicorn
from aiobotocore.config import AioConfig
from aiohttp import web
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp

import idemstore.engine
from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    IdempotencyItemNotFoundError,
    RecordStatus,
    create_table,
    idempotent_function,
)
from idemstore.engine import IdempotencyWarning
from idemstore.integrations import aiohttp as aiohttp_integration
from idemstore.integrations._http import call_identity, request_fingerprint
from idemstore.integrations.asgi import HttpIdempotencyConfig, IdempotencyMiddleware
from idemstore.stores.contract import RecordStore
from idemstore.testing import MotoEndpoint, RequestLog, isolated_session

KEY = "order-7f3a"
REPLAYED = "idempotent-replayed"
BINARY_BODY = bytes(range(256)) * 64
LARGE_BODY = b"".join(b"line %07d of a compressible report\n" % n for n in range(10_500))
"""Just under the default capture limit; stored compressed."""
HUGE_BODY = random.Random(600).randbytes(600 * 1024)
"""600 KB that does not compress: too large for an item whichever way it is stored."""
FIRST_CHUNK = b"x" * 600

# One event loop, table and store for the module (a table per test costs more than the
# test): each test keeps to keys of its own through a key prefix of its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")


class Handlers:
    """What the app's handlers did, and knobs the tests turn."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.slow_seconds = 0.2
        self.slow_started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.resume_stream = asyncio.Event()


def order(handlers: Handlers, tenant: str | None, body: Any) -> dict[str, Any]:
    handlers.runs["orders"] += 1
    return {"order": handlers.runs["orders"], "tenant": tenant, "body": body}


async def slow(handlers: Handlers) -> dict[str, int]:
    handlers.runs["slow"] += 1
    handlers.slow_started.set()
    try:
        await asyncio.sleep(handlers.slow_seconds)
    except asyncio.CancelledError:
        handlers.cancelled.set()
        raise
    return {"slow": handlers.runs["slow"]}


def counted(handlers: Handlers, name: str) -> None:
    handlers.runs[name] += 1
    if name == "raises":
        raise RuntimeError("handler failed")


# --- the app, twice --------------------------------------------------------------------


def asgi_app(handlers: Handlers) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    async def create_order(request: Request, response: Response) -> dict[str, Any]:
        document = order(handlers, request.headers.get("x-tenant"), await request.json())
        response.status_code = 201
        response.set_cookie("session", "s3cr3t")
        response.headers["X-Order-Count"] = str(handlers.runs["orders"])
        return document

    @app.get("/orders")
    async def list_orders() -> dict[str, int]:
        handlers.runs["list"] += 1
        return {"listed": handlers.runs["list"]}

    @app.post("/slow")
    async def slow_order() -> dict[str, int]:
        return await slow(handlers)

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        counted(handlers, "stream")

        async def chunks() -> AsyncIterator[bytes]:
            yield FIRST_CHUNK
            await handlers.resume_stream.wait()
            yield b"y" * 600

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/{name}")
    async def plain(name: str) -> Response:
        counted(handlers, name)
        if name in BODIES:
            return Response(BODIES[name], media_type="application/octet-stream")
        return JSONResponse({"error": name}, status_code=STATUSES[name])

    return app


def aiohttp_app(handlers: Handlers) -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/orders")
    async def create_order(request: web.Request) -> web.Response:
        document = order(handlers, request.headers.get("X-Tenant"), await request.json())
        count = str(handlers.runs["orders"])
        response = web.json_response(document, status=201, headers={"X-Order-Count": count})
        response.set_cookie("session", "s3cr3t")
        return response

    @routes.get("/orders")
    async def list_orders(request: web.Request) -> web.Response:
        handlers.runs["list"] += 1
        return web.json_response({"listed": handlers.runs["list"]})

    @routes.post("/slow")
    async def slow_order(request: web.Request) -> web.Response:
        return web.json_response(await slow(handlers))

    @routes.post("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        counted(handlers, "stream")
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(FIRST_CHUNK)
        await handlers.resume_stream.wait()
        await response.write(b"y" * 600)
        await response.write_eof()
        return response

    @routes.post("/{name}")
    async def plain(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        counted(handlers, name)
        if name in BODIES:
            return web.Response(body=BODIES[name], content_type="application/octet-stream")
        if name == "not-found":  # raised, as aiohttp handlers often answer: stored
            raise web.HTTPNotFound(text="no such thing")
        if name == "too-many":  # raised, and not stored
            raise web.HTTPTooManyRequests(text="slow down")
        return web.json_response({"error": name}, status=STATUSES[name])

    app = web.Application()
    app.add_routes(routes)
    return app


BODIES = {"binary": BINARY_BODY, "large": LARGE_BODY, "huge": HUGE_BODY}
STATUSES = {"not-found": 404, "server-error": 503, "too-many": 429}


# --- serving -------------------------------------------------------------------------------


@asynccontextmanager
async def uvicorn_serving(app: ASGIApp) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise why
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def aiohttp_serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port, cancelling handlers whose client left."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Guarded:
    """The test app behind a middleware, and a client for it."""

    client: httpx.AsyncClient
    handlers: Handlers
    key_prefix: str

    async def post(
        self, path: str, body: bytes = b"", *, key: str | None = KEY, **headers: str
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json", **headers}
        if key is not None:
            sent["Idempotency-Key"] = key
        return await self.client.post(path, content=body, headers=sent)

    def record_key(
        self, path: str, body: bytes = b"", *, key: str = KEY, scope: str | None = None
    ) -> str:
        config = HttpIdempotencyConfig(key_prefix=self.key_prefix)
        fingerprint = request_fingerprint("POST", path, "", body)
        return call_identity(config, key=key, scope=scope, fingerprint=fingerprint).key


class Serve(Protocol):
    def __call__(
        self,
        store: RecordStore,
        config: HttpIdempotencyConfig | None = None,
        *,
        loopback: bool = False,
    ) -> AbstractAsyncContextManager[Guarded]: ...


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def table(moto_server: MotoEndpoint) -> AsyncIterator[AsyncDynamoStore]:
    """The module's table, on the session's local DynamoDB-protocol server."""
    store = moto_server.store(f"idemstore-http-{uuid.uuid4().hex[:12]}")
    await create_table(store)
    try:
        yield store
    finally:
        await store.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def requests(table: AsyncDynamoStore) -> AsyncIterator[RequestLog]:
    """The requests the module's store sends during one test."""
    client = await table.client()
    log = RequestLog().attach(client)
    yield log
    log.detach(client)


@pytest.fixture(params=["asgi", "aiohttp"])
def serve(request: pytest.FixtureRequest) -> Serve:
    """Serves the test app of one framework behind its middleware."""
    framework: str = request.param

    @asynccontextmanager
    async def serving(
        store: RecordStore, config: HttpIdempotencyConfig | None = None, *, loopback: bool = False
    ) -> AsyncIterator[Guarded]:
        handlers = Handlers()
        prefix = f"http-{uuid.uuid4().hex[:12]}"
        config = (config or HttpIdempotencyConfig()).model_copy(update={"key_prefix": prefix})
        if framework == "aiohttp":
            app = aiohttp_app(handlers)
            aiohttp_integration.setup(app, store=store, config=config)
            async with aiohttp_serving(app) as url, httpx.AsyncClient(base_url=url) as client:
                yield Guarded(client, handlers, prefix)
            return
        asgi = asgi_app(handlers)
        asgi.add_middleware(IdempotencyMiddleware, store=store, config=config)
        if loopback:
            async with uvicorn_serving(asgi) as url, httpx.AsyncClient(base_url=url) as client:
                yield Guarded(client, handlers, prefix)
            return
        transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            yield Guarded(client, handlers, prefix)

    return serving


# --- helpers ------------------------------------------------------------------------------


async def record_is_gone(store: RecordStore, key: str) -> bool:
    try:
        await store.get_record(key)
    except IdempotencyItemNotFoundError:
        return True
    return False


async def wait_until_gone(store: RecordStore, key: str) -> None:
    """A release after the client is gone happens in the server: wait for it."""
    for _ in range(200):
        if await record_is_gone(store, key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"record {key!r} was never released")


async def wait_until_completed(store: RecordStore, key: str) -> None:
    for _ in range(200):
        with contextlib.suppress(IdempotencyItemNotFoundError):
            if (await store.get_record(key)).status is RecordStatus.COMPLETED:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"record {key!r} was never completed")


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == response.status_code
    return document


def unreachable_store() -> AsyncDynamoStore:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return AsyncDynamoStore(
        "idempotency",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        session=isolated_session(),
        client_config=AioConfig(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )


# --- replay ---------------------------------------------------------------------------------


async def test_a_retry_gets_the_first_response_replayed(
    serve: Serve, table: AsyncDynamoStore, requests: RequestLog
) -> None:
    async with serve(table) as app:
        first = await app.post("/orders", b'{"item": "book"}')
        assert requests.operations == ["PutItem", "UpdateItem"]
        requests.clear()
        retry = await app.post("/orders", b'{"item": "book"}')
        assert requests.operations == ["PutItem"]
        quoted = await app.post("/orders", b'{"item": "book"}', key=f'"{KEY}"')
    assert app.handlers.runs["orders"] == 1
    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert first.json()["order"] == 1
    assert REPLAYED not in first.headers
    assert retry.headers[REPLAYED] == quoted.headers[REPLAYED] == "true"
    assert retry.headers["x-order-count"] == "1"
    assert retry.headers["content-type"].startswith("application/json")
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert "s3cr3t" in first.headers["set-cookie"]
    assert "set-cookie" not in retry.headers
    record = await table.get_record(app.record_key("/orders", b'{"item": "book"}'))
    assert record.status is RecordStatus.COMPLETED
    assert "s3cr3t" not in (record.response_data or "")


async def test_binary_and_large_bodies_and_4xx_replay_byte_for_byte(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    assert HttpIdempotencyConfig().max_capture_bytes - 5000 < len(LARGE_BODY)
    async with serve(table) as app:
        for path in ("/binary", "/large", "/not-found"):
            first = await app.post(path, key=path)
            retry = await app.post(path, key=path)
            assert first.content == retry.content
            assert first.status_code == retry.status_code
            assert retry.headers[REPLAYED] == "true"
            assert retry.headers["content-length"] == str(len(first.content))
    assert first.status_code == 404
    assert app.handlers.runs == {"binary": 1, "large": 1, "not-found": 1}


async def test_the_header_denylist_keeps_headers_out_of_replays(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    config = HttpIdempotencyConfig(header_denylist={"X-Order-Count"})
    async with serve(table, config) as app:
        first = await app.post("/orders", b"{}")
        retry = await app.post("/orders", b"{}")
    assert first.headers["x-order-count"] == "1"
    assert "x-order-count" not in retry.headers
    assert retry.headers[REPLAYED] == "true"


# --- concurrency ------------------------------------------------------------------------------


async def test_concurrent_duplicates_run_the_handler_once(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table) as app:
        responses = await asyncio.gather(*(app.post("/slow", b"pay") for _ in range(40)))
    assert app.handlers.runs["slow"] == 1
    fresh = [r for r in responses if r.status_code == 200 and REPLAYED not in r.headers]
    replayed = [r for r in responses if r.status_code == 200 and r.headers.get(REPLAYED) == "true"]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1
    assert len(fresh) + len(replayed) + len(conflicts) == 40
    assert all(r.content == fresh[0].content for r in replayed)
    assert all(problem(r)["title"] == "Conflict" for r in conflicts)


async def test_a_duplicate_while_running_gets_409_with_retry_after(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table, HttpIdempotencyConfig(retry_after_seconds=3)) as app:
        app.handlers.slow_seconds = 1.0
        first = asyncio.create_task(app.post("/slow", b"pay"))
        await app.handlers.slow_started.wait()
        duplicate = await app.post("/slow", b"pay")
        assert (await first).status_code == 200
    assert duplicate.status_code == 409
    assert duplicate.headers["retry-after"] == "3"
    assert "still being processed" in problem(duplicate)["detail"]
    assert app.handlers.runs["slow"] == 1


async def test_a_duplicate_while_running_can_wait_and_replay(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    waiting = IdempotencyConfig(wait_for_in_progress_seconds=10)
    async with serve(table, HttpIdempotencyConfig(idempotency_config=waiting)) as app:
        app.handlers.slow_seconds = 0.5
        first = asyncio.create_task(app.post("/slow", b"pay"))
        await app.handlers.slow_started.wait()
        duplicate = await app.post("/slow", b"pay")
        original = await first
    assert duplicate.status_code == 200
    assert duplicate.headers[REPLAYED] == "true"
    assert duplicate.content == original.content
    assert app.handlers.runs["slow"] == 1


# --- the header and the fingerprint -------------------------------------------------------------


async def test_a_missing_key_passes_through_unless_required(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table) as app:
        first = await app.post("/orders", b"{}", key=None)
        second = await app.post("/orders", b"{}", key=None)
    assert (first.json()["order"], second.json()["order"]) == (1, 2)
    assert REPLAYED not in second.headers

    async with serve(table, HttpIdempotencyConfig(require_key=True)) as app:
        refused = await app.post("/orders", b"{}", key=None)
    assert refused.status_code == 400
    assert "Idempotency-Key" in problem(refused)["detail"]
    assert app.handlers.runs["orders"] == 0


async def test_a_malformed_key_is_refused_with_400(serve: Serve, table: AsyncDynamoStore) -> None:
    values = [
        "",
        '""',
        "x" * 256,
        '"unclosed',
        '"a"b',
        "two words",
        "caf\u00e9",
        '"bad \\n escape"',
    ]
    async with serve(table) as app:
        refused = [
            await app.client.post(
                "/orders", content=b"{}", headers=[(b"Idempotency-Key", value.encode("latin-1"))]
            )
            for value in values
        ]
        two = await app.client.post(
            "/orders", content=b"{}", headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
    assert [r.status_code for r in refused] == [400] * len(values)
    assert all(problem(r)["title"] == "Bad Request" for r in refused)
    assert two.status_code == 400
    assert "more than one" in problem(two)["detail"]
    assert app.handlers.runs["orders"] == 0


async def test_the_same_key_for_a_different_request_is_422(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table) as app:
        first = await app.post("/orders", b'{"n": 1}')
        other_body = await app.post("/orders", b'{"n": 2}')
        other_query = await app.post("/orders?dry=1", b'{"n": 1}')
        # The query as sent, escapes included: "a%26b" is one value, "a&b" two parameters.
        escaped = await app.post("/orders?q=a%26b", b'{"n": 1}', key="escaped")
        unescaped = await app.post("/orders?q=a&b", b'{"n": 1}', key="escaped")
        other_path = await app.post("/binary", b'{"n": 1}')
    assert first.status_code == 201
    assert escaped.status_code == 201
    for response in (other_body, other_query, unescaped, other_path):
        assert response.status_code == 422
        assert "different request" in problem(response)["detail"]
    assert app.handlers.runs == {"orders": 2}


async def test_unguarded_methods_pass_through_untouched(
    serve: Serve, table: AsyncDynamoStore, requests: RequestLog
) -> None:
    async with serve(table, HttpIdempotencyConfig(require_key=True)) as app:
        responses = [
            await app.client.get("/orders", headers={"Idempotency-Key": KEY}) for _ in range(2)
        ]
        responses.append(await app.client.get("/orders"))
    assert [r.json()["listed"] for r in responses] == [1, 2, 3]
    assert all(REPLAYED not in r.headers for r in responses)
    assert requests.count == 0


async def test_methods_are_configurable(serve: Serve, table: AsyncDynamoStore) -> None:
    async with serve(table, HttpIdempotencyConfig(methods={"get"})) as app:
        first = await app.client.get("/orders", headers={"Idempotency-Key": KEY})
        retry = await app.client.get("/orders", headers={"Idempotency-Key": KEY})
        post = await app.post("/orders", b"{}")
        post_again = await app.post("/orders", b"{}")
    assert retry.headers[REPLAYED] == "true"
    assert retry.json() == first.json()
    assert app.handlers.runs["list"] == 1
    assert REPLAYED not in post_again.headers
    assert (post.json()["order"], post_again.json()["order"]) == (1, 2)


# --- responses not stored -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/server-error", 503), ("/too-many", 429)])
async def test_5xx_and_429_release_the_key(
    serve: Serve, table: AsyncDynamoStore, path: str, status: int
) -> None:
    async with serve(table) as app:
        first = await app.post(path)
        assert await record_is_gone(table, app.record_key(path))
        retry = await app.post(path)
    assert first.status_code == retry.status_code == status
    assert REPLAYED not in retry.headers
    assert app.handlers.runs[path.strip("/")] == 2


async def test_stored_statuses_are_configurable(serve: Serve, table: AsyncDynamoStore) -> None:
    async with serve(table, HttpIdempotencyConfig(stored_statuses=[range(200, 300)])) as app:
        await app.post("/not-found")
        retry = await app.post("/not-found")
    assert retry.status_code == 404
    assert REPLAYED not in retry.headers
    assert app.handlers.runs["not-found"] == 2


async def test_a_handler_that_raises_releases_the_key(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table) as app:
        first = await app.post("/raises")
        assert await record_is_gone(table, app.record_key("/raises"))
        retry = await app.post("/raises")
    assert first.status_code == retry.status_code == 500
    assert app.handlers.runs["raises"] == 2


async def test_a_client_disconnect_mid_request_releases_the_key(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    async with serve(table, loopback=True) as app:
        app.handlers.slow_seconds = 30
        with pytest.raises(httpx.ReadTimeout):
            await app.client.post(
                "/slow", content=b"pay", headers={"Idempotency-Key": KEY}, timeout=0.5
            )
        await asyncio.wait_for(app.handlers.cancelled.wait(), 10)
        await wait_until_gone(table, app.record_key("/slow", b"pay"))
        app.handlers.slow_seconds = 0
        retry = await app.post("/slow", b"pay")
    assert retry.status_code == 200
    assert REPLAYED not in retry.headers
    assert app.handlers.runs["slow"] == 2


# --- responses that cannot be stored --------------------------------------------------------------


async def test_a_streamed_response_reaches_the_client_as_it_is_made(
    serve: Serve, table: AsyncDynamoStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(table, loopback=True) as app:
        async with app.client.stream("POST", "/stream", headers={"Idempotency-Key": KEY}) as first:
            chunks = first.aiter_raw()
            # The handler waits until the test has its first chunk: nothing holds it back.
            received = await asyncio.wait_for(anext(chunks), 10)
            assert not app.handlers.resume_stream.is_set()
            app.handlers.resume_stream.set()
            received += b"".join([chunk async for chunk in chunks])
        # aiohttp's handler ends its own stream, before the key is recorded.
        await wait_until_completed(table, app.record_key("/stream"))
        retry = await app.post("/stream")
    assert first.status_code == 200
    assert received == FIRST_CHUNK + b"y" * 600
    assert retry.status_code == 409
    assert "retry-after" not in retry.headers
    assert "cannot be replayed" in problem(retry)["detail"]
    assert app.handlers.runs["stream"] == 1
    assert sum("response not stored" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "max_capture_bytes",
    [None, 2 * 1024 * 1024],
    ids=["over-the-capture-limit", "too-large-for-an-item"],
)
async def test_a_600_kb_response_never_runs_the_handler_twice(
    serve: Serve, table: AsyncDynamoStore, max_capture_bytes: int | None
) -> None:
    """Passed through by the middleware, or held and refused by the engine: recorded as done."""
    config = (
        HttpIdempotencyConfig()
        if max_capture_bytes is None
        else HttpIdempotencyConfig(max_capture_bytes=max_capture_bytes)
    )
    async with serve(table, config) as app:
        first = await app.post("/huge")
        retry = await app.post("/huge")
    assert first.status_code == 200
    assert first.content == HUGE_BODY
    assert retry.status_code == 409
    assert "cannot be replayed" in problem(retry)["detail"]
    assert app.handlers.runs["huge"] == 1


@pytest.mark.parametrize("path", ["/huge", "/stream"])
async def test_unstorable_responses_can_release_the_key_instead(
    serve: Serve, table: AsyncDynamoStore, path: str
) -> None:
    config = HttpIdempotencyConfig(unstorable_responses="release")
    async with serve(table, config, loopback=True) as app:
        app.handlers.resume_stream.set()
        first = await app.post(path)
        await wait_until_gone(table, app.record_key(path))
        retry = await app.post(path)
    assert first.status_code == retry.status_code == 200
    assert retry.content == first.content
    assert REPLAYED not in retry.headers
    assert app.handlers.runs[path.strip("/")] == 2


# --- the store, scopes, the kill switch ---------------------------------------------------


async def test_an_unavailable_store_fails_closed_with_503(serve: Serve) -> None:
    async with unreachable_store() as store, serve(store) as app:
        response = await app.post("/orders", b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "unavailable" in problem(response)["detail"]
    assert app.handlers.runs["orders"] == 0


async def test_an_unavailable_store_can_fail_open(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    config = HttpIdempotencyConfig(fail_open=True)
    async with unreachable_store() as store, serve(store, config) as app:
        response = await app.post("/orders", b'{"n": 1}')
    assert response.status_code == 201
    assert response.json()["body"] == {"n": 1}
    assert app.handlers.runs["orders"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("runs unprotected" in message for message in warnings)


async def test_tenants_with_the_same_key_each_run_once(
    serve: Serve, table: AsyncDynamoStore
) -> None:
    config = HttpIdempotencyConfig(scope=lambda request: request.headers["x-tenant"])
    async with serve(table, config) as app:
        responses = {
            (tenant, attempt): await app.post("/orders", b"{}", **{"X-Tenant": tenant})
            for attempt in range(2)
            for tenant in ("acme", "globex")
        }
    assert app.handlers.runs["orders"] == 2
    for tenant in ("acme", "globex"):
        first, retry = responses[tenant, 0], responses[tenant, 1]
        assert first.json()["tenant"] == tenant
        assert retry.headers[REPLAYED] == "true"
        assert retry.content == first.content


async def test_an_async_scope_callable_is_awaited(serve: Serve, table: AsyncDynamoStore) -> None:
    async def tenant_from_body(request: Any) -> str:
        read: Callable[[], Any] = getattr(request, "read", None) or request.body  # aiohttp, ASGI
        return str(json.loads(await read())["tenant"])

    async with serve(table, HttpIdempotencyConfig(scope=tenant_from_body)) as app:
        await app.post("/orders", b'{"tenant": "a"}')
        retry = await app.post("/orders", b'{"tenant": "a"}')
    assert retry.headers[REPLAYED] == "true"
    assert retry.json()["body"] == {"tenant": "a"}
    assert not await record_is_gone(table, app.record_key("/orders", b'{"tenant": "a"}', scope="a"))


async def test_the_kill_switch_lets_requests_through_and_warns_once_per_process(
    serve: Serve, table: AsyncDynamoStore, requests: RequestLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEMSTORE_DISABLED", "1")
    idemstore.engine.DISABLED_NOTICE.reset()

    @idempotent_function(data_keyword_argument="order", persistence_store=table)
    async def charge(order: dict[str, int]) -> int:
        return order["n"]

    async def twice_and_a_decorated_call() -> list[httpx.Response]:
        async with serve(table) as app:
            responses = [await app.post("/orders", b"{}") for _ in range(2)]
        assert await charge(order={"n": 1}) == 1
        return responses

    with pytest.warns(IdempotencyWarning, match="IDEMSTORE_DISABLED") as warned:
        responses = await twice_and_a_decorated_call()
    assert len(warned) == 1
    assert [r.json()["order"] for r in responses] == [1, 2]
    assert all(REPLAYED not in r.headers for r in responses)
    assert "s3cr3t" in responses[1].headers["set-cookie"]  # delivered as the app made it
    assert requests.count == 0
