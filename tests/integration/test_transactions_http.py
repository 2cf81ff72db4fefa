"""Staged writes from an HTTP handler behind the ASGI ``Idempotency-Key`` middleware."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from idemstore import IdempotencyStagingError, InMemoryStore
from idemstore.expressions import Attr
from idemstore.integrations.asgi import IdempotencyMiddleware
from idemstore.transactions import Put, Update, stage


def build_app(store: InMemoryStore, runs: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/payments")
    async def pay(payment: dict[str, Any], response: Response) -> dict[str, Any]:
        runs.append(payment["id"])
        stage(
            Update("accounts", {"pk": "alice"}, update=Attr("balance").add(-payment["amount"])),
            Put("accounts", {"pk": f"ledger#{payment['id']}", "amount": payment["amount"]}),
        )
        response.status_code = 201
        return {"paid": payment["id"]}

    app.add_middleware(IdempotencyMiddleware, store=store)
    return app


async def accounts_store() -> InMemoryStore:
    """A store whose ``accounts`` table holds alice's balance of 100."""
    store = InMemoryStore()
    store.create_table("accounts", "pk")
    await store.complete_with_writes(None, [Put("accounts", {"pk": "alice", "balance": 100})])
    return store


async def post_payment(
    store: InMemoryStore, runs: list[str], *, times: int, headers: dict[str, str]
) -> list[httpx.Response]:
    """POST payment p1 of 30 ``times`` with ``headers`` to the app over ``store``."""
    transport = httpx.ASGITransport(app=build_app(store, runs))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        payment = {"id": "p1", "amount": 30}
        return [await client.post("/payments", json=payment, headers=headers) for _ in range(times)]


@pytest.mark.asyncio
async def test_a_handlers_staged_writes_apply_once_per_idempotency_key() -> None:
    store = await accounts_store()
    runs: list[str] = []
    headers = {"Idempotency-Key": "pay-1"}
    first, second = await post_payment(store, runs, times=2, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() == {"paid": "p1"}
    assert runs == ["p1"]
    items = {item["pk"]["S"]: item for item in store.table_items("accounts")}
    assert items["alice"]["balance"] == {"N": "70"}
    assert items["ledger#p1"]["amount"] == {"N": "30"}


@pytest.mark.asyncio
async def test_without_an_idempotency_key_staging_is_refused_and_writes_nothing() -> None:
    store = await accounts_store()
    runs: list[str] = []
    with pytest.raises(IdempotencyStagingError, match="without an Idempotency-Key"):
        await post_payment(store, runs, times=1, headers={})

    assert runs == ["p1"]
    assert [item["pk"]["S"] for item in store.table_items("accounts")] == ["alice"]
    assert store.table_items("accounts")[0]["balance"] == {"N": "100"}
