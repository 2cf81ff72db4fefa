"""Output serializers: how a result becomes JSON data and how a replay becomes a result.

A serializer is inferred from the function's return annotation (pydantic models
and dataclasses), or given explicitly as ``output_serializer=`` (a serializer
object, or a model/dataclass type). Names mirror the Powertools serializers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel


@runtime_checkable
class BaseIdempotencySerializer(Protocol):
    """Turns a result into JSON-able data and back."""

    def to_dict(self, data: Any) -> Any: ...

    def from_dict(self, data: Any) -> Any: ...


class NoOpSerializer:
    """Results that are already JSON data (dicts, lists, strings, numbers, None)."""

    def to_dict(self, data: Any) -> Any:
        return data

    def from_dict(self, data: Any) -> Any:
        return data


class PydanticSerializer:
    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def to_dict(self, data: Any) -> Any:
        return data.model_dump(mode="json") if isinstance(data, BaseModel) else data

    def from_dict(self, data: Any) -> Any:
        return self.model.model_validate(data)


class DataclassSerializer:
    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls

    def to_dict(self, data: Any) -> Any:
        if dataclasses.is_dataclass(data) and not isinstance(data, type):
            return dataclasses.asdict(data)
        return data

    def from_dict(self, data: Any) -> Any:
        return self.cls(**data)


def serializer_for_type(tp: Any) -> BaseIdempotencySerializer | None:
    """A serializer for a model or dataclass type (``X | None`` included), or None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if len(args) != 1:
            return None
        tp = args[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _optional(PydanticSerializer(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _optional(DataclassSerializer(tp))
    return None


class _OptionalSerializer:
    """Lets ``None`` through a typed serializer, for ``-> Model | None`` functions."""

    def __init__(self, inner: BaseIdempotencySerializer) -> None:
        self.inner = inner

    def to_dict(self, data: Any) -> Any:
        return None if data is None else self.inner.to_dict(data)

    def from_dict(self, data: Any) -> Any:
        return None if data is None else self.inner.from_dict(data)


def _optional(inner: BaseIdempotencySerializer) -> BaseIdempotencySerializer:
    return _OptionalSerializer(inner)


def resolve_serializer(
    function: Callable[..., Any], explicit: BaseIdempotencySerializer | type[Any] | None
) -> BaseIdempotencySerializer:
    """The explicit serializer, else one inferred from the return annotation, else no-op."""
    if explicit is not None:
        if isinstance(explicit, type):
            inferred = serializer_for_type(explicit)
            if inferred is None:
                raise TypeError(
                    f"output_serializer type {explicit.__name__} is neither a pydantic model "
                    "nor a dataclass"
                )
            return inferred
        return explicit
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        # An annotation that cannot be resolved: replay plain JSON data.
        return NoOpSerializer()
    return serializer_for_type(hints.get("return")) or NoOpSerializer()
