"""A pure builder for DynamoDB condition and update expressions.

Expressions are immutable values built from attribute paths::

    status, owner = Attr("status"), Attr("owner_token")
    cond = (status == "INPROGRESS") & (owner == token)
    upd = update(status.set("COMPLETED"), Attr("lease").remove())
    request = compile_request(condition=cond, update=upd)
    client.update_item(..., **request.as_kwargs())

The builder covers DynamoDB's condition and update grammar (key conditions
for queries aside):

- paths into maps and lists: ``Attr("address").key("city")``, ``Attr("items")[0]``;
- conditions: comparisons, ``between``, ``is_in``, ``exists``/``not_exists``,
  ``begins_with``, ``contains``, ``attribute_type``, ``size()`` comparisons,
  combined with ``&``, ``|`` and ``~``;
- updates: ``set`` (to a value, a path, ``if_not_exists``, ``list_append``, or
  ``+``/``-`` of two of those), ``remove``, ``add`` (numbers, sets) and ``delete``
  (from sets), one action or ``update(...)`` of several.

Attribute names and values never reach an expression string: every name
becomes a ``#nK`` placeholder and every value a ``:vK`` placeholder, both
de-duplicated and allocated only when used, because DynamoDB rejects unused
placeholders. The condition and update of one request share one placeholder
space. A name containing dots or brackets is one name, never a path.

``evaluate`` and ``apply_update`` run the same expressions against an item in
DynamoDB's typed form in Python, following DynamoDB's documented semantics, so
the in-memory store follows the very rules DynamoDB applies. An update DynamoDB
would refuse for the item at hand raises ``ExpressionError``.

A request sent on every call can be compiled once: build it with ``Param``
operands, ``prepare`` it, and ``bind`` the values per call. Binding gives the
same ``CompiledRequest`` as compiling the expression built with those values,
except that a parameter's placeholder is never shared with an equal value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import Context, Decimal, DecimalException, Inexact, Overflow, Underflow
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
_SET_KINDS = frozenset({"SS", "NS", "BS"})
_ORDERED_KINDS = frozenset({"S", "N", "B"})
# DynamoDB numbers carry up to 38 significant digits; arithmetic that would round fails.
_NUMBER_CONTEXT = Context(prec=38, traps=[Inexact, Overflow, Underflow])


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
            _check_bounds(to_attribute_value(low), to_attribute_value(high))
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
            _check_action_value("ADD", to_attribute_value(value))
        return AddAction(self, value)

    def delete(self, value: Operand) -> DeleteAction:
        """Delete elements from a set; a set left empty is removed."""
        if not isinstance(value, Param):
            _check_action_value("DELETE", to_attribute_value(value))
        return DeleteAction(self, value)


def _check_bounds(low: AttributeValue, high: AttributeValue) -> None:
    low_kind, high_kind = _kind(low), _kind(high)
    if low_kind != high_kind or low_kind not in _ORDERED_KINDS:
        raise ExpressionError(
            f"BETWEEN needs two bounds of one type among S, N and B, got {low_kind} and {high_kind}"
        )
    if _order(high, low):
        raise ExpressionError(f"BETWEEN's lower bound {low} exceeds its upper bound {high}")


_ACTION_KINDS = {"ADD": ("a number or a set", {"N", *_SET_KINDS}), "DELETE": ("a set", _SET_KINDS)}


def _check_action_value(action: Literal["ADD", "DELETE"], value: AttributeValue) -> None:
    what, kinds = _ACTION_KINDS[action]
    if _kind(value) not in kinds:
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
    attr: Attr | Size
    low: Operand
    high: Operand


@dataclass(frozen=True, eq=False, slots=True)
class In(Condition):
    attr: Attr | Size
    values: tuple[Operand, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Exists(Condition):
    attr: Attr
    present: bool


@dataclass(frozen=True, eq=False, slots=True)
class BeginsWith(Condition):
    attr: Attr
    prefix: str | bytes | Param


@dataclass(frozen=True, eq=False, slots=True)
class Contains(Condition):
    attr: Attr
    value: Operand


@dataclass(frozen=True, eq=False, slots=True)
class AttributeType(Condition):
    attr: Attr
    type_name: TypeName


@dataclass(frozen=True, eq=False, slots=True)
class And(Condition):
    left: Condition
    right: Condition


@dataclass(frozen=True, eq=False, slots=True)
class Or(Condition):
    left: Condition
    right: Condition


@dataclass(frozen=True, eq=False, slots=True)
class Not(Condition):
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
    if kind is not None and _kind(encoded) != kind:
        raise ExpressionError(f"{where} takes {kind} values, got {term!r}")


def _check_set_value(value: object) -> None:
    if isinstance(value, Arithmetic | Attr | IfNotExists | ListAppend):
        return
    to_attribute_value(value)  # type: ignore[arg-type]  # what is left of SET's operands: a Value


# --- update actions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAction:
    attr: Attr
    value: Value | SetExpression


@dataclass(frozen=True, slots=True)
class SetParamAction:
    """SET to a parameter: only ``prepare`` compiles it."""

    attr: Attr
    param: Param


@dataclass(frozen=True, slots=True)
class RemoveAction:
    attr: Attr


@dataclass(frozen=True, slots=True)
class AddAction:
    attr: Attr
    value: Operand


@dataclass(frozen=True, slots=True)
class DeleteAction:
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
                        f"an update names the path {_path_text(path)} twice; "
                        f"DynamoDB allows one action per path"
                    )
                if _overlap(path, other):
                    raise ExpressionError(
                        f"an update acts on overlapping paths {_path_text(other)} and "
                        f"{_path_text(path)}; DynamoDB allows neither to contain the other"
                    )


def _overlap(first: tuple[PathStep, ...], second: tuple[PathStep, ...]) -> bool:
    """One path contains the other, or they go on as a map and a list from one point."""
    for a, b in zip(first, second, strict=False):
        if a != b or type(a) is not type(b):
            return type(a) is not type(b)
    return True  # one is a prefix of the other


def _path_text(path: tuple[PathStep, ...]) -> str:
    name, *steps = path
    return str(Attr(str(name), tuple(steps)))


def update(*actions: Action) -> Update:
    return Update(tuple(actions))


# --- compiling ---------------------------------------------------------------


class Placeholders:
    """One placeholder space: names as ``#nK``, values as ``:vK``, de-duplicated."""

    __slots__ = ("_by_name", "_by_value", "names", "params", "values")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValue] = {}
        self.params: dict[str, str] = {}
        """Parameter name -> its placeholder, which has no value until bound."""
        self._by_name: dict[str, str] = {}
        self._by_value: dict[tuple[str, Any], str] = {}

    def name(self, attr: Attr) -> str:
        """The path with each name and map key as a placeholder: ``#n0.#n1[2]``."""
        text = self._name(attr.name)
        for step in attr.steps:
            text += f"[{step}]" if isinstance(step, int) else "." + self._name(step)
        return text

    def _name(self, name: str) -> str:
        placeholder = self._by_name.get(name)
        if placeholder is None:
            placeholder = f"#n{len(self._by_name)}"
            self._by_name[name] = placeholder
            self.names[placeholder] = name
        return placeholder

    def value(self, value: Value) -> str:
        encoded = to_attribute_value(value)
        identity = _identity(encoded)
        placeholder = self._by_value.get(identity)
        if placeholder is None:
            placeholder = self._next_value()
            self._by_value[identity] = placeholder
            self.values[placeholder] = encoded
        return placeholder

    def param(self, param: Param) -> str:
        placeholder = self.params.get(param.name)
        if placeholder is None:
            placeholder = self.params[param.name] = self._next_value()
        return placeholder

    def operand(self, operand: Operand) -> str:
        return self.param(operand) if isinstance(operand, Param) else self.value(operand)

    def _next_value(self) -> str:
        return f":v{len(self._by_value) + len(self.params)}"


