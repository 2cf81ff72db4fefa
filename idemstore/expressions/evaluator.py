"""Running expressions in Python: ``evaluate`` a condition, ``apply_update`` an update.

Both follow DynamoDB's semantics for comparisons, types and numbers, and raise
``ExpressionError`` for an update DynamoDB would refuse for the item at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Context, Decimal, DecimalException, Inexact, Overflow, Underflow
from typing import TypeAlias

from idemstore.errors import ExpressionError
from idemstore.expressions.builder import (
    ORDERED_KINDS,
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
    Item,
    ListAppend,
    Not,
    Operand,
    Operator,
    Or,
    Param,
    RemoveAction,
    SetAction,
    SetExpression,
    SetParamAction,
    Size,
    Update,
    Value,
    check_action_value,
    check_bounds,
    kind_of,
    order,
    path_text,
    to_attribute_value,
)

# DynamoDB numbers carry up to 38 significant digits; arithmetic that would round fails.
_NUMBER_CONTEXT = Context(prec=38, traps=[Inexact, Overflow, Underflow])


# --- evaluating ----------------------------------------------------------------


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


def _comparable(left: AttributeValue, right: AttributeValue) -> bool:
    return kind_of(left) == kind_of(right) and kind_of(left) in ORDERED_KINDS


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
        return order(left, right)
    if op == "<=":
        return not order(right, left)
    if op == ">":
        return order(right, left)
    return not order(left, right)


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
        check_bounds(low, high)  # checked when built, unless a bound is a parameter
        if found is None or not (_comparable(found, low) and _comparable(found, high)):
            return False
        return not order(found, low) and not order(high, found)
    if isinstance(cond, In):
        found = _subject_value(cond.attr, attrs)
        return found is not None and any(
            _equal(found, _operand(value, params)) for value in cond.values
        )
    if isinstance(cond, BeginsWith):
        found = _resolve(attrs, cond.attr)
        prefix = _operand(cond.prefix, params)
        if kind_of(prefix) not in ("S", "B"):
            raise ExpressionError(f"begins_with takes a str or bytes prefix, got {prefix}")
        if found is None or kind_of(found) != kind_of(prefix) or kind_of(found) not in ("S", "B"):
            return False
        return bool(found[kind_of(found)].startswith(prefix[kind_of(prefix)]))
    if isinstance(cond, Contains):
        found = _resolve(attrs, cond.attr)
        return found is not None and _contains(found, _operand(cond.value, params))
    if isinstance(cond, AttributeType):
        found = _resolve(attrs, cond.attr)
        return found is not None and kind_of(found) == cond.type_name
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
        if kind_of(first) != "L" or kind_of(second) != "L":
            raise ExpressionError(
                f"list_append takes two lists, got {kind_of(first)} and {kind_of(second)}"
            )
        return {"L": [*first["L"], *second["L"]]}
    if isinstance(value, Arithmetic):
        left = _value_of(value.left, item, params)
        right = _value_of(value.right, item, params)
        if kind_of(left) != "N" or kind_of(right) != "N":
            raise ExpressionError(
                f"{value.op} takes two numbers, got {kind_of(left)} and {kind_of(right)}"
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
    if current is None or kind_of(current) != container:
        raise ExpressionError(
            f"the path {attr} is invalid for an update: "
            f"{path_text(attr.path[: depth + 1])} is not "
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
    check_action_value("ADD", value)  # checked when built, unless it is a parameter
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
    check_action_value("DELETE", value)  # checked when built, unless it is a parameter
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
