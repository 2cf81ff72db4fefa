"""What only the aiohttp integration has: ``setup`` with typed app keys, and the
middleware factory on its own. Everything both middlewares do alike is in
test_http_conformance.py."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from aiohttp import web
from test_http_conformance import KEY, REPLAYED, aiohttp_serving

from idemstore import AsyncDynamoStore
from idemstore.integrations.aiohttp import (
    CONFIG_KEY,
    STORE_KEY,
    HttpIdempotencyConfig,
    idempotency_middleware,
    setup,
)


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
    async with aiohttp_serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        responses = [await client.post("/pay", headers={"Idempotency-Key": KEY}) for _ in range(2)]
    assert [r.json() for r in responses] == [{"payment": 1}, {"payment": 1}]
    assert responses[1].headers[REPLAYED] == "true"
    assert runs["pay"] == 1
