"""The ASGI ``Idempotency-Key`` middleware, against a real uvicorn server and DynamoDB protocol.

Every test runs a FastAPI app on loopback, drives it with an HTTP client and
keeps its records in a fresh table of the local DynamoDB-protocol server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from aiobotocore.config import AioConfig
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp

from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfig,
    IdempotencyItemNotFoundError,
    RecordStatus,
)
from idemstore.integrations._http import call_identity, request_fingerprint
from idemstore.integrations.asgi import (
    HttpIdempotencyConfig,
    IdempotencyMiddleware,
    idempotent_route_class,
)
from idemstore.stores.contract import RecordStore
from idemstore.testing import RequestLog, isolated_session

KEY = "order-7f3a"
REPLAYED = "idempotent-replayed"
BINARY_BODY = bytes(range(256)) * 64
LARGE_BODY = b"".join(b"line %07d of a compressible report\n" % n for n in range(26_300))


class Handlers:
    """What the app's handlers did, and knobs the tests turn."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.slow_seconds = 0.2
        self.slow_started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.resume_stream = asyncio.Event()
        self.background_may_finish = asyncio.Event()
        self.background_done = asyncio.Event()


def build_app(handlers: Handlers) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    async def create_order(request: Request, response: Response) -> dict[str, Any]:
        handlers.runs["orders"] += 1
        response.status_code = 201
        response.set_cookie("session", "s3cr3t")
        response.headers["X-Order-Count"] = str(handlers.runs["orders"])
        tenant = request.headers.get("x-tenant")
        return {"order": handlers.runs["orders"], "tenant": tenant, "body": await request.json()}

    @app.get("/orders")
    async def list_orders() -> dict[str, int]:
        handlers.runs["list"] += 1
        return {"listed": handlers.runs["list"]}

    @app.post("/slow")
    async def slow() -> dict[str, int]:
        handlers.runs["slow"] += 1
        handlers.slow_started.set()
        try:
            await asyncio.sleep(handlers.slow_seconds)
        except asyncio.CancelledError:
            handlers.cancelled.set()
            raise
        return {"slow": handlers.runs["slow"]}

    @app.post("/binary")
    async def binary() -> Response:
        handlers.runs["binary"] += 1
        return Response(BINARY_BODY, media_type="application/octet-stream")

    @app.post("/large")
    async def large() -> Response:
        handlers.runs["large"] += 1
        return Response(LARGE_BODY, media_type="text/plain")

    @app.post("/server-error")
    async def server_error() -> JSONResponse:
        handlers.runs["server-error"] += 1
        return JSONResponse({"error": "try again"}, status_code=503)

    @app.post("/too-many")
    async def too_many() -> JSONResponse:
        handlers.runs["too-many"] += 1
        return JSONResponse({"error": "slow down"}, status_code=429)

    @app.post("/not-found")
    async def not_found() -> JSONResponse:
        handlers.runs["not-found"] += 1
        return JSONResponse({"error": "no such thing"}, status_code=404)

    @app.post("/raises")
    async def raises() -> None:
        handlers.runs["raises"] += 1
        raise RuntimeError("handler failed")

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        handlers.runs["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 600
            await handlers.resume_stream.wait()
            for _ in range(3):
                yield b"y" * 600

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/background")
    async def with_background(tasks: BackgroundTasks) -> dict[str, int]:
        handlers.runs["background"] += 1

        async def after_response() -> None:
            await handlers.background_may_finish.wait()
            handlers.background_done.set()

        tasks.add_task(after_response)
        return {"background": handlers.runs["background"]}

    @app.post("/background-fails")
    async def with_failing_background(tasks: BackgroundTasks) -> dict[str, int]:
        handlers.runs["background-fails"] += 1

        async def after_response() -> None:
            raise RuntimeError("background work failed")

        tasks.add_task(after_response)
        return {"background": handlers.runs["background-fails"]}

    return app


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
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
async def guarded(
    store: RecordStore, config: HttpIdempotencyConfig | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Handlers]]:
    """The test app behind the middleware, served, with a client for it."""
    handlers = Handlers()
    app = build_app(handlers)
    app.add_middleware(IdempotencyMiddleware, store=store, config=config or HttpIdempotencyConfig())
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, handlers


