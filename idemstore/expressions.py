"""A pure builder for DynamoDB condition and update expressions.

Expressions are immutable values built from attribute paths::

    status, owner = Attr("status"), Attr("owner_token")
    cond = (status == "INPROGRESS") & (owner == token)
    upd = update(status.set("COMPLETED"), Attr("lease").remove())
    request = compile_request(condition=cond, update=upd)
    client.update_item(..., **request.as_kwargs())

Attribute names and values never reach an expression string: every name
becomes a ``#nK`` placeholder and every value a ``:vK`` placeholder, both
de-duplicated and allocated only when used, because DynamoDB rejects unused
placeholders. The condition and update of one request share one placeholder
space.

``evaluate`` and ``apply_update`` run the same expressions against an item in
Python, so the in-memory store follows the very rule DynamoDB applies.

A request sent on every call can be compiled once: build it with ``Param``
operands, ``prepare`` it, and ``bind`` the values per call. Binding gives the
same ``CompiledRequest`` as compiling the expression built with those values,
except that a parameter's placeholder is never shared with an equal value.

Paths are top-level attribute names (the idempotency table is flat); a name
containing dots is one attribute, not a nested path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias, overload

AttributeValue: TypeAlias = dict[str, Any]
"""A value in DynamoDB's typed form, e.g. ``{"S": "x"}`` or ``{"N": "42"}``."""

Item: TypeAlias = Mapping[str, AttributeValue]
Value: TypeAlias = str | int | float | Decimal | bytes | bool | None
Operator: TypeAlias = Literal["=", "<>", "<", "<=", ">", ">="]

_NUMBER_KINDS = (int, float, Decimal)


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
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"DynamoDB numbers must be finite, got {value!r}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError(f"DynamoDB numbers must be finite, got {value!r}")
        return {"N": str(value)}
    raise TypeError(f"cannot encode {type(value).__name__} as a DynamoDB attribute value")


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


