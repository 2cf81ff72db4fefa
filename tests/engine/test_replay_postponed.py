"""Return-annotation inference in a module with postponed (string) annotations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic
import pytest

from engine.conftest import assert_replays_a_copy, order_function
from idemstore import RecordStore


class Invoice(pydantic.BaseModel):
    invoice_id: str
    paid: bool


@dataclasses.dataclass
class Label:
    text: str


INVOICE = Invoice(invoice_id="i-1", paid=True)
LABEL = Label(text="l-1")


async def invoice(order: dict[str, Any]) -> Invoice:
    return INVOICE


async def label(order: dict[str, Any]) -> Label | None:
    return LABEL


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("function", "result"),
    [(invoice, INVOICE), (label, LABEL)],
    ids=["pydantic model", "optional dataclass"],
)
async def test_result_type_is_inferred_from_a_string_annotation(
    store: RecordStore, function: Callable[..., Coroutine[Any, Any, Any]], result: Any
) -> None:
    assert isinstance(function.__annotations__["return"], str)
    await assert_replays_a_copy(order_function(store)(function), result)
