"""Compiling expressions into the expression parts of a DynamoDB request.

Names become ``#nK`` and values ``:vK`` placeholders in one placeholder space per
request; ``prepare`` compiles a request with ``Param`` operands once, ``bind``
fills them in per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from idemstore.expressions.builder import (
    SET_KINDS,
    AddAction,
    And,
    Arithmetic,
    Attr,
    AttributeType,
    AttributeValue,
    BeginsWith,
    Between,
    Compare,
    CompareParam,
    Condition,
    Contains,
    DeleteAction,
    Exists,
    IfNotExists,
    In,
    ListAppend,
    Not,
    Operand,
    Or,
    Param,
    RemoveAction,
    SetAction,
    SetExpression,
    SetParamAction,
    Size,
    Update,
    Value,
    to_attribute_value,
)


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
    if kind in SET_KINDS:
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