@dataclass(frozen=True, eq=False, slots=True)
class Attr:
    """A top-level attribute name. Comparison operators build conditions."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("an attribute name must be a non-empty string")

    def _compare(self, op: Operator, value: Operand) -> Condition:
        if isinstance(value, Param):
            return CompareParam(self, op, value)
        to_attribute_value(value)  # fail at build time, not at compile time
        return Compare(self, op, value)

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

    def exists(self) -> Condition:
        return Exists(self, True)

    def not_exists(self) -> Condition:
        return Exists(self, False)

    @overload
    def set(self, value: Value) -> SetAction: ...

    @overload
    def set(self, value: Param) -> SetParamAction: ...

    def set(self, value: Operand) -> SetAction | SetParamAction:
        if isinstance(value, Param):
            return SetParamAction(self, value)
        to_attribute_value(value)
        return SetAction(self, value)

    def remove(self) -> RemoveAction:
        return RemoveAction(self)


def attribute_exists(attr: Attr | str) -> Condition:
    return Exists(_attr(attr), True)


def attribute_not_exists(attr: Attr | str) -> Condition:
    return Exists(_attr(attr), False)


def _attr(attr: Attr | str) -> Attr:
    return attr if isinstance(attr, Attr) else Attr(attr)


@dataclass(frozen=True, eq=False, slots=True)
class Compare(Condition):
    attr: Attr
    op: Operator
    value: Value


@dataclass(frozen=True, eq=False, slots=True)
class CompareParam(Condition):
    """A comparison with a parameter: only ``prepare`` compiles it."""

    attr: Attr
    op: Operator
    param: Param


@dataclass(frozen=True, eq=False, slots=True)
class Exists(Condition):
    attr: Attr
    present: bool


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


@dataclass(frozen=True, slots=True)
class SetAction:
    attr: Attr
    value: Value


@dataclass(frozen=True, slots=True)
class SetParamAction:
    """SET to a parameter: only ``prepare`` compiles it."""

    attr: Attr
    param: Param


@dataclass(frozen=True, slots=True)
class RemoveAction:
    attr: Attr


Action: TypeAlias = SetAction | SetParamAction | RemoveAction


@dataclass(frozen=True, slots=True)
class Update:
    """An update expression: SET and REMOVE actions, in order."""

    actions: tuple[Action, ...]

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError("an update needs at least one action")
        names = [a.attr.name for a in self.actions]
        if len(set(names)) != len(names):
            # DynamoDB rejects two actions on one path; say so before the request.
            raise ValueError(f"an update names an attribute twice: {names}")


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
        placeholder = self._by_name.get(attr.name)
        if placeholder is None:
            placeholder = f"#n{len(self._by_name)}"
            self._by_name[attr.name] = placeholder
            self.names[placeholder] = attr.name
        return placeholder

    def value(self, value: Value) -> str:
        encoded = to_attribute_value(value)
        ((kind, raw),) = encoded.items()
        identity = (kind, raw)
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

    def _next_value(self) -> str:
        return f":v{len(self._by_value) + len(self.params)}"


_PRECEDENCE = {Or: 1, And: 2, Not: 3}


def _render(cond: Condition, ph: Placeholders, parent: int = 0) -> str:
    if isinstance(cond, Compare):
        return f"{ph.name(cond.attr)} {cond.op} {ph.value(cond.value)}"
    if isinstance(cond, CompareParam):
        return f"{ph.name(cond.attr)} {cond.op} {ph.param(cond.param)}"
    if isinstance(cond, Exists):
        fn = "attribute_exists" if cond.present else "attribute_not_exists"
        return f"{fn}({ph.name(cond.attr)})"
    own = _PRECEDENCE[type(cond)]
    if isinstance(cond, And | Or):
        word = " AND " if isinstance(cond, And) else " OR "
        text = _render(cond.left, ph, own) + word + _render(cond.right, ph, own)
    elif isinstance(cond, Not):
        text = "NOT " + _render(cond.inner, ph, own + 1)
    else:
        raise TypeError(f"not a condition: {cond!r}")
    return f"({text})" if own < parent else text


def _render_update(upd: Update, ph: Placeholders) -> str:
    sets = [
        f"{ph.name(a.attr)} = "
        + (ph.value(a.value) if isinstance(a, SetAction) else ph.param(a.param))
        for a in upd.actions
        if not isinstance(a, RemoveAction)
    ]
    removes = [ph.name(a.attr) for a in upd.actions if isinstance(a, RemoveAction)]
    clauses = []
    if sets:
        clauses.append("SET " + ", ".join(sets))
    if removes:
        clauses.append("REMOVE " + ", ".join(removes))
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


def _decode_scalar(value: AttributeValue) -> tuple[str, Any]:
    ((kind, raw),) = value.items()
    if kind == "N":
        return kind, Decimal(raw)
    return kind, raw


def _bound(param: Param, params: Mapping[str, Value] | None) -> Value:
    if params is None or param.name not in params:
        raise ValueError(f"no value for parameter {param.name!r}")
    return params[param.name]


def _compare(op: Operator, left: AttributeValue | None, right: Value) -> bool:
    if left is None:
        # A missing attribute satisfies no comparison but "not equal".
        return op == "<>"
    lkind, lval = _decode_scalar(left)
    rkind, rval = _decode_scalar(to_attribute_value(right))
    if op in ("=", "<>"):
        equal = lkind == rkind and lval == rval
        return equal if op == "=" else not equal
    if lkind != rkind or lkind not in ("S", "N", "B"):
        return False
    if op == "<":
        return bool(lval < rval)
    if op == "<=":
        return bool(lval <= rval)
    if op == ">":
        return bool(lval > rval)
    return bool(lval >= rval)


def evaluate(cond: Condition, item: Item | None, params: Mapping[str, Value] | None = None) -> bool:
    """Evaluate a condition against an item (``None``: no item) as DynamoDB does.

    ``params`` gives the values of the condition's ``Param`` operands, if any.
    """
    attrs: Item = item or {}
    if isinstance(cond, Compare):
        return _compare(cond.op, attrs.get(cond.attr.name), cond.value)
    if isinstance(cond, CompareParam):
        return _compare(cond.op, attrs.get(cond.attr.name), _bound(cond.param, params))
    if isinstance(cond, Exists):
        return (cond.attr.name in attrs) is cond.present
    if isinstance(cond, And):
        return evaluate(cond.left, attrs, params) and evaluate(cond.right, attrs, params)
    if isinstance(cond, Or):
        return evaluate(cond.left, attrs, params) or evaluate(cond.right, attrs, params)
    if isinstance(cond, Not):
        return not evaluate(cond.inner, attrs, params)
    raise TypeError(f"not a condition: {cond!r}")


def apply_update(
    upd: Update, item: Item, params: Mapping[str, Value] | None = None
) -> dict[str, AttributeValue]:
    """Return a copy of ``item`` with the update's actions applied.

    ``params`` gives the values of the update's ``Param`` operands, if any.
    """
    result = dict(item)
    for action in upd.actions:
        if isinstance(action, SetAction):
            result[action.attr.name] = to_attribute_value(action.value)
        elif isinstance(action, SetParamAction):
            result[action.attr.name] = to_attribute_value(_bound(action.param, params))
        else:
            result.pop(action.attr.name, None)
    return result
