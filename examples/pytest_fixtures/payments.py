"""Code under test in the README's style: a store at module scope and a decorator.

Nothing here knows about tests. The store is built without ``endpoint_url``,
so its client, made on first use, finds the endpoint, region and credentials
in the environment: AWS in production, the local server under the
``dynamo_endpoint`` fixture.
"""

from __future__ import annotations

from pydantic import BaseModel

from idemstore import AsyncDynamoStore, IdempotencyConfig, idempotent_function

store = AsyncDynamoStore("payments-idempotency")  # module scope; no I/O until first use

charges: list[str] = []
"""Each payment actually charged, in order: what the tests observe."""


class Payment(BaseModel):
    payment_id: str
    amount_cents: int


class Receipt(BaseModel):
    payment_id: str
    charged_cents: int


@idempotent_function(
    data_keyword_argument="payment",
    persistence_store=store,
    config=IdempotencyConfig(event_key_jmespath="payment_id"),
)
async def charge(*, payment: Payment) -> Receipt:
    charges.append(payment.payment_id)
    return Receipt(payment_id=payment.payment_id, charged_cents=payment.amount_cents)
