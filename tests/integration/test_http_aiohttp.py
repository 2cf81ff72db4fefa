"""The aiohttp ``Idempotency-Key`` middleware, against aiohttp's own server and DynamoDB protocol.

Every test serves an aiohttp app on loopback (``web.AppRunner`` + ``TCPSite``),
drives it with ``aiohttp.ClientSession`` and keeps its records in a fresh table
of the local DynamoDB-protocol server.
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

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiohttp import web

from idemstore import AsyncDynamoStore, IdempotencyItemNotFoundError, RecordStatus
from idemstore.integrations._http import call_identity, request_fingerprint
from idemstore.integrations.aiohttp import (
    CONFIG_KEY,
    STORE_KEY,
    HttpIdempotencyConfig,
    idempotency_middleware,
    setup,
)
from idemstore.stores.contract import RecordStore
from idemstore.testing import RequestLog, isolated_session

KEY = "order-7f3a"
REPLAYED = "Idempotent-Replayed"
BINARY_BODY = bytes(range(256)) * 64
LARGE_BODY = b"".join(b"line %07d of a compressible report\n" % n for n in range(26_300))


class Handlers:
    """What the app's handlers did, and knobs the tests turn."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.slow_seconds = 0.2
        self.slow_started = asyncio.Event()
        self.cancelled = asyncio.Event()


def build_app(handlers: Handlers) -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/orders")
    async def create_order(request: web.Request) -> web.Response:
        handlers.runs["orders"] += 1
        body = await request.json()
        document = {
            "order": handlers.runs["orders"],
            "tenant": request.headers.get("X-Tenant"),
            "body": body,
        }
        response = web.json_response(document, status=201, headers={"X-Order-Count": "1"})
        response.set_cookie("session", "s3cr3t")
        return response

    @routes.get("/orders")
    async def list_orders(request: web.Request) -> web.Response:
        handlers.runs["list"] += 1
        return web.json_response({"listed": handlers.runs["list"]})

    @routes.post("/slow")
    async def slow(request: web.Request) -> web.Response:
        handlers.runs["slow"] += 1
        handlers.slow_started.set()
        try:
            await asyncio.sleep(handlers.slow_seconds)
        except asyncio.CancelledError:
            handlers.cancelled.set()
            raise
        return web.json_response({"slow": handlers.runs["slow"]})

    @routes.post("/binary")
    async def binary(request: web.Request) -> web.Response:
        handlers.runs["binary"] += 1
        return web.Response(body=BINARY_BODY, content_type="application/octet-stream")

    @routes.post("/large")
    async def large(request: web.Request) -> web.Response:
        handlers.runs["large"] += 1
        return web.Response(body=LARGE_BODY, content_type="text/plain")

    @routes.post("/server-error")
    async def server_error(request: web.Request) -> web.Response:
        handlers.runs["server-error"] += 1
        return web.json_response({"error": "try again"}, status=503)

    @routes.post("/conflict")
    async def conflict(request: web.Request) -> web.Response:
        handlers.runs["conflict"] += 1
        raise web.HTTPConflict(text="already shipped")

    @routes.post("/unavailable")
    async def unavailable(request: web.Request) -> web.Response:
        handlers.runs["unavailable"] += 1
        raise web.HTTPServiceUnavailable(text="later")

    @routes.post("/raises")
    async def raises(request: web.Request) -> web.Response:
        handlers.runs["raises"] += 1
        raise RuntimeError("handler failed")

    @routes.post("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        handlers.runs["stream"] += 1
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"x" * 600)
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes(routes)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port, cancelling handlers whose client left."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def guarded(
    store: RecordStore, config: HttpIdempotencyConfig | None = None
) -> AsyncIterator[tuple[aiohttp.ClientSession, Handlers]]:
    handlers = Handlers()
    app = build_app(handlers)
    setup(app, store=store, config=config)
    async with serving(app) as url, aiohttp.ClientSession(base_url=url) as client:
        yield client, handlers