def _identity(encoded: AttributeValue) -> tuple[str, Any]:
    """A hashable form of a typed value: equal forms share one placeholder."""
    ((kind, raw),) = encoded.items()
    if kind in _SET_KINDS:
        return kind, tuple(raw)
    if kind == "L":
        return kind, tuple(_identity(element) for element in raw)
    if kind == "M":
        return kind, tuple(sorted((key, _identity(member)) for key, member in raw.items()))
    return kind, raw


_PRECEDENCE = {Or: 1, And: 2, Not: 3}


def _render_subject(subject: Attr | Size, ph: Placeholders) -> str:
    if isinstance(subject, Size):
        return f"size({ph.name(subject.attr)})"
    return ph.name(subject)


def _render(cond: Condition, ph: Placeholders, parent: int = 0) -> str:
    if isinstance(cond, Compare):
        return f"{_render_subject(cond.attr, ph)} {cond.op} {ph.value(cond.value)}"
    if isinstance(cond, CompareParam):
        return f"{_render_subject(cond.attr, ph)} {cond.op} {ph.param(cond.param)}"
    if isinstance(cond, Exists):
        fn = "attribute_exists" if cond.present else "attribute_not_exists"
        return f"{fn}({ph.name(cond.attr)})"
    if isinstance(cond, Between):
        subject = _render_subject(cond.attr, ph)
        return f"{subject} BETWEEN {ph.operand(cond.low)} AND {ph.operand(cond.high)}"
    if isinstance(cond, In):
        subject = _render_subject(cond.attr, ph)
        return f"{subject} IN ({', '.join(ph.operand(value) for value in cond.values)})"
    if isinstance(cond, BeginsWith):
        return f"begins_with({ph.name(cond.attr)}, {ph.operand(cond.prefix)})"
    if isinstance(cond, Contains):
        return f"contains({ph.name(cond.attr)}, {ph.operand(cond.value)})"
    if isinstance(cond, AttributeType):
        return f"attribute_type({ph.name(cond.attr)}, {ph.value(cond.type_name)})"
    own = _PRECEDENCE.get(type(cond))
    if isinstance(cond, And | Or) and own is not None:
        word = " AND " if isinstance(cond, And) else " OR "
        text = _render(cond.left, ph, own) + word + _render(cond.right, ph, own)
    elif isinstance(cond, Not) and own is not None:
        text = "NOT " + _render(cond.inner, ph, own + 1)
    else:
        raise TypeError(f"not a condition: {cond!r}")
    return f"({text})" if own < parent else text


