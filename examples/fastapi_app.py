"""A FastAPI payments API whose POST runs once per ``Idempotency-Key``.

Run it::

    python examples/fastapi_app.py --port 8000

then create a payment, twice, with the same key::

    curl -i localhost:8000/payments -H 'Idempotency-Key: pay-1' \\
         -H 'Content-Type: application/json' -d '{"amount_cents": 1250}'

The second answer is the first one replayed (``Idempotent-Replayed: true``),
and ``GET /payments`` lists one payment. With no AWS_ENDPOINT_URL_DYNAMODB (or
AWS_ENDPOINT_URL) the example starts a local DynamoDB-protocol server on
loopback, so it needs no AWS account; set it (and IDEMSTORE_TABLE) to use
another endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from dynamodb_endpoint import dynamodb_endpoint
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from idemstore import AsyncDynamoStore, RecordStore, create_table
from idemstore.integrations.asgi import HttpIdempotencyConfig, IdempotencyMiddleware


class PaymentRequest(BaseModel):
    amount_cents: int = Field(gt=0)
    currency: str = "EUR"


class Payment(BaseModel):
    id: str
    account: str
    amount_cents: int
    currency: str


def account_of(request: Request) -> str:
    """The key's namespace: two accounts may use the same key without meeting."""
    return request.headers.get("X-Account", "anonymous")


def create_app(store: RecordStore) -> FastAPI:
    app = FastAPI(title="payments")
    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        config=HttpIdempotencyConfig(require_key=True, scope=account_of),
    )
    ledger: list[Payment] = []

    @app.post("/payments", status_code=201)
    async def create_payment(payment: PaymentRequest, request: Request) -> Payment:
        created = Payment(
            id=f"pay_{len(ledger) + 1}", account=account_of(request), **payment.model_dump()
        )
        ledger.append(created)
        return created

    @app.get("/payments")
    async def list_payments() -> list[Payment]:
        return ledger

    return app


@asynccontextmanager
async def idempotency_store() -> AsyncIterator[AsyncDynamoStore]:
    """The store at the configured endpoint, or on a local server started here; table created."""
    with dynamodb_endpoint() as endpoint:
        async with endpoint.store(os.environ.get("IDEMSTORE_TABLE", "idempotency")) as store:
            await create_table(store)
            yield store


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    async with idempotency_store() as store:
        # Listening before the server starts: the port is known (even for --port 0),
        # and early connections wait in the backlog.
        listening = socket.create_server((args.host, args.port))
        port = listening.getsockname()[1]
        print(f"serving on http://{args.host}:{port}", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(store)))
        await server.serve(sockets=[listening])  # until Ctrl-C or SIGTERM


if __name__ == "__main__":
    asyncio.run(main())
