"""An aiohttp payments API whose POST runs once per ``Idempotency-Key``.

Run it::

    python examples/aiohttp_app.py --port 8080

then create a payment, twice, with the same key::

    curl -i localhost:8080/payments -H 'Idempotency-Key: pay-1' \\
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
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from dynamodb_endpoint import dynamodb_endpoint

from idemstore import AsyncDynamoStore, RecordStore, create_table
from idemstore.integrations.aiohttp import HttpIdempotencyConfig, setup

LEDGER = web.AppKey("ledger", list[dict[str, object]])


def account_of(request: web.Request) -> str:
    """The key's namespace: two accounts may use the same key without meeting."""
    return request.headers.get("X-Account", "anonymous")


async def create_payment(request: web.Request) -> web.Response:
    payment = await request.json()
    amount = payment.get("amount_cents")
    if not isinstance(amount, int) or amount <= 0:
        raise web.HTTPUnprocessableEntity(text="amount_cents must be a positive integer")
    ledger = request.app[LEDGER]
    created = {
        "id": f"pay_{len(ledger) + 1}",
        "account": account_of(request),
        "amount_cents": amount,
        "currency": payment.get("currency", "EUR"),
    }
    ledger.append(created)
    return web.json_response(created, status=201)


async def list_payments(request: web.Request) -> web.Response:
    return web.json_response(request.app[LEDGER])


def create_app(store: RecordStore) -> web.Application:
    app = web.Application()
    app[LEDGER] = []
    setup(app, store=store, config=HttpIdempotencyConfig(require_key=True, scope=account_of))
    app.router.add_post("/payments", create_payment)
    app.router.add_get("/payments", list_payments)
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
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with idempotency_store() as store:
        # handler_cancellation: a client that disconnects mid-request releases its key.
        runner = web.AppRunner(create_app(store), handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            port = runner.addresses[0][1]
            print(f"serving on http://{args.host}:{port}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