def _render_value(value: Value | SetExpression | Param, ph: Placeholders) -> str:
    if isinstance(value, Param):
        return ph.param(value)
    if isinstance(value, Attr):
        return ph.name(value)
    if isinstance(value, IfNotExists):
        return f"if_not_exists({ph.name(value.attr)}, {_render_value(value.default, ph)})"
    if isinstance(value, ListAppend):
        first = _render_value(value.first, ph)
        return f"list_append({first}, {_render_value(value.second, ph)})"
    if isinstance(value, Arithmetic):
        left = _render_value(value.left, ph)
        return f"{left} {value.op} {_render_value(value.right, ph)}"
    return ph.value(value)


def _render_update(upd: Update, ph: Placeholders) -> str:
    sets: list[str] = []
    removes: list[str] = []
    adds: list[str] = []
    deletes: list[str] = []
    for a in upd.actions:
        if isinstance(a, SetAction | SetParamAction):
            value = a.value if isinstance(a, SetAction) else a.param
            sets.append(f"{ph.name(a.attr)} = {_render_value(value, ph)}")
    for a in upd.actions:
        if isinstance(a, RemoveAction):
            removes.append(ph.name(a.attr))
    for a in upd.actions:
        if isinstance(a, AddAction):
            adds.append(f"{ph.name(a.attr)} {ph.operand(a.value)}")
    for a in upd.actions:
        if isinstance(a, DeleteAction):
            deletes.append(f"{ph.name(a.attr)} {ph.operand(a.value)}")
    clauses = []
    for word, section in (("SET", sets), ("REMOVE", removes), ("ADD", adds), ("DELETE", deletes)):
        if section:
            clauses.append(f"{word} " + ", ".join(section))
    return " ".join(clauses)