@asynccontextmanager
async def post(
    client: aiohttp.ClientSession,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    seconds: float | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    sent = {"Idempotency-Key": KEY, "Content-Type": "application/json", **(headers or {})}
    limit = aiohttp.ClientTimeout(total=seconds) if seconds else None
    async with client.post(path, data=body, headers=sent, timeout=limit) as response:
        await response.read()
        yield response


def record_key(path: str, body: bytes, *, key: str = KEY, scope: str | None = None) -> str:
    fingerprint = request_fingerprint("POST", path, "", body)
    return call_identity(HttpIdempotencyConfig(), key=key, scope=scope, fingerprint=fingerprint).key


async def record_is_gone(store: RecordStore, key: str) -> bool:
    try:
        await store.get_record(key)
    except IdempotencyItemNotFoundError:
        return True
    return False


async def wait_until_gone(store: RecordStore, key: str) -> None:
    for _ in range(200):
        if await record_is_gone(store, key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"record {key!r} was never released")


async def problem(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.content_type == "application/problem+json"
    document: dict[str, Any] = json.loads(await response.read())
    assert document["status"] == response.status
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


# --- replay -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_retry_gets_the_first_response_replayed(dynamo_store: AsyncDynamoStore) -> None:
    requests = RequestLog().attach(await dynamo_store.client())
    async with guarded(dynamo_store) as (client, handlers):
        async with post(client, "/orders", b'{"item": "book"}') as first:
            first_body = await first.read()
            assert requests.operations == ["PutItem", "UpdateItem"]
            requests.clear()
        async with post(client, "/orders", b'{"item": "book"}') as retry:
            assert requests.operations == ["PutItem"]
            assert first.status == retry.status == 201
            assert await retry.read() == first_body
            assert REPLAYED not in first.headers
            assert retry.headers[REPLAYED] == "true"
            assert retry.headers["X-Order-Count"] == "1"
            assert retry.content_type == "application/json"
            assert "s3cr3t" in first.headers["Set-Cookie"]
            assert "Set-Cookie" not in retry.headers
    assert handlers.runs["orders"] == 1
    record = await dynamo_store.get_record(record_key("/orders", b'{"item": "book"}'))
    assert record.status is RecordStatus.COMPLETED


@pytest.mark.asyncio
async def test_binary_and_large_bodies_replay_byte_for_byte(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        for path, expected in (("/binary", BINARY_BODY), ("/large", LARGE_BODY)):
            key = {"Idempotency-Key": path}
            async with (
                post(client, path, headers=key) as first,
                post(client, path, headers=key) as retry,
            ):
                assert await first.read() == await retry.read() == expected
                assert retry.headers[REPLAYED] == "true"
    assert handlers.runs["binary"] == handlers.runs["large"] == 1


@pytest.mark.asyncio
async def test_a_raised_4xx_is_stored_and_replayed(dynamo_store: AsyncDynamoStore) -> None:
    async with (
        guarded(dynamo_store) as (client, handlers),
        post(client, "/conflict") as first,
        post(client, "/conflict") as retry,
    ):
        assert first.status == retry.status == 409
        assert await retry.text() == await first.text() == "already shipped"
        assert retry.headers[REPLAYED] == "true"
    assert handlers.runs["conflict"] == 1


@pytest.mark.asyncio
async def test_concurrent_duplicates_run_the_handler_once(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):

        async def one() -> tuple[int, bool, bytes]:
            async with post(client, "/slow", b"pay") as response:
                return response.status, REPLAYED in response.headers, await response.read()

        outcomes = await asyncio.gather(*(one() for _ in range(30)))
    assert handlers.runs["slow"] == 1
    fresh = [body for status, replayed, body in outcomes if status == 200 and not replayed]
    replayed = [body for status, replayed, body in outcomes if status == 200 and replayed]
    conflicts = [status for status, _, _ in outcomes if status == 409]
    assert len(fresh) == 1
    assert len(fresh) + len(replayed) + len(conflicts) == 30
    assert all(body == fresh[0] for body in replayed)


@pytest.mark.asyncio
async def test_a_duplicate_while_running_gets_409_with_retry_after(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store, HttpIdempotencyConfig(retry_after_seconds=2)) as (
        client,
        handlers,
    ):
        handlers.slow_seconds = 1.0

        async def first_call() -> int:
            async with post(client, "/slow", b"pay") as response:
                return response.status

        first = asyncio.create_task(first_call())
        await handlers.slow_started.wait()
        async with post(client, "/slow", b"pay") as duplicate:
            assert duplicate.status == 409
            assert duplicate.headers["Retry-After"] == "2"
            assert "still being processed" in (await problem(duplicate))["detail"]
        assert await first == 200
    assert handlers.runs["slow"] == 1


# --- the header and the fingerprint ----------------------------------------------------------


@pytest.mark.asyncio
async def test_missing_and_invalid_keys(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store, HttpIdempotencyConfig(require_key=True)) as (
        client,
        handlers,
    ):
        async with client.post("/orders", json={}) as missing:
            assert missing.status == 400
            assert "Idempotency-Key" in (await problem(missing))["detail"]
        for value in ("", '"unclosed', "two words", "x" * 256):
            async with client.post("/orders", json={}, headers={"Idempotency-Key": value}) as bad:
                assert bad.status == 400
                assert (await problem(bad))["title"] == "Bad Request"
        async with post(
            client, "/orders", b"{}", headers={"Idempotency-Key": '"quoted key"'}
        ) as ok:
            assert ok.status == 201
    assert handlers.runs["orders"] == 1


@pytest.mark.asyncio
async def test_a_missing_key_passes_through_by_default(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        for _ in range(2):
            async with client.post("/orders", json={}) as response:
                assert response.status == 201
                assert REPLAYED not in response.headers
    assert handlers.runs["orders"] == 2


@pytest.mark.asyncio
async def test_the_same_key_for_a_different_request_is_422(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        async with post(client, "/orders", b'{"n": 1}') as first:
            assert first.status == 201
        async with post(client, "/orders", b'{"n": 2}') as other:
            assert other.status == 422
            assert "different request" in (await problem(other))["detail"]
    assert handlers.runs["orders"] == 1


@pytest.mark.asyncio
async def test_get_passes_through_untouched(dynamo_store: AsyncDynamoStore) -> None:
    requests = RequestLog().attach(await dynamo_store.client())
    async with guarded(dynamo_store, HttpIdempotencyConfig(require_key=True)) as (client, _):
        listed = []
        for _ in range(2):
            async with client.get("/orders", headers={"Idempotency-Key": KEY}) as response:
                assert REPLAYED not in response.headers
                listed.append((await response.json())["listed"])
    assert listed == [1, 2]
    assert requests.count == 0


# --- outcomes not stored ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "status"), [("/server-error", 503), ("/unavailable", 503)])
async def test_5xx_releases_the_key(dynamo_store: AsyncDynamoStore, path: str, status: int) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        async with post(client, path) as first:
            assert first.status == status
        assert await record_is_gone(dynamo_store, record_key(path, b""))
        async with post(client, path) as retry:
            assert retry.status == status
            assert REPLAYED not in retry.headers
    assert handlers.runs[path.strip("/")] == 2


@pytest.mark.asyncio
async def test_a_handler_that_raises_releases_the_key(dynamo_store: AsyncDynamoStore) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        for _ in range(2):
            async with post(client, "/raises") as response:
                assert response.status == 500
            assert await record_is_gone(dynamo_store, record_key("/raises", b""))
    assert handlers.runs["raises"] == 2


@pytest.mark.asyncio
async def test_a_client_disconnect_mid_request_releases_the_key(
    dynamo_store: AsyncDynamoStore,
) -> None:
    async with guarded(dynamo_store) as (client, handlers):
        handlers.slow_seconds = 30
        with pytest.raises(TimeoutError):
            async with post(client, "/slow", b"pay", seconds=0.5):
                pass
        await asyncio.wait_for(handlers.cancelled.wait(), 10)
        await wait_until_gone(dynamo_store, record_key("/slow", b"pay"))
        handlers.slow_seconds = 0
        async with post(client, "/slow", b"pay") as retry:
            assert retry.status == 200
            assert REPLAYED not in retry.headers
    assert handlers.runs["slow"] == 2


@pytest.mark.asyncio
async def test_streamed_and_oversized_responses_pass_through_unstored(
    dynamo_store: AsyncDynamoStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = HttpIdempotencyConfig(max_capture_bytes=4096)
    async with guarded(dynamo_store, config) as (client, handlers):
        for path, expected in (("/stream", b"x" * 2400), ("/binary", BINARY_BODY)):
            key = {"Idempotency-Key": path}
            for _ in range(2):
                async with post(client, path, headers=key) as response:
                    assert response.status == 200
                    assert await response.read() == expected
                    assert REPLAYED not in response.headers
                # A streaming handler has sent all before returning: the release follows.
                await wait_until_gone(dynamo_store, record_key(path, b"", key=path))
    assert handlers.runs["stream"] == handlers.runs["binary"] == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("the handler streams its response" in m for m in messages) == 2
    assert sum("exceeded 4096 bytes" in m for m in messages) == 2


# --- the store, scope, setup ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unavailable_store_fails_closed_or_open(caplog: pytest.LogCaptureFixture) -> None:
    async with unreachable_store() as store:
        async with guarded(store) as (client, handlers), post(client, "/orders", b"{}") as closed:
            assert closed.status == 503
            assert closed.headers["Retry-After"] == "1"
            assert "unavailable" in (await problem(closed))["detail"]
        assert handlers.runs["orders"] == 0
        async with (
            guarded(store, HttpIdempotencyConfig(fail_open=True)) as (client, handlers),
            post(client, "/orders", b"{}") as opened,
        ):
            assert opened.status == 201
        assert handlers.runs["orders"] == 1
    assert any("runs unprotected" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_tenants_with_the_same_key_each_run_once(dynamo_store: AsyncDynamoStore) -> None:
    config = HttpIdempotencyConfig(scope=lambda request: request.headers["X-Tenant"])
    async with guarded(dynamo_store, config) as (client, handlers):
        for tenant in ("acme", "globex", "acme", "globex"):
            async with post(client, "/orders", b"{}", headers={"X-Tenant": tenant}) as response:
                assert (await response.json())["tenant"] == tenant
    assert handlers.runs["orders"] == 2


@pytest.mark.asyncio
async def test_setup_records_store_and_config_under_typed_keys(
    dynamo_store: AsyncDynamoStore,
) -> None:
    app = web.Application()
    config = HttpIdempotencyConfig(require_key=True)
    setup(app, store=dynamo_store, config=config)
    assert app[STORE_KEY] is dynamo_store
    assert app[CONFIG_KEY] is config
    assert len(app.middlewares) == 1


@pytest.mark.asyncio
async def test_the_middleware_factory_works_on_its_own(dynamo_store: AsyncDynamoStore) -> None:
    runs = Counter[str]()

    async def pay(request: web.Request) -> web.Response:
        runs["pay"] += 1
        return web.json_response({"payment": runs["pay"]})

    app = web.Application(middlewares=[idempotency_middleware(store=dynamo_store)])
    app.router.add_post("/pay", pay)
    async with serving(app) as url, aiohttp.ClientSession(base_url=url) as client:
        bodies = []
        for _ in range(2):
            async with post(client, "/pay") as response:
                bodies.append(await response.json())
    assert bodies == [{"payment": 1}, {"payment": 1}]
    assert runs["pay"] == 1