def record_key(
    path: str, body: bytes, *, key: str = KEY, scope: str | None = None, query: str = ""
) -> str:
    fingerprint = request_fingerprint("POST", path, query, body)
    return call_identity(HttpIdempotencyConfig(), key=key, scope=scope, fingerprint=fingerprint).key


async def record_is_gone(store: RecordStore, key: str) -> bool:
    try:
        await store.get_record(key)
    except IdempotencyItemNotFoundError:
        return True
    return False


async def wait_until_gone(store: RecordStore, key: str) -> None:
    """The record's release happens in the server after the client is gone: wait for it."""
    for _ in range(200):
        if await record_is_gone(store, key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"record {key!r} was never released")


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == response.status_code
    return document


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable_store() -> AsyncDynamoStore:
    return AsyncDynamoStore(
        "idempotency",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name="us-east-1",
        session=isolated_session(),
        client_config=AioConfig(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )


# --- replay ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_retry_gets_the_first_response_replayed(dynamo_store: AsyncDynamoStore) -> None:
    requests = RequestLog().attach(await dynamo_store.client())
    headers = {"Idempotency-Key": KEY, "Content-Type": "application/json"}
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/orders", content=b'{"item": "book"}', headers=headers)
        assert requests.operations == ["PutItem", "UpdateItem"]
        requests.clear()
        retry = await client.post("/orders", content=b'{"item": "book"}', headers=headers)
        assert requests.operations == ["PutItem"]
    assert handlers.runs["orders"] == 1
    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert first.json()["order"] == 1
    assert REPLAYED not in first.headers
    assert retry.headers[REPLAYED] == "true"
    assert retry.headers["x-order-count"] == "1"
    assert retry.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert "s3cr3t" in first.headers["set-cookie"]
    assert "set-cookie" not in retry.headers
    record = await dynamo_store.get_record(record_key("/orders", b'{"item": "book"}'))
    assert record.status is RecordStatus.COMPLETED
    assert "s3cr3t" not in (record.response_data or "")


@pytest.mark.asyncio
async def test_quoted_and_bare_forms_of_a_key_are_the_same_key(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        bare = await client.post("/orders", json={}, headers={"Idempotency-Key": "abc"})
        quoted = await client.post("/orders", json={}, headers={"Idempotency-Key": '"abc"'})
    assert handlers.runs["orders"] == 1
    assert REPLAYED not in bare.headers
    assert quoted.headers[REPLAYED] == "true"


@pytest.mark.asyncio
async def test_binary_and_large_bodies_replay_byte_for_byte(
    dynamo_store: AsyncDynamoStore,
) -> None:
    assert 990_000 < len(LARGE_BODY) < HttpIdempotencyConfig().max_capture_bytes
    async with guarded(dynamo_store) as (client, handlers):
        for path, expected in (("/binary", BINARY_BODY), ("/large", LARGE_BODY)):
            first = await client.post(path, content=b"", headers={"Idempotency-Key": path})
            retry = await client.post(path, content=b"", headers={"Idempotency-Key": path})
            assert first.content == retry.content == expected
            assert retry.headers[REPLAYED] == "true"
            assert retry.headers["content-length"] == str(len(expected))
    assert handlers.runs["binary"] == handlers.runs["large"] == 1


@pytest.mark.asyncio
async def test_4xx_responses_are_stored_and_replayed(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/not-found", headers={"Idempotency-Key": KEY})
        retry = await client.post("/not-found", headers={"Idempotency-Key": KEY})
    assert first.status_code == retry.status_code == 404
    assert retry.headers[REPLAYED] == "true"
    assert handlers.runs["not-found"] == 1


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fifty_concurrent_duplicates_run_the_handler_once(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        responses = await asyncio.gather(
            *(
                client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
                for _ in range(50)
            )
        )
    assert handlers.runs["slow"] == 1
    fresh = [r for r in responses if r.status_code == 200 and REPLAYED not in r.headers]
    replayed = [r for r in responses if r.status_code == 200 and r.headers.get(REPLAYED) == "true"]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1
    assert len(fresh) + len(replayed) + len(conflicts) == 50
    assert all(r.content == fresh[0].content for r in replayed)
    assert all(problem(r)["title"] == "Conflict" for r in conflicts)


@pytest.mark.asyncio
async def test_a_duplicate_while_running_gets_409_with_retry_after(
    dynamo_store: AsyncDynamoStore,
) -> None:
    config = HttpIdempotencyConfig(retry_after_seconds=3)
    async with guarded(dynamo_store, config) as (client, handlers):
        handlers.slow_seconds = 1.0
        first = asyncio.create_task(
            client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
        )
        await handlers.slow_started.wait()
        duplicate = await client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
        assert (await first).status_code == 200
    assert duplicate.status_code == 409
    assert duplicate.headers["retry-after"] == "3"
    assert "still being processed" in problem(duplicate)["detail"]
    assert handlers.runs["slow"] == 1


@pytest.mark.asyncio
async def test_a_duplicate_while_running_can_wait_and_replay(
    dynamo_store: AsyncDynamoStore,
) -> None:
    config = HttpIdempotencyConfig(
        idempotency_config=IdempotencyConfig(wait_for_in_progress_seconds=10)
    )
    async with guarded(dynamo_store, config) as (client, handlers):
        handlers.slow_seconds = 0.5
        first = asyncio.create_task(
            client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
        )
        await handlers.slow_started.wait()
        duplicate = await client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
        original = await first
    assert duplicate.status_code == 200
    assert duplicate.headers[REPLAYED] == "true"
    assert duplicate.content == original.content
    assert handlers.runs["slow"] == 1


# --- the header and the fingerprint -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_missing_key_passes_through_unless_required(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/orders", json={})
        second = await client.post("/orders", json={})
    assert (first.json()["order"], second.json()["order"]) == (1, 2)
    assert REPLAYED not in second.headers

    required = HttpIdempotencyConfig(require_key=True)
    async with guarded(dynamo_store, required) as (client, handlers):
        refused = await client.post("/orders", json={})
    assert refused.status_code == 400
    assert "Idempotency-Key" in problem(refused)["detail"]
    assert handlers.runs["orders"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value",
    ["", '""', "x" * 256, '"unclosed', '"a"b', "two words", "caf\u00e9", '"bad \\n escape"'],
)
async def test_an_invalid_key_is_refused_with_400(
    dynamo_store: AsyncDynamoStore, value: str
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        response = await client.post(
            "/orders", json={}, headers=[(b"Idempotency-Key", value.encode("latin-1"))]
        )
    assert response.status_code == 400
    assert problem(response)["title"] == "Bad Request"
    assert handlers.runs["orders"] == 0


@pytest.mark.asyncio
async def test_two_key_headers_are_refused(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        response = await client.post(
            "/orders", json={}, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
    assert response.status_code == 400
    assert "more than one" in problem(response)["detail"]
    assert handlers.runs["orders"] == 0


@pytest.mark.asyncio
async def test_the_same_key_for_a_different_request_is_422(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/orders", json={"n": 1}, headers={"Idempotency-Key": KEY})
        other_body = await client.post("/orders", json={"n": 2}, headers={"Idempotency-Key": KEY})
        other_query = await client.post(
            "/orders?dry=1", json={"n": 1}, headers={"Idempotency-Key": KEY}
        )
        other_path = await client.post("/binary", json={"n": 1}, headers={"Idempotency-Key": KEY})
    assert first.status_code == 201
    for response in (other_body, other_query, other_path):
        assert response.status_code == 422
        assert "different request" in problem(response)["detail"]
    assert handlers.runs["orders"] == 1
    assert handlers.runs["binary"] == 0


@pytest.mark.asyncio
async def test_get_passes_through_untouched(dynamo_store: AsyncDynamoStore) -> None:
    requests = RequestLog().attach(await dynamo_store.client())
    config = HttpIdempotencyConfig(require_key=True)
    async with guarded(dynamo_store, config) as (client, _):
        first = await client.get("/orders", headers={"Idempotency-Key": KEY})
        second = await client.get("/orders", headers={"Idempotency-Key": KEY})
        without_key = await client.get("/orders")
    assert [r.json()["listed"] for r in (first, second, without_key)] == [1, 2, 3]
    assert all(REPLAYED not in r.headers for r in (first, second, without_key))
    assert requests.count == 0


@pytest.mark.asyncio
async def test_methods_are_configurable(dynamo_store: AsyncDynamoStore) -> None:
    config = HttpIdempotencyConfig(methods={"get"})
    async with guarded(dynamo_store, config) as (client, handlers):
        first = await client.get("/orders", headers={"Idempotency-Key": KEY})
        retry = await client.get("/orders", headers={"Idempotency-Key": KEY})
        post = await client.post("/orders", json={}, headers={"Idempotency-Key": KEY})
        post_again = await client.post("/orders", json={}, headers={"Idempotency-Key": KEY})
    assert retry.headers[REPLAYED] == "true"
    assert retry.json() == first.json()
    assert handlers.runs["list"] == 1
    assert REPLAYED not in post_again.headers
    assert (post.json()["order"], post_again.json()["order"]) == (1, 2)


# --- outcomes not stored ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "status"), [("/server-error", 503), ("/too-many", 429)])
async def test_5xx_and_429_release_the_key(
    dynamo_store: AsyncDynamoStore, path: str, status: int
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post(path, headers={"Idempotency-Key": KEY})
        assert await record_is_gone(dynamo_store, record_key(path, b""))
        retry = await client.post(path, headers={"Idempotency-Key": KEY})
    assert first.status_code == retry.status_code == status
    assert REPLAYED not in retry.headers
    assert handlers.runs[path.strip("/")] == 2


@pytest.mark.asyncio
async def test_stored_statuses_are_configurable(dynamo_store: AsyncDynamoStore) -> None:
    config = HttpIdempotencyConfig(stored_statuses=[range(200, 300)])
    async with guarded(dynamo_store, config) as (client, handlers):
        await client.post("/not-found", headers={"Idempotency-Key": KEY})
        retry = await client.post("/not-found", headers={"Idempotency-Key": KEY})
    assert REPLAYED not in retry.headers
    assert handlers.runs["not-found"] == 2


@pytest.mark.asyncio
async def test_a_handler_that_raises_releases_the_key(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/raises", headers={"Idempotency-Key": KEY})
        assert await record_is_gone(dynamo_store, record_key("/raises", b""))
        retry = await client.post("/raises", headers={"Idempotency-Key": KEY})
    assert first.status_code == retry.status_code == 500
    assert handlers.runs["raises"] == 2


@pytest.mark.asyncio
async def test_a_client_disconnect_mid_request_releases_the_key(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        handlers.slow_seconds = 30
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/slow", content=b"pay", headers={"Idempotency-Key": KEY}, timeout=0.5
            )
        await asyncio.wait_for(handlers.cancelled.wait(), 10)
        await wait_until_gone(dynamo_store, record_key("/slow", b"pay"))
        handlers.slow_seconds = 0
        retry = await client.post("/slow", content=b"pay", headers={"Idempotency-Key": KEY})
    assert retry.status_code == 200
    assert REPLAYED not in retry.headers
    assert handlers.runs["slow"] == 2


@pytest.mark.asyncio
async def test_a_response_beyond_the_capture_limit_streams_through_unstored(
    dynamo_store: AsyncDynamoStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = HttpIdempotencyConfig(max_capture_bytes=1000)
    async with guarded(dynamo_store, config) as (client, handlers):
        headers = {"Idempotency-Key": KEY}
        async with client.stream("POST", "/stream", headers=headers) as streamed:
            received = b""
            async for chunk in streamed.aiter_bytes():
                received += chunk
                # The first part arrives while the handler still waits: it is not held back.
                if len(received) >= 1800:
                    handlers.resume_stream.set()
        assert streamed.status_code == 200
        assert received == b"x" * 1800 + b"y" * 1800
        await wait_until_gone(dynamo_store, record_key("/stream", b""))
        retry = await client.post("/stream", headers=headers)
    assert retry.content == received
    assert REPLAYED not in retry.headers
    assert handlers.runs["stream"] == 2
    assert any("streamed through and not stored" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_work_after_the_response_does_not_delay_it(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/background", headers={"Idempotency-Key": KEY})
        assert not handlers.background_done.is_set()
        handlers.background_may_finish.set()
        await asyncio.wait_for(handlers.background_done.wait(), 10)
        retry = await client.post("/background", headers={"Idempotency-Key": KEY})
    assert retry.headers[REPLAYED] == "true"
    assert retry.content == first.content
    assert handlers.runs["background"] == 1


@pytest.mark.asyncio
async def test_work_failing_after_the_response_leaves_it_stored(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        first = await client.post("/background-fails", headers={"Idempotency-Key": KEY})
        retry = await client.post("/background-fails", headers={"Idempotency-Key": KEY})
    assert first.status_code == retry.status_code == 200
    assert retry.headers[REPLAYED] == "true"
    assert handlers.runs["background-fails"] == 1


# --- the store -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unavailable_store_fails_closed_with_503() -> None:
    async with unreachable_store() as store, guarded(store) as (client, handlers):
        response = await client.post("/orders", json={}, headers={"Idempotency-Key": KEY})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "unavailable" in problem(response)["detail"]
    assert handlers.runs["orders"] == 0


@pytest.mark.asyncio
async def test_an_unavailable_store_can_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    config = HttpIdempotencyConfig(fail_open=True)
    async with unreachable_store() as store, guarded(store, config) as (client, handlers):
        response = await client.post("/orders", json={"n": 1}, headers={"Idempotency-Key": KEY})
    assert response.status_code == 201
    assert response.json()["body"] == {"n": 1}
    assert handlers.runs["orders"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("runs unprotected" in r.getMessage() for r in warnings)


# --- scope and per-route use ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tenants_with_the_same_key_each_run_once(dynamo_store: AsyncDynamoStore) -> None:
    config = HttpIdempotencyConfig(scope=lambda request: request.headers["x-tenant"])
    async with guarded(dynamo_store, config) as (client, handlers):
        responses = {
            (tenant, attempt): await client.post(
                "/orders", json={}, headers={"Idempotency-Key": KEY, "X-Tenant": tenant}
            )
            for attempt in range(2)
            for tenant in ("acme", "globex")
        }
    assert handlers.runs["orders"] == 2
    for tenant in ("acme", "globex"):
        first, retry = responses[tenant, 0], responses[tenant, 1]
        assert first.json()["tenant"] == tenant
        assert retry.headers[REPLAYED] == "true"
        assert retry.content == first.content


@pytest.mark.asyncio
async def test_an_async_scope_callable_is_awaited(dynamo_store: AsyncDynamoStore) -> None:
    async def tenant_from_body(request: Request) -> str:
        return str(json.loads(await request.body())["tenant"])

    config = HttpIdempotencyConfig(scope=tenant_from_body)
    headers = {"Idempotency-Key": KEY, "Content-Type": "application/json"}
    async with guarded(dynamo_store, config) as (client, _):
        await client.post("/orders", content=b'{"tenant": "a"}', headers=headers)
        retry = await client.post("/orders", content=b'{"tenant": "a"}', headers=headers)
    assert retry.headers[REPLAYED] == "true"
    assert retry.json()["body"] == {"tenant": "a"}
    assert not await record_is_gone(
        dynamo_store, record_key("/orders", b'{"tenant": "a"}', scope="a")
    )


@pytest.mark.asyncio
async def test_the_route_class_guards_only_its_routes(dynamo_store: AsyncDynamoStore) -> None:
    runs: Counter[str] = Counter()
    app = FastAPI()
    payments = APIRouter(route_class=idempotent_route_class(store=dynamo_store))

    @payments.post("/payments")
    async def pay() -> dict[str, int]:
        runs["payments"] += 1
        return {"payment": runs["payments"]}

    @app.post("/notes")
    async def note() -> dict[str, int]:
        runs["notes"] += 1
        return {"note": runs["notes"]}

    app.include_router(payments)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        paid = [await client.post("/payments", headers={"Idempotency-Key": KEY}) for _ in range(2)]
        noted = [await client.post("/notes", headers={"Idempotency-Key": KEY}) for _ in range(2)]
    assert paid[1].headers[REPLAYED] == "true"
    assert paid[1].json() == paid[0].json() == {"payment": 1}
    assert [r.json()["note"] for r in noted] == [1, 2]
    assert runs == {"payments": 1, "notes": 2}


@pytest.mark.asyncio
async def test_the_disable_switch_lets_requests_through(
    dynamo_store: AsyncDynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEMSTORE_DISABLED", "1")
    async with guarded(dynamo_store) as (client, handlers):
        for _ in range(2):
            await client.post("/orders", json={}, headers={"Idempotency-Key": KEY})
    assert handlers.runs["orders"] == 2
