"""The expressions: attribute paths, conditions and update actions, and the values they hold.

Python values are encoded in DynamoDB's typed form here, and every expression is
checked as it is built, so one DynamoDB would reject fails before any request.
Compiling them is ``compiler``'s work, running them in Python ``evaluator``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NoReturn, TypeAlias, get_args, overload

from idemstore.errors import ExpressionError

AttributeValue: TypeAlias = dict[str, Any]
"""A value in DynamoDB's typed form, e.g. ``{"S": "x"}`` or ``{"N": "42"}``."""

Item: TypeAlias = Mapping[str, AttributeValue]
Number: TypeAlias = int | float | Decimal
Value: TypeAlias = (
    str
    | Number
    | bytes
    | bool
    | AbstractSet[str]
    | AbstractSet[bytes]
    | AbstractSet[Number]
    | Sequence["Value"]
    | Mapping[str, "Value"]
    | None
)
"""A Python value with a DynamoDB type: ``set``/``frozenset`` become ``SS``/``NS``/``BS``,
``list``/``tuple`` become ``L`` and mappings with string keys ``M``."""
Operator: TypeAlias = Literal["=", "<>", "<", "<=", ">", ">="]
TypeName: TypeAlias = Literal["S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M"]
"""DynamoDB's data type names, as ``attribute_type`` takes them."""

MAX_IN_OPERANDS = 100
"""DynamoDB's limit on the operands of one ``IN``."""

_NUMBER_KINDS = (int, float, Decimal)
_TYPE_NAMES: frozenset[str] = frozenset(get_args(TypeName))
SET_KINDS = frozenset({"SS", "NS", "BS"})
ORDERED_KINDS = frozenset({"S", "N", "B"})


@dataclass(frozen=True, slots=True)
class Param:
    """A value left open in a prepared expression, given per call by name."""

    name: str


Operand: TypeAlias = Value | Param
"""What a comparison or a SET action takes: a value, or a parameter."""


