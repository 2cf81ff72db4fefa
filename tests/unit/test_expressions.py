"""The expression builder: compiled strings, placeholders, evaluation, updates."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from condition_reading import Tokens, read_condition, tree_of
from hostile_text import HOSTILE_TEXT
from hypothesis import given, settings
from hypothesis import strategies as st

from idemstore.errors import ExpressionError
from idemstore.expressions import (
    And,
    Attr,
    AttributeValue,
    Compare,
    CompiledRequest,
    Condition,
    Exists,
    Not,
    Operator,
    Or,
    RemoveAction,
    SetAction,
    Update,
    Value,
    apply_update,
    attribute_exists,
    attribute_not_exists,
    compile_request,
    evaluate,
    to_attribute_value,
    update,
)

A = Attr("a") == 1
B = Attr("b") == "x"
C = Attr("c") > Decimal("2.5")
ABC_NAMES = {"#n0": "a", "#n1": "b", "#n2": "c"}
ABC_VALUES = {":v0": {"N": "1"}, ":v1": {"S": "x"}, ":v2": {"N": "2.5"}}

OPERATORS: dict[Operator, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def compare(attr: Attr, op: Operator, value: Value) -> Condition:
    """Build a comparison through the public operators, as users write them."""
    if op == "=":
        return attr == value
    if op == "<>":
        return attr != value
    if op == "<":
        return attr < value
    if op == "<=":
        return attr <= value
    if op == ">":
        return attr > value
    return attr >= value


# --- golden tests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param(A & B | C, "#n0 = :v0 AND #n1 = :v1 OR #n2 > :v2", id="and-binds-tighter"),
        pytest.param(A | B & C, "#n0 = :v0 OR #n1 = :v1 AND #n2 > :v2", id="and-on-the-right"),
        pytest.param((A | B) & C, "(#n0 = :v0 OR #n1 = :v1) AND #n2 > :v2", id="or-inside-and"),
        pytest.param(A & (B | C), "#n0 = :v0 AND (#n1 = :v1 OR #n2 > :v2)", id="or-right-of-and"),
        pytest.param(A & B & C, "#n0 = :v0 AND #n1 = :v1 AND #n2 > :v2", id="and-chain"),
        pytest.param(A & (B & C), "#n0 = :v0 AND #n1 = :v1 AND #n2 > :v2", id="and-nested"),
        pytest.param(A | (B | C), "#n0 = :v0 OR #n1 = :v1 OR #n2 > :v2", id="or-nested"),
        pytest.param(
            ~A & B | C, "NOT #n0 = :v0 AND #n1 = :v1 OR #n2 > :v2", id="not-binds-tightest"
        ),
        pytest.param(~(A & B) | C, "NOT (#n0 = :v0 AND #n1 = :v1) OR #n2 > :v2", id="not-of-and"),
        pytest.param(~(A | B) & C, "NOT (#n0 = :v0 OR #n1 = :v1) AND #n2 > :v2", id="not-of-or"),
        pytest.param(~A & ~B | ~C, "NOT #n0 = :v0 AND NOT #n1 = :v1 OR NOT #n2 > :v2", id="nots"),
    ],
)
def test_precedence_uses_minimal_parentheses(condition: Condition, expected: str) -> None:
    compiled = compile_request(condition=condition)
    assert compiled == CompiledRequest(expected, None, ABC_NAMES, ABC_VALUES)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (Attr("a") == 1, "#n0 = :v0"),
        (Attr("a") != 1, "#n0 <> :v0"),
        (Attr("a") < 1, "#n0 < :v0"),
        (Attr("a") <= 1, "#n0 <= :v0"),
        (Attr("a") > 1, "#n0 > :v0"),
        (Attr("a") >= 1, "#n0 >= :v0"),
    ],
)
def test_each_comparison_operator(condition: Condition, expected: str) -> None:
    compiled = compile_request(condition=condition)
    assert compiled == CompiledRequest(expected, None, {"#n0": "a"}, {":v0": {"N": "1"}})


def test_existence_functions_use_names_only() -> None:
    compiled = compile_request(
        condition=attribute_exists("a") | attribute_not_exists(Attr("b")) | Attr("a").exists()
    )
    assert compiled == CompiledRequest(
        "attribute_exists(#n0) OR attribute_not_exists(#n1) OR attribute_exists(#n0)",
        None,
        {"#n0": "a", "#n1": "b"},
        {},
    )
    assert compiled.as_kwargs() == {
        "ConditionExpression": compiled.condition,
        "ExpressionAttributeNames": {"#n0": "a", "#n1": "b"},
    }


def test_equal_values_share_one_placeholder_and_types_stay_apart() -> None:
    condition = (
        (Attr("a") == 1)
        | (Attr("b") == Decimal("1"))  # the same DynamoDB number as 1
        | (Attr("c") == "1")
        | (Attr("d") == True)  # noqa: E712 - the builder's operator, not a truth test
        | (Attr("a") == b"1")
        | (Attr("b") == None)  # noqa: E711 - the builder's operator, not an identity test
    )
    compiled = compile_request(condition=condition)
    assert compiled.condition == (
        "#n0 = :v0 OR #n1 = :v0 OR #n2 = :v1 OR #n3 = :v2 OR #n0 = :v3 OR #n1 = :v4"
    )
    assert compiled.names == {"#n0": "a", "#n1": "b", "#n2": "c", "#n3": "d"}
    assert compiled.values == {
        ":v0": {"N": "1"},
        ":v1": {"S": "1"},
        ":v2": {"BOOL": True},
        ":v3": {"B": b"1"},
        ":v4": {"NULL": True},
    }


def test_condition_and_update_share_one_placeholder_space() -> None:
    status, owner, data = Attr("status"), Attr("owner_token"), Attr("data")
    compiled = compile_request(
        condition=(status == "INPROGRESS") & (owner == "t1"),
        update=update(status.set("COMPLETED"), data.set("t1"), owner.remove()),
    )
    assert compiled == CompiledRequest(
        condition="#n0 = :v0 AND #n1 = :v1",
        update="SET #n0 = :v2, #n2 = :v1 REMOVE #n1",
        names={"#n0": "status", "#n1": "owner_token", "#n2": "data"},
        values={":v0": {"S": "INPROGRESS"}, ":v1": {"S": "t1"}, ":v2": {"S": "COMPLETED"}},
    )
    assert compiled.as_kwargs() == {
        "ConditionExpression": "#n0 = :v0 AND #n1 = :v1",
        "UpdateExpression": "SET #n0 = :v2, #n2 = :v1 REMOVE #n1",
        "ExpressionAttributeNames": compiled.names,
        "ExpressionAttributeValues": compiled.values,
    }


def test_update_lists_sets_before_removes() -> None:
    compiled = compile_request(
        update=update(Attr("a").set(1), Attr("b").remove(), Attr("c").set(None))
    )
    assert compiled == CompiledRequest(
        None,
        "SET #n0 = :v0, #n1 = :v1 REMOVE #n2",
        {"#n0": "a", "#n1": "c", "#n2": "b"},
        {":v0": {"N": "1"}, ":v1": {"NULL": True}},
    )


def test_as_kwargs_leaves_out_empty_parts() -> None:
    removal = compile_request(update=update(Attr("a").remove(), Attr("b").remove()))
    assert removal.as_kwargs() == {
        "UpdateExpression": "REMOVE #n0, #n1",
        "ExpressionAttributeNames": {"#n0": "a", "#n1": "b"},
    }
    assert compile_request().as_kwargs() == {}
    assert compile_request() == CompiledRequest(None, None, {}, {})


# --- truth value --------------------------------------------------------------


def branch_on(condition: Condition) -> str:
    if condition:  # the mistake the builder must catch
        return "taken"
    return "not taken"


def test_a_condition_refuses_to_be_a_boolean() -> None:
    condition = Attr("a") == 1
    with pytest.raises(TypeError, match="no truth value"):
        bool(condition)
    with pytest.raises(TypeError, match="no truth value"):
        branch_on(Attr("a") == 1)
    with pytest.raises(TypeError, match="no truth value"):
        _ = condition and (Attr("b") == 2)
    with pytest.raises(TypeError, match="no truth value"):
        _ = not condition


# --- values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, {"BOOL": True}),
        (False, {"BOOL": False}),
        (None, {"NULL": True}),
        ("", {"S": ""}),
        ("naïve ☃", {"S": "naïve ☃"}),
        (b"", {"B": b""}),
        (b"\x00\xff", {"B": b"\x00\xff"}),
        (0, {"N": "0"}),
        (-42, {"N": "-42"}),
        (10**30, {"N": "1" + "0" * 30}),
        (1.5, {"N": "1.5"}),
        (Decimal("1.10"), {"N": "1.10"}),
        (Decimal("-3E+5"), {"N": "-3E+5"}),
        ({"b", "a"}, {"SS": ["a", "b"]}),  # sorted: one set, one request
        (frozenset({b"\x02", b"\x01"}), {"BS": [b"\x01", b"\x02"]}),
        ({10, Decimal("2.5"), -1}, {"NS": ["-1", "2.5", "10"]}),
        ([], {"L": []}),
        (
            [1, "x", None, [True]],
            {"L": [{"N": "1"}, {"S": "x"}, {"NULL": True}, {"L": [{"BOOL": True}]}]},
        ),
        ((1,), {"L": [{"N": "1"}]}),
        ({}, {"M": {}}),
        ({"a": {"b": {"x"}}}, {"M": {"a": {"M": {"b": {"SS": ["x"]}}}}}),
    ],
)
def test_to_attribute_value(value: Value, expected: AttributeValue) -> None:
    assert to_attribute_value(value) == expected


NON_FINITE = [
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
]


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_numbers_are_refused_when_built(value: float | Decimal) -> None:
    with pytest.raises(ValueError, match="finite"):
        to_attribute_value(value)
    with pytest.raises(ValueError, match="finite"):
        _ = Attr("a") < value
    with pytest.raises(ValueError, match="finite"):
        Attr("a").set(value)
    with pytest.raises(ExpressionError, match="finite"):
        to_attribute_value([value])


@pytest.mark.parametrize(
    "value",
    [bytearray(b"x"), object(), {1: "x"}, {1, "x"}, {True}, [object()], {"a": {b"x", 1}}],
    ids=repr,
)
def test_unknown_types_are_refused_when_built(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        to_attribute_value(value)
    with pytest.raises(TypeError, match="cannot encode"):
        _ = Attr("a") == value
    with pytest.raises(TypeError, match="cannot encode"):
        Attr("a").set(value)


def test_a_path_is_no_comparison_value() -> None:
    other: Any = Attr("b")  # comparing two paths is not part of the builder
    with pytest.raises(TypeError, match="cannot encode"):
        _ = Attr("a") == other


# --- updates ------------------------------------------------------------------


def test_apply_update_sets_and_removes_on_a_copy() -> None:
    item: dict[str, AttributeValue] = {
        "id": {"S": "k"},
        "status": {"S": "INPROGRESS"},
        "owner_token": {"S": "t"},
    }
    original = {name: dict(value) for name, value in item.items()}
    result = apply_update(
        update(
            Attr("status").set("COMPLETED"),
            Attr("data").set(None),
            Attr("owner_token").remove(),
            Attr("never_there").remove(),
        ),
        item,
    )
    assert result == {"id": {"S": "k"}, "status": {"S": "COMPLETED"}, "data": {"NULL": True}}
    assert item == original


def test_update_refuses_no_actions_and_repeated_attributes() -> None:
    with pytest.raises(ValueError, match="at least one action"):
        update()
    with pytest.raises(ValueError, match="twice"):
        update(Attr("a").set(1), Attr("a").set(2))
    with pytest.raises(ValueError, match="twice"):
        Update((SetAction(Attr("a"), 1), RemoveAction(Attr("a"))))


def test_attribute_names_must_be_non_empty() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Attr("")


# --- evaluation ---------------------------------------------------------------


def test_evaluate_on_no_item() -> None:
    assert evaluate(Attr("a").not_exists(), None)
    assert not evaluate(Attr("a").exists(), None)
    assert evaluate(Attr("a") != 1, None)
    for op in ("=", "<", "<=", ">", ">="):
        assert not evaluate(compare(Attr("a"), op, 1), None)


@pytest.mark.parametrize(
    ("stored", "value"),
    [
        ({"BOOL": True}, 1),
        ({"BOOL": False}, 0),
        ({"N": "1"}, True),
        ({"S": "1"}, 1),
        ({"N": "1"}, "1"),
        ({"B": b"x"}, "x"),
        ({"NULL": True}, False),
    ],
)
def test_values_of_different_types_are_never_equal(stored: AttributeValue, value: Value) -> None:
    item = {"a": stored}
    assert not evaluate(Attr("a") == value, item)
    assert evaluate(Attr("a") != value, item)
    for op in ("<", "<=", ">", ">="):
        assert not evaluate(compare(Attr("a"), op, value), item)


@pytest.mark.parametrize(
    ("stored", "value", "holds"),
    [
        ({"N": "10"}, 9, [">", ">=", "<>"]),  # numeric, not text, order
        ({"N": "1.50"}, Decimal("1.5"), ["=", "<=", ">="]),
        ({"S": "b"}, "a", [">", ">=", "<>"]),
        ({"S": "B"}, "a", ["<", "<=", "<>"]),  # code point order
        ({"B": b"\xff"}, b"\x01", [">", ">=", "<>"]),  # unsigned bytes
        ({"BOOL": True}, True, ["="]),  # no order on booleans
        ({"NULL": True}, None, ["="]),
    ],
)
def test_comparisons_within_one_type(
    stored: AttributeValue, value: Value, holds: list[Operator]
) -> None:
    for op in ("=", "<>", "<", "<=", ">", ">="):
        assert evaluate(compare(Attr("a"), op, value), {"a": stored}) is (op in holds), op


# --- properties ---------------------------------------------------------------

names = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(min_size=1, max_size=12))
values: st.SearchStrategy[Value] = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=12),
    st.integers(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=6),
    st.booleans(),
    st.none(),
)
operators: st.SearchStrategy[Operator] = st.sampled_from(list(OPERATORS))


def conditions(
    attr_names: st.SearchStrategy[str], attr_values: st.SearchStrategy[Value]
) -> st.SearchStrategy[Condition]:
    comparisons = st.builds(compare, attr_names.map(Attr), operators, attr_values)
    existence = st.builds(Exists, attr_names.map(Attr), st.booleans())
    return st.recursive(
        st.one_of(comparisons, existence),
        lambda inner: st.one_of(
            st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)
        ),
        max_leaves=10,
    )


updates = st.lists(
    st.tuples(names, st.one_of(st.none(), st.tuples(values))),
    min_size=1,
    max_size=5,
    unique_by=lambda action: action[0],
).map(
    lambda actions: update(
        *(Attr(name).set(v[0]) if v is not None else Attr(name).remove() for name, v in actions)
    )
)

TOKEN = re.compile(
    r"#n\d+|:v\d+|attribute_not_exists|attribute_exists|AND|OR|NOT|SET|REMOVE|<>|<=|>=|[=<>(),]"
)
PLACEHOLDER = re.compile(r"#n\d+|:v\d+")


def tokens(text: str) -> list[str]:
    """Split an expression; fails unless it holds grammar tokens and spaces only."""
    found = TOKEN.findall(text)
    assert "".join(found) == text.replace(" ", ""), f"foreign text in {text!r}"
    return found


def plain(cond: Compare | Exists) -> Attr:
    """The attribute of a leaf the strategies here build: a top-level name, no size()."""
    assert isinstance(cond.attr, Attr)
    return cond.attr


def shape(cond: Condition) -> Any:
    """A comparable form of a condition tree (see ``tree_of``)."""

    def leaf(cond: Condition) -> Any:
        if isinstance(cond, Compare):
            value = tuple(to_attribute_value(cond.value).items())
            return ("cmp", plain(cond).name, cond.op, value)
        assert isinstance(cond, Exists), cond
        return ("exists", cond.attr.name, cond.present)

    return tree_of(cond, leaf)


def parse_condition(compiled: CompiledRequest) -> Any:
    """Read a compiled condition back as DynamoDB's grammar does (NOT > AND > OR)."""
    assert compiled.condition is not None
    stream = Tokens(tokens(compiled.condition))

    def primary() -> Any:
        token = stream.take()
        if token in ("attribute_exists", "attribute_not_exists"):
            stream.take("(")
            name = compiled.names[stream.take()]
            stream.take(")")
            return ("exists", name, token == "attribute_exists")
        name = compiled.names[token]
        op = stream.take()
        value = compiled.values[stream.take()]
        return ("cmp", name, op, tuple(value.items()))

    return read_condition(compiled.condition, stream, primary)