@dataclass(frozen=True, slots=True)
class CompiledRequest:
    """The expression parts of one DynamoDB request."""

    condition: str | None
    update: str | None
    names: dict[str, str]
    values: dict[str, AttributeValue]

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a DynamoDB call; empty maps are left out."""
        kwargs: dict[str, Any] = {}
        if self.condition is not None:
            kwargs["ConditionExpression"] = self.condition
        if self.update is not None:
            kwargs["UpdateExpression"] = self.update
        if self.names:
            kwargs["ExpressionAttributeNames"] = self.names
        if self.values:
            kwargs["ExpressionAttributeValues"] = self.values
        return kwargs


def compile_request(
    *, condition: Condition | None = None, update: Update | None = None
) -> CompiledRequest:
    """Compile a condition and/or an update into one placeholder space."""
    prepared = prepare(condition=condition, update=update)
    if prepared.params:
        raise TypeError(
            f"the expression has parameters {sorted(prepared.params)}: prepare() it, then bind"
        )
    return prepared.compiled


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request compiled once; ``bind`` gives its parameters values for one call."""

    compiled: CompiledRequest
    """The request, its parameters' placeholders not yet in ``values``."""
    params: dict[str, str]
    """Parameter name -> placeholder."""

    def bind(self, **values: Value) -> CompiledRequest:
        if values.keys() != self.params.keys():
            raise ValueError(f"parameters {sorted(self.params)} need values, got {sorted(values)}")
        bound = dict(self.compiled.values)
        for name, placeholder in self.params.items():
            bound[placeholder] = to_attribute_value(values[name])
        compiled = self.compiled
        return CompiledRequest(compiled.condition, compiled.update, compiled.names, bound)


def prepare(*, condition: Condition | None = None, update: Update | None = None) -> PreparedRequest:
    """Compile a condition and/or an update that may hold ``Param`` operands, once."""
    ph = Placeholders()
    cond_text = _render(condition, ph) if condition is not None else None
    update_text = _render_update(update, ph) if update is not None else None
    return PreparedRequest(CompiledRequest(cond_text, update_text, ph.names, ph.values), ph.params)


# --- evaluating ----------------------------------------------------------------


def _kind(value: AttributeValue) -> str:
    ((kind, _),) = value.items()
    return kind


def _bound(param: Param, params: Mapping[str, Value] | None) -> Value:
    if params is None or param.name not in params:
        raise ValueError(f"no value for parameter {param.name!r}")
    return params[param.name]


def _operand(operand: Operand, params: Mapping[str, Value] | None) -> AttributeValue:
    return to_attribute_value(_bound(operand, params) if isinstance(operand, Param) else operand)


def _resolve(item: Item, attr: Attr) -> AttributeValue | None:
    """The value at ``attr``'s path, or ``None`` when the path leads nowhere."""
    value = item.get(attr.name)
    for step in attr.steps:
        if value is None:
            return None
        if isinstance(step, int):
            elements = value.get("L")
            value = elements[step] if elements is not None and step < len(elements) else None
        else:
            members = value.get("M")
            value = members.get(step) if members is not None else None
    return value


def _size(value: AttributeValue | None) -> AttributeValue | None:
    """``size()`` of a value; ``None`` (no operand) for a missing path or a sizeless type."""
    if value is None:
        return None
    ((kind, raw),) = value.items()
    if kind in ("N", "BOOL", "NULL"):
        return None
    return {"N": str(len(raw))}


def _subject_value(subject: Attr | Size, item: Item) -> AttributeValue | None:
    if isinstance(subject, Size):
        return _size(_resolve(item, subject.attr))
    return _resolve(item, subject)


