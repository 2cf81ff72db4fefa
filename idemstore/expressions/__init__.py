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

from idemstore.expressions.builder import (
    MAX_IN_OPERANDS,
    Action,
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
    Number,
    Operand,
    Operator,
    Or,
    Param,
    PathStep,
    RemoveAction,
    SetAction,
    SetExpression,
    SetParamAction,
    Size,
    Term,
    TypeName,
    Update,
    Value,
    attribute_exists,
    attribute_not_exists,
    attribute_type,
    begins_with,
    contains,
    if_not_exists,
    list_append,
    size,
    to_attribute_value,
    update,
)
from idemstore.expressions.compiler import (
    CompiledRequest,
    Placeholders,
    PreparedRequest,
    compile_request,
    prepare,
)
from idemstore.expressions.evaluator import Leaf, apply_update, evaluate

__all__ = [
    "MAX_IN_OPERANDS",
    "Action",
    "AddAction",
    "And",
    "Arithmetic",
    "Attr",
    "AttributeType",
    "AttributeValue",
    "BeginsWith",
    "Between",
    "Compare",
    "CompareParam",
    "CompiledRequest",
    "Condition",
    "Contains",
    "DeleteAction",
    "Exists",
    "IfNotExists",
    "In",
    "Item",
    "Leaf",
    "ListAppend",
    "Not",
    "Number",
    "Operand",
    "Operator",
    "Or",
    "Param",
    "PathStep",
    "Placeholders",
    "PreparedRequest",
    "RemoveAction",
    "SetAction",
    "SetExpression",
    "SetParamAction",
    "Size",
    "Term",
    "TypeName",
    "Update",
    "Value",
    "apply_update",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "compile_request",
    "contains",
    "evaluate",
    "if_not_exists",
    "list_append",
    "prepare",
    "size",
    "to_attribute_value",
    "update",
]