def used_names(cond: Condition | Update) -> set[str]:
    if isinstance(cond, Update):
        return {action.attr.name for action in cond.actions}
    if isinstance(cond, Compare | Exists):
        return {plain(cond).name}
    if isinstance(cond, Not):
        return used_names(cond.inner)
    assert isinstance(cond, And | Or)
    return used_names(cond.left) | used_names(cond.right)


def used_values(cond: Condition | Update) -> set[tuple[str, Any]]:
    if isinstance(cond, Update):
        found: list[Any] = [a.value for a in cond.actions if isinstance(a, SetAction)]
        return {next(iter(to_attribute_value(v).items())) for v in found}
    if isinstance(cond, Compare):
        return {next(iter(to_attribute_value(cond.value).items()))}
    if isinstance(cond, Exists):
        return set()
    if isinstance(cond, Not):
        return used_values(cond.inner)
    assert isinstance(cond, And | Or)
    return used_values(cond.left) | used_values(cond.right)


@settings(deadline=None, max_examples=300)
@given(condition=conditions(names, values), upd=st.one_of(st.none(), updates))
def test_user_text_never_reaches_the_expression_strings(
    condition: Condition, upd: Update | None
) -> None:
    compiled = compile_request(condition=condition, update=upd)
    texts = [text for text in (compiled.condition, compiled.update) if text is not None]
    for text in texts:
        tokens(text)  # grammar tokens and placeholders only: no name, no value
    referenced = {p for text in texts for p in PLACEHOLDER.findall(text)}
    assert referenced == set(compiled.names) | set(compiled.values)

    expected_names = used_names(condition) | (used_names(upd) if upd else set())
    assert sorted(compiled.names.values()) == sorted(expected_names)  # each name once
    expected_values = used_values(condition) | (used_values(upd) if upd else set())
    encoded = [next(iter(v.items())) for v in compiled.values.values()]
    assert len(encoded) == len(expected_values)  # each value once
    assert set(encoded) == expected_values


