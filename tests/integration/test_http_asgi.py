"""What only the ASGI middleware does: per-route guarding (FastAPI route class), an app
that keeps working after its response, and the exchange's refusal of a broken protocol.
Everything both middlewares do alike is in test_http_conformance.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, BackgroundTasks, FastAPI
from starlette.types import Message, Receive, Scope, Send
from test_http_conformance import KEY, REPLAYED, uvicorn_serving

from idemstore import AsyncDynamoStore, InMemoryStore
from idemstore.integrations.asgi import (
    HttpIdempotencyConfig,
    IdempotencyMiddleware,
    idempotent_route_class,
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
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
        paid = [await client.post("/payments", headers={"Idempotency-Key": KEY}) for _ in range(2)]
        noted = [await client.post("/notes", headers={"Idempotency-Key": KEY}) for _ in range(2)]
    assert paid[1].headers[REPLAYED] == "true"
    assert paid[1].json() == paid[0].json() == {"payment": 1}
    assert [r.json()["note"] for r in noted] == [1, 2]
    assert runs == {"payments": 1, "notes": 2}


def background_app(
    store: AsyncDynamoStore, runs: Counter[str], may_finish: asyncio.Event, done: asyncio.Event
) -> Any:
    app = FastAPI()

    @app.post("/background")
    async def with_background(tasks: BackgroundTasks) -> dict[str, int]:
        runs["background"] += 1

        async def after_response() -> None:
            await may_finish.wait()
            done.set()

        tasks.add_task(after_response)
        return {"background": runs["background"]}

    @app.post("/background-fails")
    async def with_failing_background(tasks: BackgroundTasks) -> dict[str, int]:
        runs["background-fails"] += 1

        async def after_response() -> None:
            raise RuntimeError("background work failed")

        tasks.add_task(after_response)
        return {"background": runs["background-fails"]}

    app.add_middleware(IdempotencyMiddleware, store=store)
    return app


@pytest.mark.asyncio
async def test_work_after_the_response_neither_delays_nor_unstores_it(
    dynamo_store: AsyncDynamoStore,
) -> None:
    runs: Counter[str] = Counter()
    may_finish, done = asyncio.Event(), asyncio.Event()
    app = background_app(dynamo_store, runs, may_finish, done)
    # A real server: the in-process transport would wait for the app to return.
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        headers = {"Idempotency-Key": KEY}
        first = await client.post("/background", headers=headers)
        assert not done.is_set()
        may_finish.set()
        await asyncio.wait_for(done.wait(), 10)
        retry = await client.post("/background", headers=headers)
        other = {"Idempotency-Key": "other"}
        failing = [await client.post("/background-fails", headers=other) for _ in range(2)]
    assert retry.headers[REPLAYED] == "true"
    assert retry.content == first.content
    assert runs["background"] == 1
    assert [r.status_code for r in failing] == [200, 200]
    assert failing[1].headers[REPLAYED] == "true"
    assert runs["background-fails"] == 1


@pytest.mark.asyncio
async def test_an_app_breaking_the_protocol_gets_an_error_not_a_mangled_response() -> None:
    """A body after the whole response: refused by the exchange, nothing more is sent."""
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        await send({"type": "http.response.body", "body": b"more"})

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"k")],
    }
    unread: list[Message] = [{"type": "http.request", "body": b""}]

    async def receive() -> Message:
        if unread:
            return unread.pop()
        await asyncio.Event().wait()  # the client stays until the exchange is over
        return {"type": "http.disconnect"}

    middleware = IdempotencyMiddleware(app, store=InMemoryStore(), config=HttpIdempotencyConfig())
    with pytest.raises(RuntimeError, match="broke the ASGI protocol"):
        await middleware(scope, receive, send)
    assert [m.get("body") for m in sent] == [None, b"done"]
