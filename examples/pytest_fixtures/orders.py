"""The code under test: an order service that places each order once.

The store is passed in, so tests can hand it a local DynamoDB table or an
in-memory store, and production code a table in AWS.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from idemstore import IdempotencyConfig, RecordStore, idempotent_function


class Order(BaseModel):
    order_id: str
    amount_cents: int


class Confirmation(BaseModel):
    order_id: str
    confirmation_id: str


class PaymentDeclinedError(Exception):
    """The payment provider refused the charge; the order may be retried."""


class OrderService:
    def __init__(self, store: RecordStore) -> None:
        self.placed: list[Order] = []
        self.decline_next = False
        self.place = idempotent_function(
            data_keyword_argument="order",
            persistence_store=store,
            config=IdempotencyConfig(event_key_jmespath="order_id"),
        )(self._place)

    async def _place(self, order: Order) -> Confirmation:
        if self.decline_next:
            self.decline_next = False
            raise PaymentDeclinedError(order.order_id)
        self.placed.append(order)
        return Confirmation(order_id=order.order_id, confirmation_id=uuid.uuid4().hex)