def _numbers(raw: list[str]) -> set[Decimal]:
    return {Decimal(text) for text in raw}


def _equal(left: AttributeValue, right: AttributeValue) -> bool:
    """DynamoDB equality: same type, then same value (numbers and sets by value)."""
    ((lkind, lraw),) = left.items()
    ((rkind, rraw),) = right.items()
    if lkind != rkind:
        return False
    if lkind == "N":
        return Decimal(lraw) == Decimal(rraw)
    if lkind == "NS":
        return _numbers(lraw) == _numbers(rraw)
    if lkind in ("SS", "BS"):
        return set(lraw) == set(rraw)
    if lkind == "L":
        return len(lraw) == len(rraw) and all(map(_equal, lraw, rraw))
    if lkind == "M":
        return lraw.keys() == rraw.keys() and all(_equal(lraw[k], rraw[k]) for k in lraw)
    return bool(lraw == rraw)


def _order(left: AttributeValue, right: AttributeValue) -> bool:
    """``left < right`` for two values of one of the ordered types (S, N, B)."""
    ((kind, lraw),) = left.items()
    ((_, rraw),) = right.items()
    if kind == "N":
        return Decimal(lraw) < Decimal(rraw)
    return bool(lraw < rraw)  # strings by code point (as UTF-8 bytes), binary unsigned


def _comparable(left: AttributeValue, right: AttributeValue) -> bool:
    return _kind(left) == _kind(right) and _kind(left) in _ORDERED_KINDS


def _compare(op: Operator, left: AttributeValue | None, right: AttributeValue) -> bool:
    if left is None:
        # A missing operand satisfies no comparison but "not equal".
        return op == "<>"
    if op in ("=", "<>"):
        equal = _equal(left, right)
        return equal if op == "=" else not equal
    if not _comparable(left, right):
        return False
    if op == "<":
        return _order(left, right)
    if op == "<=":
        return not _order(right, left)
    if op == ">":
        return _order(right, left)
    return not _order(left, right)


def _contains(container: AttributeValue, operand: AttributeValue) -> bool:
    ((kind, raw),) = container.items()
    ((okind, oraw),) = operand.items()
    if kind == "S" and okind == "S":
        return oraw in raw
    if kind == "L":
        return any(_equal(element, operand) for element in raw)
    if kind == "NS" and okind == "N":
        return Decimal(oraw) in _numbers(raw)
    if (kind, okind) in (("SS", "S"), ("BS", "B")):
        return oraw in raw
    return False


def evaluate(cond: Condition, item: Item | None, params: Mapping[str, Value] | None = None) -> bool:
    """Evaluate a condition against an item (``None``: no item) as DynamoDB does.

    ``params`` gives the values of the condition's ``Param`` operands, if any.
    """
    attrs: Item = item or {}
    if isinstance(cond, Compare):
        subject = _subject_value(cond.attr, attrs)
        return _compare(cond.op, subject, to_attribute_value(cond.value))
    if isinstance(cond, CompareParam):
        subject = _subject_value(cond.attr, attrs)
        return _compare(cond.op, subject, to_attribute_value(_bound(cond.param, params)))
    if isinstance(cond, Exists):
        return (_resolve(attrs, cond.attr) is not None) is cond.present
    if isinstance(cond, And):
        return evaluate(cond.left, attrs, params) and evaluate(cond.right, attrs, params)
    if isinstance(cond, Or):
        return evaluate(cond.left, attrs, params) or evaluate(cond.right, attrs, params)
    if isinstance(cond, Not):
        return not evaluate(cond.inner, attrs, params)
    if isinstance(cond, Between):
        found = _subject_value(cond.attr, attrs)
        low, high = _operand(cond.low, params), _operand(cond.high, params)
        _check_bounds(low, high)  # checked when built, unless a bound is a parameter
        if found is None or not (_comparable(found, low) and _comparable(found, high)):
            return False
        return not _order(found, low) and not _order(high, found)
    if isinstance(cond, In):
        found = _subject_value(cond.attr, attrs)
        return found is not None and any(
            _equal(found, _operand(value, params)) for value in cond.values
        )
    if isinstance(cond, BeginsWith):
        found = _resolve(attrs, cond.attr)
        prefix = _operand(cond.prefix, params)
        if _kind(prefix) not in ("S", "B"):
            raise ExpressionError(f"begins_with takes a str or bytes prefix, got {prefix}")
        if found is None or _kind(found) != _kind(prefix) or _kind(found) not in ("S", "B"):
            return False
        return bool(found[_kind(found)].startswith(prefix[_kind(prefix)]))
    if isinstance(cond, Contains):
        found = _resolve(attrs, cond.attr)
        return found is not None and _contains(found, _operand(cond.value, params))
    if isinstance(cond, AttributeType):
        found = _resolve(attrs, cond.attr)
        return found is not None and _kind(found) == cond.type_name
    raise TypeError(f"not a condition: {cond!r}")


