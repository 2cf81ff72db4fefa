"""Output serializers: how a result becomes JSON data and how a replay becomes a result.

A serializer is inferred from the function's return annotation, or given
explicitly as ``output_serializer=`` (a serializer object, or a model/dataclass
type). Any annotation pydantic can validate replays typed like the first result:
a ``TypeAdapter`` over it dumps the result in JSON mode and validates the stored
data back. The stored JSON is what Powertools stores (a model as its
``model_dump(mode="json")``, a dataclass as its fields, a ``Decimal`` as its
text), so records written by either library replay in the other. Names mirror
the Powertools serializers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pydantic import BaseModel, TypeAdapter

# pydantic is imported where a typed result needs it, not with this module: a function
# returning plain JSON data (the usual Lambda handler) never loads it.


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


class TypeAdapterSerializer:
    """Results of any type pydantic can validate: nested models and dataclasses,
    ``list[Model]``, ``dict[str, Decimal]``, enums, tuples, datetimes, UUIDs, ``X | None``.

    ``None`` replays as ``None`` whatever the type, as a record without a result does.
    """

    def __init__(self, result_type: Any) -> None:
        from pydantic import TypeAdapter
        from pydantic_core import SchemaSerializer

        self.result_type = result_type
        self.adapter: TypeAdapter[Any] = TypeAdapter(result_type)
        # The core serializer and validator, called directly when built: the adapter's
        # own methods add a Python layer to each call (half the cost of a small model).
        serializer = self.adapter.serializer
        built = isinstance(serializer, SchemaSerializer)
        self._dump = serializer.to_python if built else self.adapter.dump_python
        self._validate = (
            self.adapter.validator.validate_python if built else self.adapter.validate_python
        )

    def to_dict(self, data: Any) -> Any:
        # No warnings for a value that is not of the annotated type (a dict returned by
        # a function annotated with a model): it is stored as pydantic infers it, and
        # validated into the annotated type on replay. A value pydantic cannot dump
        # at all raises PydanticSerializationError, a ValueError.
        return self._dump(data, mode="json", warnings=False)

    def from_dict(self, data: Any) -> Any:
        return None if data is None else self._validate(data)


class PydanticSerializer(TypeAdapterSerializer):
    """A pydantic model (Powertools' name)."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__(model)
        self.model = model


class DataclassSerializer(TypeAdapterSerializer):
    """A dataclass, its nested dataclasses and fields typed on replay (Powertools' name)."""

    def __init__(self, cls: type[Any]) -> None:
        super().__init__(cls)
        self.cls = cls


_JSON_SCALARS: frozenset[Any] = frozenset({str, int, float, bool, type(None)})


def json_exact(tp: Any) -> bool:
    """Whether a JSON round trip already gives back a value of type ``tp`` unchanged,
    so no adapter is needed: ``Any``, ``object``, ``dict``, ``list[str]``,
    ``dict[str, object]``, ``dict[str, int | None]``...

    Only exact types count (a ``StrEnum`` is a ``str`` subclass that JSON would not
    give back), and only string-keyed dicts (JSON keys are strings).
    """
    # ``object`` promises no more than ``Any``: whatever JSON gives back is one.
    if tp is Any or tp is object or tp is None or tp in (dict, list):
        return True
    if isinstance(tp, type) and tp in _JSON_SCALARS:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return json_exact(args[0])
    if origin is dict:
        return args[0] is str and json_exact(args[1])
    if origin in (typing.Union, types.UnionType):
        return all(json_exact(arg) for arg in args)
    if origin is Literal:
        return all(type(arg) in _JSON_SCALARS for arg in args)
    return False


def serializer_for_type(tp: Any) -> BaseIdempotencySerializer | None:
    """A serializer replaying results of type ``tp``; None when plain JSON data is
    already exact, or when pydantic cannot build a schema for it."""
    if json_exact(tp):
        return None
    from pydantic import PydanticUserError

    try:
        return TypeAdapterSerializer(tp)
    except (PydanticUserError, TypeError, NameError):
        # A type pydantic cannot validate (an arbitrary class, a forward reference
        # it cannot resolve): replay plain JSON data, as for an unannotated function.
        return None


class _DeferredSerializer:
    """The annotation's serializer, resolved on first use: a postponed annotation may
    name a class defined after the function, in the same module."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function
        self._resolved: BaseIdempotencySerializer | None = None

    def _serializer(self) -> BaseIdempotencySerializer:
        if self._resolved is None:
            self._resolved = _from_annotation(self._function) or NoOpSerializer()
        return self._resolved

    def to_dict(self, data: Any) -> Any:
        return self._serializer().to_dict(data)

    def from_dict(self, data: Any) -> Any:
        return self._serializer().from_dict(data)


def _from_annotation(function: Callable[..., Any]) -> BaseIdempotencySerializer | None:
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        return None  # an annotation that cannot be resolved: plain JSON data
    return serializer_for_type(hints.get("return", Any))


def resolve_serializer(
    function: Callable[..., Any], explicit: BaseIdempotencySerializer | type[Any] | None
) -> BaseIdempotencySerializer:
    """The explicit serializer, else one inferred from the return annotation, else no-op.

    Called once per decorated function: the adapter is built here (or on first use,
    for an annotation naming a class not defined yet), never per call.
    """
    if explicit is not None:
        if isinstance(explicit, type) and issubclass(explicit, TypeAdapterSerializer):
            # Powertools' idiom, ``output_serializer=PydanticSerializer``: the model
            # is the return annotation.
            inferred = _from_annotation(function)
            if inferred is None:
                raise TypeError(
                    f"output_serializer={explicit.__name__} needs a return annotation naming "
                    f"the result type on {function.__qualname__}"
                )
            return inferred
        if isinstance(explicit, type):
            from pydantic import BaseModel

            if not (issubclass(explicit, BaseModel) or dataclasses.is_dataclass(explicit)):
                raise TypeError(
                    f"output_serializer type {explicit.__name__} is neither a pydantic model "
                    "nor a dataclass"
                )
            return TypeAdapterSerializer(explicit)
        return explicit
    try:
        hints = typing.get_type_hints(function)
    except NameError:
        # A name not defined yet (a class further down the module): try again on first use.
        return _DeferredSerializer(function)
    except TypeError:
        return NoOpSerializer()
    return serializer_for_type(hints.get("return", Any)) or NoOpSerializer()