@settings(deadline=None, max_examples=300)
@given(condition=conditions(names, values))
def test_compiled_condition_reads_back_as_the_same_tree(condition: Condition) -> None:
    assert parse_condition(compile_request(condition=condition)) == shape(condition)


# evaluate() against a model written over Python values, not DynamoDB's typed form.
SMALL_NAMES = st.sampled_from(["a", "b", "c"])
SMALL_VALUES: st.SearchStrategy[Value] = st.sampled_from(
    [
        0,
        1,
        2,
        2.0,
        1.5,
        Decimal("1.5"),
        Decimal("-1"),
        "",
        "x",
        "y",
        "é",
        b"",
        b"x",
        b"\xff",
        True,
        False,
        None,
    ]
)


def kind_of(value: Value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "S"
    if isinstance(value, bytes):
        return "B"
    return "N"


def model(cond: Condition, item: dict[str, Value]) -> bool:
    if isinstance(cond, Exists):
        return (cond.attr.name in item) == cond.present
    if isinstance(cond, Not):
        return not model(cond.inner, item)
    if isinstance(cond, And):
        return model(cond.left, item) and model(cond.right, item)
    if isinstance(cond, Or):
        return model(cond.left, item) or model(cond.right, item)
    assert isinstance(cond, Compare)
    if plain(cond).name not in item:
        return cond.op == "<>"  # a missing attribute differs from every value
    left, right = item[plain(cond).name], cond.value
    same_kind = kind_of(left) == kind_of(right)
    if cond.op in ("=", "<>"):
        equal = same_kind and left == right
        return equal if cond.op == "=" else not equal
    if not same_kind or kind_of(left) not in ("S", "N", "B"):
        return False  # ordering across types, or of BOOL/NULL, never holds
    return OPERATORS[cond.op](left, right)


@settings(deadline=None, max_examples=400)
@given(
    condition=conditions(SMALL_NAMES, SMALL_VALUES),
    item=st.one_of(st.none(), st.dictionaries(SMALL_NAMES, SMALL_VALUES)),
)
def test_evaluate_agrees_with_a_python_model(
    condition: Condition, item: dict[str, Value] | None
) -> None:
    encoded = None if item is None else {k: to_attribute_value(v) for k, v in item.items()}
    assert evaluate(condition, encoded) is model(condition, item or {})