def to_attribute_value(value: Value) -> AttributeValue:
    """Encode a Python value in DynamoDB's typed form."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, _NUMBER_KINDS):
        # Inline, not _number_text(): binding a prepared request runs this on every call.
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError(f"DynamoDB numbers must be finite, got {value!r}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ExpressionError(f"DynamoDB numbers must be finite, got {value!r}")
        return {"N": str(value)}
    if isinstance(value, set | frozenset):
        return _encode_set(value)
    if isinstance(value, list | tuple):
        return {"L": [to_attribute_value(element) for element in value]}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("cannot encode a mapping with non-string keys as a DynamoDB map")
        return {"M": {key: to_attribute_value(member) for key, member in value.items()}}
    raise TypeError(f"cannot encode {type(value).__name__} as a DynamoDB attribute value")


def _number_text(value: Number) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"DynamoDB numbers must be finite, got {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ExpressionError(f"DynamoDB numbers must be finite, got {value!r}")
    return str(value)


def _encode_set(value: AbstractSet[Any]) -> AttributeValue:
    if not value:
        raise ExpressionError("DynamoDB has no empty sets; remove the attribute instead")
    # Sorted, so one set always compiles to the same request.
    if all(isinstance(element, str) for element in value):
        return {"SS": sorted(value)}
    if all(isinstance(element, bytes) for element in value):
        return {"BS": sorted(value)}
    if all(isinstance(e, _NUMBER_KINDS) and not isinstance(e, bool) for e in value):
        return {"NS": [_number_text(e) for e in sorted(value, key=Decimal)]}
    raise TypeError(
        "cannot encode a set as a DynamoDB set unless its elements are all str, "
        "all bytes or all numbers"
    )


def kind_of(value: AttributeValue) -> str:
    """The type name of a typed value: ``kind_of({"N": "1"}) == "N"``."""
    ((kind, _),) = value.items()
    return kind


def order(left: AttributeValue, right: AttributeValue) -> bool:
    """``left < right`` for two values of one of the ordered types (S, N, B)."""
    ((kind, lraw),) = left.items()
    ((_, rraw),) = right.items()
    if kind == "N":
        return Decimal(lraw) < Decimal(rraw)
    return bool(lraw < rraw)  # strings by code point (as UTF-8 bytes), binary unsigned


class Condition:
    """Base of condition expressions; combine with ``&``, ``|`` and ``~``."""

    __slots__ = ()

    def __and__(self, other: Condition) -> Condition:
        return And(self, other)

    def __or__(self, other: Condition) -> Condition:
        return Or(self, other)

    def __invert__(self) -> Condition:
        return Not(self)

    def __bool__(self) -> bool:
        raise TypeError(
            "a Condition has no truth value; combine conditions with &, | and ~ "
            "instead of and, or and not, and compare values with evaluate()"
        )


class _Comparable:
    """An operand that comparisons, ``between`` and ``is_in`` take on their left."""

    __slots__ = ()

    def _compare(self, op: Operator, value: Operand) -> Condition:
        subject = self._subject()
        if isinstance(value, Param):
            return CompareParam(subject, op, value)
        to_attribute_value(value)  # fail at build time, not at compile time
        return Compare(subject, op, value)

    def _subject(self) -> Attr | Size:
        raise NotImplementedError  # every subclass is one of the two

    # Comparisons return conditions, not booleans: that is the point of the builder.
    def __eq__(self, value: Operand) -> Condition:  # type: ignore[override]
        return self._compare("=", value)

    def __ne__(self, value: Operand) -> Condition:  # type: ignore[override]
        return self._compare("<>", value)

    def __lt__(self, value: Operand) -> Condition:
        return self._compare("<", value)

    def __le__(self, value: Operand) -> Condition:
        return self._compare("<=", value)

    def __gt__(self, value: Operand) -> Condition:
        return self._compare(">", value)

    def __ge__(self, value: Operand) -> Condition:
        return self._compare(">=", value)

    __hash__ = object.__hash__

    def between(self, low: Operand, high: Operand) -> Condition:
        """``low <= self <= high``, both bounds included (DynamoDB's ``BETWEEN``)."""
        if not isinstance(low, Param) and not isinstance(high, Param):
            check_bounds(to_attribute_value(low), to_attribute_value(high))
        return Between(self._subject(), low, high)

    def is_in(self, *values: Operand) -> Condition:
        """Equal to one of ``values`` (DynamoDB's ``IN``, 1 to 100 operands)."""
        if not 1 <= len(values) <= MAX_IN_OPERANDS:
            raise ExpressionError(f"IN takes 1 to {MAX_IN_OPERANDS} operands, got {len(values)}")
        for value in values:
            if not isinstance(value, Param):
                to_attribute_value(value)
        return In(self._subject(), values)


class _Term:
    """An operand of SET that ``+`` and ``-`` combine (DynamoDB allows one of them)."""

    __slots__ = ()

    def __add__(self, other: Term) -> Arithmetic:
        return Arithmetic(self._term(), "+", other)

    def __radd__(self, other: Term) -> Arithmetic:
        return Arithmetic(other, "+", self._term())

    def __sub__(self, other: Term) -> Arithmetic:
        return Arithmetic(self._term(), "-", other)

    def __rsub__(self, other: Term) -> Arithmetic:
        return Arithmetic(other, "-", self._term())

    def _term(self) -> Attr | IfNotExists | ListAppend:
        raise NotImplementedError  # every subclass is one of the three


PathStep: TypeAlias = str | int
"""A map key (``str``) or a list index (``int``) below a top-level attribute."""


@dataclass(frozen=True, eq=False, slots=True)
class Attr(_Comparable, _Term):
    """An attribute path: a top-level name, then map keys and list indexes.

    ``Attr("a").key("b")[2]`` is DynamoDB's ``a.b[2]``. Comparison operators
    build conditions; ``+`` and ``-`` build SET arithmetic.
    """

    name: str
    steps: tuple[PathStep, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ExpressionError("an attribute name must be a non-empty string")
        for step in self.steps:
            _check_step(step)

    def _subject(self) -> Attr:
        return self

    def _term(self) -> Attr:
        return self

    @property
    def path(self) -> tuple[PathStep, ...]:
        """The whole path: the name, then the steps."""
        return (self.name, *self.steps)

    def key(self, name: str) -> Attr:
        """The member ``name`` of this map."""
        return Attr(self.name, (*self.steps, name))

    def __getitem__(self, index: int) -> Attr:
        """The element at ``index`` of this list."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a list index is an int, got {index!r}; a map's member is .key(name)")
        return Attr(self.name, (*self.steps, index))

    # __getitem__ would make the old iteration protocol loop forever over a path.
    def __iter__(self) -> NoReturn:
        raise TypeError("an attribute path is not iterable")

    def __contains__(self, value: object) -> bool:
        raise TypeError("use Attr.contains(value) to build a contains() condition")

    def __str__(self) -> str:
        return self.name + "".join(
            f"[{step}]" if isinstance(step, int) else f".{step}" for step in self.steps
        )

    def exists(self) -> Condition:
        return Exists(self, True)

    def not_exists(self) -> Condition:
        return Exists(self, False)

    def begins_with(self, prefix: str | bytes | Param) -> Condition:
        if not isinstance(prefix, str | bytes | Param):
            raise ExpressionError(f"begins_with takes a str or bytes prefix, got {prefix!r}")
        return BeginsWith(self, prefix)

    def contains(self, value: Operand) -> Condition:
        """A substring of a string, an element of a set, or an element of a list."""
        if not isinstance(value, Param):
            to_attribute_value(value)
        return Contains(self, value)

    def attribute_type(self, type_name: TypeName) -> Condition:
        if type_name not in _TYPE_NAMES:
            raise ExpressionError(
                f"attribute_type takes one of {sorted(_TYPE_NAMES)}, got {type_name!r}"
            )
        return AttributeType(self, type_name)

    def size(self) -> Size:
        """The length of a string, binary, set, list or map, to compare."""
        return Size(self)

    @overload
    def set(self, value: Value | SetExpression) -> SetAction: ...

    @overload
    def set(self, value: Param) -> SetParamAction: ...

    def set(self, value: Operand | SetExpression) -> SetAction | SetParamAction:
        if isinstance(value, Param):
            return SetParamAction(self, value)
        _check_set_value(value)
        return SetAction(self, value)

    def remove(self) -> RemoveAction:
        return RemoveAction(self)

    def add(self, value: Operand) -> AddAction:
        """Add a number to a number (missing: from 0), or elements to a set."""
        if not isinstance(value, Param):
            check_action_value("ADD", to_attribute_value(value))
        return AddAction(self, value)

    def delete(self, value: Operand) -> DeleteAction:
        """Delete elements from a set; a set left empty is removed."""
        if not isinstance(value, Param):
            check_action_value("DELETE", to_attribute_value(value))
        return DeleteAction(self, value)


def check_bounds(low: AttributeValue, high: AttributeValue) -> None:
    low_kind, high_kind = kind_of(low), kind_of(high)
    if low_kind != high_kind or low_kind not in ORDERED_KINDS:
        raise ExpressionError(
            f"BETWEEN needs two bounds of one type among S, N and B, got {low_kind} and {high_kind}"
        )
    if order(high, low):
        raise ExpressionError(f"BETWEEN's lower bound {low} exceeds its upper bound {high}")


_ACTION_KINDS = {"ADD": ("a number or a set", {"N", *SET_KINDS}), "DELETE": ("a set", SET_KINDS)}


def check_action_value(action: Literal["ADD", "DELETE"], value: AttributeValue) -> None:
    what, kinds = _ACTION_KINDS[action]
    if kind_of(value) not in kinds:
        raise ExpressionError(f"{action} takes {what}, got {value}")


def _check_step(step: object) -> None:
    if isinstance(step, bool) or not isinstance(step, str | int):
        raise TypeError(f"a path step is a str map key or an int list index, got {step!r}")
    if isinstance(step, str) and not step:
        raise ExpressionError("a map key in a path must be a non-empty string")
    if isinstance(step, int) and step < 0:
        raise ExpressionError(f"a list index must not be negative, got {step}")


@dataclass(frozen=True, eq=False, slots=True)
class Size(_Comparable):
    """``size(path)``: compare it like a number."""

    attr: Attr

    def _subject(self) -> Size:
        return self


def attribute_exists(attr: Attr | str) -> Condition:
    return Exists(_attr(attr), True)


def attribute_not_exists(attr: Attr | str) -> Condition:
    return Exists(_attr(attr), False)


def attribute_type(attr: Attr | str, type_name: TypeName) -> Condition:
    return _attr(attr).attribute_type(type_name)


def begins_with(attr: Attr | str, prefix: str | bytes | Param) -> Condition:
    return _attr(attr).begins_with(prefix)


def contains(attr: Attr | str, value: Operand) -> Condition:
    return _attr(attr).contains(value)


def size(attr: Attr | str) -> Size:
    return Size(_attr(attr))


def _attr(attr: Attr | str) -> Attr:
    return attr if isinstance(attr, Attr) else Attr(attr)


@dataclass(frozen=True, eq=False, slots=True)
class Compare(Condition):
    """``attr <op> value``: one of DynamoDB's six comparisons."""

    attr: Attr | Size
    op: Operator
    value: Value


@dataclass(frozen=True, eq=False, slots=True)
class CompareParam(Condition):
    """A comparison with a parameter: only ``prepare`` compiles it."""

    attr: Attr | Size
    op: Operator
    param: Param


@dataclass(frozen=True, eq=False, slots=True)
class Between(Condition):
    """``attr BETWEEN low AND high``, both bounds included."""

    attr: Attr | Size
    low: Operand
    high: Operand


@dataclass(frozen=True, eq=False, slots=True)
class In(Condition):
    """``attr IN (values)``: equal to one of at most 100 operands."""

    attr: Attr | Size
    values: tuple[Operand, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Exists(Condition):
    """``attribute_exists(attr)``, or ``attribute_not_exists`` when not ``present``."""

    attr: Attr
    present: bool


@dataclass(frozen=True, eq=False, slots=True)
class BeginsWith(Condition):
    """``begins_with(attr, prefix)`` on a string or binary."""

    attr: Attr
    prefix: str | bytes | Param


@dataclass(frozen=True, eq=False, slots=True)
class Contains(Condition):
    """``contains(attr, value)``: a substring, or a member of a set or list."""

    attr: Attr
    value: Operand


@dataclass(frozen=True, eq=False, slots=True)
class AttributeType(Condition):
    """``attribute_type(attr, type_name)``: the value has that DynamoDB type."""

    attr: Attr
    type_name: TypeName


@dataclass(frozen=True, eq=False, slots=True)
class And(Condition):
    """``left AND right``."""

    left: Condition
    right: Condition


@dataclass(frozen=True, eq=False, slots=True)
class Or(Condition):
    """``left OR right``."""

    left: Condition
    right: Condition


@dataclass(frozen=True, eq=False, slots=True)
class Not(Condition):
    """``NOT inner``."""

    inner: Condition


# --- update values ---------------------------------------------------------------


@dataclass(frozen=True, eq=False, slots=True)
class IfNotExists(_Term):
    """``if_not_exists(path, default)``: the path's value, or ``default`` when it is missing."""

    attr: Attr
    default: Term

    def _term(self) -> IfNotExists:
        return self


@dataclass(frozen=True, eq=False, slots=True)
class ListAppend(_Term):
    """``list_append(first, second)``: the elements of two lists, in order."""

    first: Term
    second: Term

    def _term(self) -> ListAppend:
        return self


Term: TypeAlias = Attr | IfNotExists | ListAppend | Value | Param
"""An operand of SET: a path, a function, a value or a parameter."""


@dataclass(frozen=True, eq=False, slots=True)
class Arithmetic:
    """``left + right`` or ``left - right`` on numbers; DynamoDB allows no chain of them."""

    left: Term
    op: Literal["+", "-"]
    right: Term

    def __post_init__(self) -> None:
        for side in (self.left, self.right):
            if isinstance(side, Arithmetic):
                raise ExpressionError("DynamoDB allows one + or - per SET action, not a chain")
            _check_term(side, "N", "+ and -")

    def _chain(self, other: object) -> NoReturn:
        raise ExpressionError("DynamoDB allows one + or - per SET action, not a chain")

    __add__ = __radd__ = __sub__ = __rsub__ = _chain


SetExpression: TypeAlias = Attr | IfNotExists | ListAppend | Arithmetic
"""What SET takes besides a value or a parameter."""


def if_not_exists(attr: Attr | str, default: Term) -> IfNotExists:
    _check_term(default, None, "if_not_exists")
    return IfNotExists(_attr(attr), default)


def list_append(first: Term, second: Term) -> ListAppend:
    _check_term(first, "L", "list_append")
    _check_term(second, "L", "list_append")
    return ListAppend(first, second)


def _check_term(term: object, kind: str | None, where: str) -> None:
    """Refuse at build time a constant that DynamoDB would refuse in ``where``."""
    if isinstance(term, Arithmetic):
        raise ExpressionError(f"{where} takes no + or - operand")
    if isinstance(term, Attr | IfNotExists | ListAppend | Param):
        return
    encoded = to_attribute_value(term)  # type: ignore[arg-type]  # Term minus the nodes: a Value
    if kind is not None and kind_of(encoded) != kind:
        raise ExpressionError(f"{where} takes {kind} values, got {term!r}")


def _check_set_value(value: object) -> None:
    if isinstance(value, Arithmetic | Attr | IfNotExists | ListAppend):
        return
    to_attribute_value(value)  # type: ignore[arg-type]  # what is left of SET's operands: a Value


# --- update actions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAction:
    """``SET attr = value``: a value, a path, a function or ``+``/``-`` of two."""

    attr: Attr
    value: Value | SetExpression


@dataclass(frozen=True, slots=True)
class SetParamAction:
    """SET to a parameter: only ``prepare`` compiles it."""

    attr: Attr
    param: Param


@dataclass(frozen=True, slots=True)
class RemoveAction:
    """``REMOVE attr``: the attribute, or a list element, goes."""

    attr: Attr


@dataclass(frozen=True, slots=True)
class AddAction:
    """``ADD attr value``: adds to a number or puts members into a set."""

    attr: Attr
    value: Operand


@dataclass(frozen=True, slots=True)
class DeleteAction:
    """``DELETE attr value``: takes members out of a set."""

    attr: Attr
    value: Operand


Action: TypeAlias = SetAction | SetParamAction | RemoveAction | AddAction | DeleteAction


@dataclass(frozen=True, slots=True)
class Update:
    """An update expression: its actions, compiled in DynamoDB's sections
    (SET, REMOVE, ADD, DELETE), each section in the order given."""

    actions: tuple[Action, ...]

    def __post_init__(self) -> None:
        if not self.actions:
            raise ExpressionError("an update needs at least one action")
        paths = [action.attr.path for action in self.actions]
        for number, path in enumerate(paths):
            for other in paths[:number]:
                # DynamoDB rejects two actions on overlapping paths; say so before the request.
                if path == other:
                    raise ExpressionError(
                        f"an update names the path {path_text(path)} twice; "
                        f"DynamoDB allows one action per path"
                    )
                if _overlap(path, other):
                    raise ExpressionError(
                        f"an update acts on overlapping paths {path_text(other)} and "
                        f"{path_text(path)}; DynamoDB allows neither to contain the other"
                    )


def _overlap(first: tuple[PathStep, ...], second: tuple[PathStep, ...]) -> bool:
    """One path contains the other, or they go on as a map and a list from one point."""
    for a, b in zip(first, second, strict=False):
        if a != b or type(a) is not type(b):
            return type(a) is not type(b)
    return True  # one is a prefix of the other


def path_text(path: tuple[PathStep, ...]) -> str:
    name, *steps = path
    return str(Attr(str(name), tuple(steps)))


def update(*actions: Action) -> Update:
    return Update(tuple(actions))
