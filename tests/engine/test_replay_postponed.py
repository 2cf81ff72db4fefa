"""Return-annotation inference in a module with postponed (string) annotations."""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic
import pytest

from idemstore import RecordStore, idempotent_function


class Invoice(pydantic.BaseModel):
    invoice_id: str
    paid: bool


@dataclasses.dataclass
class Label:
    text: str


@pytest.mark.asyncio
async def test_pydantic_model_inferred_from_a_string_annotation(
    store: RecordStore,
) -> None:
    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def invoice(order: dict[str, Any]) -> Invoice:
        return Invoice(invoice_id=order["id"], paid=True)

    assert isinstance(invoice.__annotations__["return"], str)
    await invoice(order={"id": "i-1"})
    replayed = await invoice(order={"id": "i-1"})
    assert isinstance(replayed, Invoice)
    assert replayed == Invoice(invoice_id="i-1", paid=True)


@pytest.mark.asyncio
async def test_optional_dataclass_inferred_from_a_string_annotation(
    store: RecordStore,
) -> None:
    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def label(order: dict[str, Any]) -> Label | None:
        return Label(text=order["id"])

    await label(order={"id": "l-1"})
    replayed = await label(order={"id": "l-1"})
    assert isinstance(replayed, Label)
    assert replayed == Label(text="l-1")
