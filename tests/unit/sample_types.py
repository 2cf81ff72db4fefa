"""Enum and model types that payloads and results are built from, shared by the key and
serialization tests: Powertools encodes each kind its own way, and a replay must give the
type back."""

import enum
from decimal import Decimal

import pydantic


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Item(pydantic.BaseModel):
    sku: str
    price: Decimal
    colour: Colour


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Tier(enum.StrEnum):
    FREE = "free"
    PAID = "paid"