# --- applying updates ------------------------------------------------------------


def _value_of(
    value: Value | SetExpression | Param, item: Item, params: Mapping[str, Value] | None
) -> AttributeValue:
    """A SET operand's value, read from the item as it was before the update."""
    if isinstance(value, Param):
        return to_attribute_value(_bound(value, params))
    if isinstance(value, Attr):
        found = _resolve(item, value)
        if found is None:
            raise ExpressionError(f"the update reads {value}, which the item does not have")
        return found
    if isinstance(value, IfNotExists):
        found = _resolve(item, value.attr)
        return found if found is not None else _value_of(value.default, item, params)
    if isinstance(value, ListAppend):
        first = _value_of(value.first, item, params)
        second = _value_of(value.second, item, params)
        if _kind(first) != "L" or _kind(second) != "L":
            raise ExpressionError(
                f"list_append takes two lists, got {_kind(first)} and {_kind(second)}"
            )
        return {"L": [*first["L"], *second["L"]]}
    if isinstance(value, Arithmetic):
        left = _value_of(value.left, item, params)
        right = _value_of(value.right, item, params)
        if _kind(left) != "N" or _kind(right) != "N":
            raise ExpressionError(
                f"{value.op} takes two numbers, got {_kind(left)} and {_kind(right)}"
            )
        if value.op == "+":
            return _number(_NUMBER_CONTEXT.add, left["N"], right["N"])
        return _number(_NUMBER_CONTEXT.subtract, left["N"], right["N"])
    return to_attribute_value(value)


def _number(
    operation: Callable[[Decimal, Decimal], Decimal], left: str, right: str
) -> AttributeValue:
    try:
        return {"N": str(operation(Decimal(left), Decimal(right)))}
    except DecimalException as exc:
        raise ExpressionError(
            f"the result of {left} and {right} does not fit a DynamoDB number"
        ) from exc


Leaf: TypeAlias = Callable[[AttributeValue | None], AttributeValue | None]
"""The new value at a path from the current one (``None``: missing / remove it)."""


def _rewrite(
    current: AttributeValue | None, attr: Attr, depth: int, leaf: Leaf
) -> AttributeValue | None:
    """``current`` with the value at ``attr.steps[depth:]`` replaced by ``leaf``, copied.

    Every step below the top level must exist and be a map or a list as the path
    says, for SET and REMOVE alike (DynamoDB: "the document path provided in the
    update expression is invalid for update"); only the last one may be missing.
    """
    if depth == len(attr.steps):
        return leaf(current)
    step = attr.steps[depth]
    container = "L" if isinstance(step, int) else "M"
    if current is None or _kind(current) != container:
        raise ExpressionError(
            f"the path {attr} is invalid for an update: "
            f"{_path_text(attr.path[: depth + 1])} is not "
            + ("a list" if container == "L" else "a map")
        )
    if isinstance(step, int):
        elements = list(current["L"])
        if step < len(elements):
            new = _rewrite(elements[step], attr, depth + 1, leaf)
            if new is None:
                del elements[step]
            else:
                elements[step] = new
        elif depth + 1 == len(attr.steps):
            # DynamoDB appends a value set past the end of a list; removing there does nothing.
            appended = leaf(None)
            if appended is not None:
                elements.append(appended)
        else:
            raise ExpressionError(f"the path {attr} is invalid for an update: no such element")
        return {"L": elements}
    members = dict(current["M"])
    new = _rewrite(members.get(step), attr, depth + 1, leaf)
    if new is None:
        members.pop(step, None)
    else:
        members[step] = new
    return {"M": members}


