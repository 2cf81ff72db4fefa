"""What one idempotent call came to: the engine's answer to every integration. Pure.

Every entry point (decorators, HTTP middleware, batch records) gets an
``Outcome`` from the engine and maps it to its own world (a return value, an
HTTP answer, a batch item failure, a span); none of them guesses what happened.
A call tells the engine not to store its result by returning ``Unstored``,
never by raising through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from idemstore.records import DataRecord

T = TypeVar("T")


class OutcomeKind(StrEnum):
    """How the value of a call was obtained."""

    EXECUTED = "executed"
    """The function ran in this call."""
    REPLAYED = "replayed"
    """A completed record from the store was replayed."""
    CACHED = "cached"
    """A completed record from the local cache was replayed, with no request."""
    ATTACHED = "attached"
    """The same key's call, running in this process, finished first; its record was replayed."""
    UNPROTECTED = "unprotected"
    """The payload had no idempotency key: the function ran without a record."""
    DISABLED = "disabled"
    """``IDEMSTORE_DISABLED`` is set: the function ran without a record."""


REPLAYS = frozenset({OutcomeKind.REPLAYED, OutcomeKind.CACHED, OutcomeKind.ATTACHED})
"""The kinds whose value came from a stored record rather than from running the function."""


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """What a call is known by: its idempotency key and (with validation) payload hash."""

    key: str
    payload_hash: str | None


@dataclass(frozen=True, slots=True)
class Unstored(Generic[T]):
    """Returned by a call to hand ``value`` to its caller without storing it.

    Without ``record_as`` the lock is released, so a retry runs the function
    again. With ``record_as`` (JSON data), that is stored in place of the
    result: the key is done, and duplicates replay ``record_as`` instead,
    through the engine's output serializer like any stored result (so for a
    typed function it must have the result's shape). ``record_as`` that is not
    JSON data releases the lock and raises ``IdempotencySerializationError``.
    """

    value: T
    reason: str
    record_as: Any = None

    @property
    def releases(self) -> bool:
        return self.record_as is None


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The value a call gives its caller, how it was obtained, and the record behind it.

    ``record`` is the completed record replayed or written (None when nothing
    was stored); ``stored`` says whether this call's own result is what the
    record holds (False for a replay, and for an ``Unstored`` result).
    """

    kind: OutcomeKind
    value: T
    identity: CallIdentity | None = None
    record: DataRecord | None = None
    stored: bool = False
    unstored_reason: str | None = None

    @property
    def replayed(self) -> bool:
        return self.kind in REPLAYS

    @property
    def executed(self) -> bool:
        """Whether the function ran in this call (protected or not)."""
        return not self.replayed