def _apply(result: dict[str, AttributeValue], attr: Attr, leaf: Leaf) -> None:
    new = _rewrite(result.get(attr.name), attr, 0, leaf)
    if new is None:
        result.pop(attr.name, None)
    else:
        result[attr.name] = new


def _becomes(value: AttributeValue | None) -> Leaf:
    return lambda _: value


def _adds(value: AttributeValue, attr: Attr) -> Leaf:
    return lambda current: _added(current, value, attr)


def _deletes(value: AttributeValue, attr: Attr) -> Leaf:
    return lambda current: _deleted(current, value, attr)


def _added(current: AttributeValue | None, value: AttributeValue, attr: Attr) -> AttributeValue:
    _check_action_value("ADD", value)  # checked when built, unless it is a parameter
    if current is None:
        return value  # a missing number starts at 0, a missing set empty
    ((kind, raw),) = current.items()
    ((vkind, vraw),) = value.items()
    if kind != vkind:
        raise ExpressionError(f"ADD {vkind} to {attr}, which holds {kind}")
    if kind == "N":
        return _number(_NUMBER_CONTEXT.add, raw, vraw)
    if kind == "NS":
        have = _numbers(raw)
        return {"NS": [*raw, *(text for text in vraw if Decimal(text) not in have)]}
    return {kind: [*raw, *(element for element in vraw if element not in raw)]}


def _deleted(
    current: AttributeValue | None, value: AttributeValue, attr: Attr
) -> AttributeValue | None:
    _check_action_value("DELETE", value)  # checked when built, unless it is a parameter
    if current is None:
        return None
    ((kind, raw),) = current.items()
    ((vkind, vraw),) = value.items()
    if kind != vkind:
        raise ExpressionError(f"DELETE {vkind} from {attr}, which holds {kind}")
    if kind == "NS":
        gone = _numbers(vraw)
        left = [text for text in raw if Decimal(text) not in gone]
    else:
        left = [element for element in raw if element not in vraw]
    return {kind: left} if left else None  # DynamoDB has no empty sets


def apply_update(
    upd: Update, item: Item, params: Mapping[str, Value] | None = None
) -> dict[str, AttributeValue]:
    """Return a copy of ``item`` with the update's actions applied, as DynamoDB applies them.

    Every operand reads the item as it was before the update. The sections apply
    in order (SET, REMOVE, ADD, DELETE); list elements are removed from the
    highest index down, so indexes name elements of the original list. An action
    DynamoDB would refuse for this item raises ``ExpressionError``; ``item`` is
    never changed. ``params`` gives the values of ``Param`` operands, if any.
    """
    result = dict(item)
    computed = [
        (a.attr, _value_of(a.value if isinstance(a, SetAction) else a.param, item, params))
        for a in upd.actions
        if isinstance(a, SetAction | SetParamAction)
    ]
    for attr, value in computed:
        _apply(result, attr, _becomes(value))
    removes = [a.attr for a in upd.actions if isinstance(a, RemoveAction)]
    for attr in sorted(removes, key=lambda attr: attr.path, reverse=True):
        _apply(result, attr, _becomes(None))
    for action in upd.actions:
        if isinstance(action, AddAction):
            _apply(result, action.attr, _adds(_operand(action.value, params), action.attr))
    for action in upd.actions:
        if isinstance(action, DeleteAction):
            value = _operand(action.value, params)
            _apply(result, action.attr, _deletes(value, action.attr))
    return result
