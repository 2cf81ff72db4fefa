"""The builder's full grammar: paths, functions, BETWEEN/IN, SET arithmetic, ADD/DELETE.

Golden tests pin the compiled ``(expression, names, values)``; semantic tests pin
``evaluate``/``apply_update`` to DynamoDB's documented rules; properties show that
no name or value ever reaches an expression string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from condition_reading import Tokens, read_condition, tree_of
from hostile_text import HOSTILE_TEXT
from hypothesis import given, settings
from hypothesis import strategies as st

from idemstore.errors import ExpressionError, IdempotencyError
from idemstore.expressions import (
    Action,
    Attr,
    AttributeType,
    AttributeValue,
    BeginsWith,
    Between,
    Compare,
    CompiledRequest,
    Condition,
    Contains,
    Exists,
    In,
    Param,
    Size,
    TypeName,
    Update,
    Value,
    apply_update,
    attribute_type,
    begins_with,
    compile_request,
    contains,
    evaluate,
    if_not_exists,
    list_append,
    prepare,
    size,
    to_attribute_value,
    update,
)

# --- golden tests: conditions ----------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expression", "names", "values"),
    [
        pytest.param(
            Attr("address").key("city") == "Paris",
            "#n0.#n1 = :v0",
            {"#n0": "address", "#n1": "city"},
            {":v0": {"S": "Paris"}},
            id="map-member",
        ),
        pytest.param(
            Attr("items")[0] >= 1,
            "#n0[0] >= :v0",
            {"#n0": "items"},
            {":v0": {"N": "1"}},
            id="list-element",
        ),
        pytest.param(
            Attr("a").key("b")[2].key("c").exists(),
            "attribute_exists(#n0.#n1[2].#n2)",
            {"#n0": "a", "#n1": "b", "#n2": "c"},
            {},
            id="chained-path",
        ),
        pytest.param(
            Attr("m")[1][0].key("m").not_exists(),
            "attribute_not_exists(#n0[1][0].#n0)",
            {"#n0": "m"},
            {},
            id="one-name-one-placeholder-at-any-depth",
        ),
        pytest.param(
            Attr("a.b[0]").key("#x :y") == 1,
            "#n0.#n1 = :v0",
            {"#n0": "a.b[0]", "#n1": "#x :y"},
            {":v0": {"N": "1"}},
            id="punctuation-is-part-of-a-name",
        ),
        pytest.param(
            Attr("sku").begins_with("AB-") & begins_with("raw", b"\x89PNG"),
            "begins_with(#n0, :v0) AND begins_with(#n1, :v1)",
            {"#n0": "sku", "#n1": "raw"},
            {":v0": {"S": "AB-"}, ":v1": {"B": b"\x89PNG"}},
            id="begins-with",
        ),
        pytest.param(
            Attr("tags").contains("red") | contains(Attr("l")[0], 3),
            "contains(#n0, :v0) OR contains(#n1[0], :v1)",
            {"#n0": "tags", "#n1": "l"},
            {":v0": {"S": "red"}, ":v1": {"N": "3"}},
            id="contains",
        ),
        pytest.param(
            (Attr("x").size() > 3) & (size("y") == 3),
            "size(#n0) > :v0 AND size(#n1) = :v0",
            {"#n0": "x", "#n1": "y"},
            {":v0": {"N": "3"}},
            id="size",
        ),
        pytest.param(
            Attr("a").attribute_type("SS") | attribute_type("b", "S"),
            "attribute_type(#n0, :v0) OR attribute_type(#n1, :v1)",
            {"#n0": "a", "#n1": "b"},
            {":v0": {"S": "SS"}, ":v1": {"S": "S"}},
            id="attribute-type",
        ),
        pytest.param(
            Attr("n").between(1, 10) & ~Attr("s").size().between(0, 1),
            "#n0 BETWEEN :v0 AND :v1 AND NOT size(#n1) BETWEEN :v2 AND :v0",
            {"#n0": "n", "#n1": "s"},
            {":v0": {"N": "1"}, ":v1": {"N": "10"}, ":v2": {"N": "0"}},
            id="between",
        ),
        pytest.param(
            Attr("status").is_in("A", "B", "A") | Attr("x").size().is_in(0),
            "#n0 IN (:v0, :v1, :v0) OR size(#n1) IN (:v2)",
            {"#n0": "status", "#n1": "x"},
            {":v0": {"S": "A"}, ":v1": {"S": "B"}, ":v2": {"N": "0"}},
            id="in",
        ),
        pytest.param(
            Attr("tags") == {"b", "a"},
            "#n0 = :v0",
            {"#n0": "tags"},
            {":v0": {"SS": ["a", "b"]}},
            id="set-value",
        ),
    ],
)
def test_conditions_compile(
    condition: Condition,
    expression: str,
    names: dict[str, str],
    values: dict[str, AttributeValue],
) -> None:
    assert compile_request(condition=condition) == CompiledRequest(expression, None, names, values)


# --- golden tests: updates ---------------------------------------------------------


@pytest.mark.parametrize(
    ("upd", "expression", "names", "values"),
    [
        pytest.param(
            update(Attr("n").set(Attr("n") + 1)),
            "SET #n0 = #n0 + :v0",
            {"#n0": "n"},
            {":v0": {"N": "1"}},
            id="increment",
        ),
        pytest.param(
            update(Attr("n").set(10 - Attr("m"))),
            "SET #n0 = :v0 - #n1",
            {"#n0": "n", "#n1": "m"},
            {":v0": {"N": "10"}},
            id="value-minus-path",
        ),
        pytest.param(
            update(Attr("n").set(if_not_exists("n", 0) + 1)),
            "SET #n0 = if_not_exists(#n0, :v0) + :v1",
            {"#n0": "n"},
            {":v0": {"N": "0"}, ":v1": {"N": "1"}},
            id="counter-from-nothing",
        ),
        pytest.param(
            update(Attr("l").set(list_append(if_not_exists("l", []), ["x"]))),
            "SET #n0 = list_append(if_not_exists(#n0, :v0), :v1)",
            {"#n0": "l"},
            {":v0": {"L": []}, ":v1": {"L": [{"S": "x"}]}},
            id="append-to-maybe-missing-list",
        ),
        pytest.param(
            update(Attr("copy").set(Attr("a").key("b")), Attr("a").key("c").remove()),
            "SET #n0 = #n1.#n2 REMOVE #n1.#n3",
            {"#n0": "copy", "#n1": "a", "#n2": "b", "#n3": "c"},
            {},
            id="set-from-a-path",
        ),
        pytest.param(
            update(
                Attr("tags").delete({"old"}),
                Attr("count").add(1),
                Attr("l")[3].remove(),
                Attr("seen").add({"new"}),
                Attr("name").set("x"),
                Attr("l")[0].remove(),
            ),
            "SET #n0 = :v0 REMOVE #n1[3], #n1[0] ADD #n2 :v1, #n3 :v2 DELETE #n4 :v3",
            {"#n0": "name", "#n1": "l", "#n2": "count", "#n3": "seen", "#n4": "tags"},
            {
                ":v0": {"S": "x"},
                ":v1": {"N": "1"},
                ":v2": {"SS": ["new"]},
                ":v3": {"SS": ["old"]},
            },
            id="sections-grouped-in-dynamodb-order",
        ),
        pytest.param(
            update(Attr("ids").add({3, 1}), Attr("blobs").delete({b"\x00"})),
            "ADD #n0 :v0 DELETE #n1 :v1",
            {"#n0": "ids", "#n1": "blobs"},
            {":v0": {"NS": ["1", "3"]}, ":v1": {"BS": [b"\x00"]}},
            id="number-and-binary-sets",
        ),
    ],
)
def test_updates_compile(
    upd: Update, expression: str, names: dict[str, str], values: dict[str, AttributeValue]
) -> None:
    assert compile_request(update=upd) == CompiledRequest(None, expression, names, values)


def test_parameters_work_in_the_new_operands() -> None:
    prepared = prepare(
        condition=Attr("n").between(Param("low"), 9) & Attr("s").is_in(Param("a"), "b"),
        update=update(Attr("n").set(Attr("n") + Param("step")), Attr("tags").add(Param("tags"))),
    )
    assert prepared.compiled.condition == "#n0 BETWEEN :v0 AND :v1 AND #n1 IN (:v2, :v3)"
    assert prepared.compiled.update == "SET #n0 = #n0 + :v4 ADD #n2 :v5"
    bound = prepared.bind(low=1, a="a", step=2, tags={"t"})
    assert bound.values == {
        ":v0": {"N": "1"},
        ":v1": {"N": "9"},
        ":v2": {"S": "a"},
        ":v3": {"S": "b"},
        ":v4": {"N": "2"},
        ":v5": {"SS": ["t"]},
    }
    item = {"n": {"N": "5"}, "s": {"S": "a"}}
    params: dict[str, Value] = {"low": 1, "a": "a", "step": 2, "tags": {"t"}}
    assert evaluate(Attr("n").between(Param("low"), 9), item, params)
    upd = update(Attr("n").set(Attr("n") + Param("step")), Attr("tags").add(Param("tags")))
    assert apply_update(upd, item, params) == {
        "n": {"N": "7"},
        "s": {"S": "a"},
        "tags": {"SS": ["t"]},
    }


def test_parameters_bound_to_what_dynamodb_refuses_raise_when_applied() -> None:
    item: dict[str, AttributeValue] = {"n": {"N": "5"}, "s": {"S": "x"}}
    refusals: list[tuple[Any, str]] = [
        (lambda: evaluate(Attr("n").between(Param("lo"), 1), item, {"lo": 2}), "exceeds"),
        (lambda: evaluate(Attr("n").between(Param("lo"), 9), item, {"lo": "a"}), "one type"),
        (lambda: evaluate(Attr("s").begins_with(Param("p")), item, {"p": 1}), "str or bytes"),
        (lambda: apply_update(update(Attr("c").add(Param("v"))), item, {"v": "x"}), "ADD takes"),
        (lambda: apply_update(update(Attr("s").delete(Param("v"))), item, {"v": "x"}), "a set"),
    ]
    for call, message in refusals:
        with pytest.raises(ExpressionError, match=message):
            call()


# --- refused when built ------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ((Attr("a").set(1), Attr("a").add(2)), "twice"),
        ((Attr("a").set({"x": 1}), Attr("a").key("x").remove()), "overlapping"),
        ((Attr("a")[0].remove(), Attr("a")[0].key("b").set(1)), "overlapping"),
        ((Attr("a").key("b").set(1), Attr("a")[0].set(2)), "overlapping"),  # map and list
        ((Attr("a")[1].remove(), Attr("a")[1].remove()), "twice"),
    ],
)
def test_overlapping_paths_are_refused(actions: tuple[Action, ...], message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        update(*actions)


def test_disjoint_paths_under_one_attribute_are_allowed() -> None:
    upd = update(
        Attr("a").key("b").set(1),
        Attr("a").key("c").remove(),
        Attr("l")[0].remove(),
        Attr("l")[1].remove(),
    )
    assert compile_request(update=upd).update == "SET #n0.#n1 = :v0 REMOVE #n0.#n2, #n3[0], #n3[1]"


def test_malformed_operands_are_refused_when_built() -> None:
    sum_of_two = Attr("a") + 1
    untyped_sum: Any = sum_of_two  # a type error too; here the runtime check is under test
    refusals: list[tuple[Any, str]] = [
        (lambda: Attr("a").is_in(), "1 to 100"),
        (lambda: Attr("a").is_in(*range(101)), "1 to 100"),
        (lambda: Attr("a").between(2, 1), "exceeds"),
        (lambda: Attr("a").between(1, "2"), "one type"),
        (lambda: Attr("a").between(True, True), "one type"),
        (lambda: Attr("a").begins_with(1), "str or bytes"),  # type: ignore[arg-type]  # the mistake under test
        (lambda: Attr("a").attribute_type("STRING"), "attribute_type"),  # type: ignore[arg-type]  # the mistake under test
        (lambda: Attr("a").add("x"), "number or a set"),
        (lambda: Attr("a").delete(1), "takes a set"),
        (lambda: Attr("a").set(sum_of_two + 1), "one \\+ or -"),
        (lambda: Attr("a").set(Attr("a") + "1"), "N values"),
        (lambda: list_append(Attr("l"), "x"), "L values"),
        (lambda: if_not_exists("a", untyped_sum), "no \\+ or -"),
        (lambda: Attr("a").set(set()), "no empty sets"),
    ]
    for build, message in refusals:
        with pytest.raises(ExpressionError, match=message):
            build()
    hundred = Attr("a").is_in(*range(100))
    assert isinstance(hundred, In)
    assert len(hundred.values) == 100


def test_expression_errors_are_idempotency_errors_and_value_errors() -> None:
    assert issubclass(ExpressionError, IdempotencyError)
    assert issubclass(ExpressionError, ValueError)


@pytest.mark.parametrize("step", [-1, "", True, 1.0, None])
def test_path_steps_are_checked(step: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Attr("a", (step,))


def test_brackets_take_list_indexes_only() -> None:
    key: Any = "city"  # a type error too; here the runtime check is under test
    with pytest.raises(TypeError, match=r"\.key\(name\)"):
        Attr("m")[key]
    assert compile_request(condition=Attr("m").key("city").exists()).condition == (
        "attribute_exists(#n0.#n1)"
    )


def test_a_path_refuses_iteration_and_membership() -> None:
    # __getitem__ alone would make both loop forever over indexes 0, 1, 2, ...
    with pytest.raises(TypeError, match="not iterable"):
        list(Attr("a"))
    with pytest.raises(TypeError, match="contains"):
        _ = "x" in Attr("a")


# --- evaluate --------------------------------------------------------------------

ITEM: dict[str, AttributeValue] = {
    "s": {"S": "héllo"},
    "n": {"N": "5"},
    "b": {"B": b"\x01\x02\x03"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.50"]},
    "bs": {"BS": [b"\x00"]},
    "l": {"L": [{"S": "x"}, {"N": "1"}, {"L": []}]},
    "m": {"M": {"city": {"S": "Paris"}, "zip": {"N": "75001"}, "inner": {"M": {"k": {"S": "v"}}}}},
    "t": {"BOOL": True},
    "z": {"NULL": True},
}


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        (Attr("m").key("city") == "Paris", True),
        (Attr("m").key("inner").key("k") == "v", True),
        (Attr("m").key("nope") == "Paris", False),
        (Attr("m").key("nope") != "Paris", True),  # a missing path is "not equal"
        (Attr("l")[1] == 1, True),
        (Attr("l")[7] == 1, False),
        (Attr("l")[7].exists(), False),
        (Attr("l")[2].exists(), True),
        (Attr("s")[0].exists(), False),  # a string has no elements
        (Attr("l").key("x").exists(), False),  # a list has no members
        (Attr("s").begins_with("hé"), True),
        (Attr("s").begins_with("e"), False),
        (Attr("b").begins_with(b"\x01"), True),
        (Attr("b").begins_with("\x01"), False),  # types differ
        (Attr("n").begins_with("5"), False),
        (Attr("s").contains("ll"), True),
        (Attr("ss").contains("a"), True),
        (Attr("ss").contains("c"), False),
        (Attr("ns").contains(Decimal("2.5")), True),  # numbers by value
        (Attr("ns").contains("1"), False),
        (Attr("bs").contains(b"\x00"), True),
        (Attr("l").contains("x"), True),
        (Attr("l").contains([]), True),
        (Attr("l").contains("1"), False),
        (Attr("n").contains(5), False),
        (Attr("missing").contains("x"), False),
        (Attr("s").size() == 5, True),  # characters
        (Attr("b").size() == 3, True),
        (Attr("ss").size() == 2, True),
        (Attr("l").size() == 3, True),
        (Attr("m").size() == 3, True),
        (Attr("m").key("inner").size() == 1, True),
        (Attr("n").size() == 1, False),  # numbers have no size
        (Attr("missing").size() >= 0, False),
        (Attr("s").attribute_type("S"), True),
        (Attr("ns").attribute_type("NS"), True),
        (Attr("ns").attribute_type("SS"), False),
        (Attr("z").attribute_type("NULL"), True),
        (Attr("missing").attribute_type("NULL"), False),
        (Attr("n").between(5, 5), True),
        (Attr("n").between(Decimal("4.9"), 10), True),
        (Attr("n").between(6, 10), False),
        (Attr("s").between("a", "z"), True),
        (Attr("n").between("a", "z"), False),  # types differ
        (Attr("missing").between(0, 1), False),
        (Attr("l").size().between(3, 4), True),
        (Attr("n").is_in(1, 5.0), True),
        (Attr("n").is_in("5"), False),
        (Attr("missing").is_in(None), False),
        (Attr("ss") == {"b", "a"}, True),  # sets ignore order
        (Attr("ns") == {Decimal("2.5"), 1}, True),
        (Attr("ss") == {"a"}, False),
        (Attr("l") == ["x", 1, []], True),
        (Attr("l") == ["x", 1], False),
        (Attr("m").key("inner") == {"k": "v"}, True),
        (Attr("m").key("inner") == {"k": "w"}, False),
        (Attr("ss") < {"z"}, False),  # sets have no order
        (Attr("t").is_in(True), True),
    ],
    ids=repr,
)
def test_evaluate_follows_dynamodb(condition: Condition, holds: bool) -> None:
    assert evaluate(condition, ITEM) is holds


# --- apply_update ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "changes"),
    [
        (Attr("n").set(Attr("n") + 1), {"n": {"N": "6"}}),
        (Attr("n").set(Attr("n") - Decimal("0.5")), {"n": {"N": "4.5"}}),
        (Attr("c").set(if_not_exists("c", 0) + 1), {"c": {"N": "1"}}),
        (Attr("n").set(if_not_exists("n", 0) + 1), {"n": {"N": "6"}}),
        (Attr("l").set(list_append(Attr("l"), [2])), {"l": {"L": [{"N": "1"}, {"N": "2"}]}}),
        (Attr("l").set(list_append([0], Attr("l"))), {"l": {"L": [{"N": "0"}, {"N": "1"}]}}),
        (Attr("copy").set(Attr("m").key("a")), {"copy": {"S": "x"}}),
        (Attr("m").key("b").set(2), {"m": {"M": {"a": {"S": "x"}, "b": {"N": "2"}}}}),
        (Attr("l")[0].set("y"), {"l": {"L": [{"S": "y"}]}}),
        (Attr("l")[9].set("y"), {"l": {"L": [{"N": "1"}, {"S": "y"}]}}),  # past the end: appended
        (Attr("l")[0].remove(), {"l": {"L": []}}),
        (Attr("l")[5].remove(), {}),
        (Attr("m").key("a").remove(), {"m": {"M": {}}}),
        (Attr("n").add(2), {"n": {"N": "7"}}),
        (Attr("c").add(2), {"c": {"N": "2"}}),  # a missing number starts at 0
        (Attr("ss").add({"c", "a"}), {"ss": {"SS": ["a", "b", "c"]}}),
        (Attr("ns").add({1, 3}), {"ns": {"NS": ["1", "2", "3"]}}),
        (Attr("new").add({b"\x01"}), {"new": {"BS": [b"\x01"]}}),
        (Attr("ss").delete({"a", "z"}), {"ss": {"SS": ["b"]}}),
        (Attr("ns").delete({Decimal("1.0"), Decimal(2)}), {"ns": None}),  # the last element: gone
        (Attr("missing").delete({"a"}), {}),
    ],
    ids=repr,
)
def test_apply_update_follows_dynamodb(action: Action, changes: dict[str, Any]) -> None:
    item: dict[str, AttributeValue] = {
        "n": {"N": "5"},
        "l": {"L": [{"N": "1"}]},
        "m": {"M": {"a": {"S": "x"}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2"]},
    }
    frozen = repr(item)
    expected = {**item, **changes}
    assert apply_update(update(action), item) == {k: v for k, v in expected.items() if v}
    assert repr(item) == frozen  # nested values are copied, never changed in place


def test_every_operand_reads_the_item_before_the_update() -> None:
    item: dict[str, AttributeValue] = {
        "a": {"N": "1"},
        "b": {"N": "2"},
        "l": {"L": [{"S": "0"}, {"S": "1"}, {"S": "2"}]},
    }
    swapped = apply_update(
        update(
            Attr("a").set(Attr("b")),
            Attr("b").set(Attr("a")),
            Attr("l")[0].remove(),
            Attr("l")[2].remove(),
        ),
        item,
    )
    # The indexes name elements of the original list.
    assert swapped == {"a": {"N": "2"}, "b": {"N": "1"}, "l": {"L": [{"S": "1"}]}}


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Attr("s").set(Attr("s") + 1), "two numbers"),
        (Attr("x").set(Attr("missing") + 1), "does not have"),
        (Attr("x").set(Attr("missing")), "does not have"),
        (Attr("x").set(list_append(Attr("s"), [1])), "two lists"),
        (Attr("s").add(1), "holds S"),
        (Attr("ss").add({1}), "holds SS"),
        (Attr("ss").delete({1}), "holds SS"),
        (Attr("n").delete({"a"}), "holds N"),
        (Attr("missing").key("a").set(1), "invalid"),
        (Attr("missing").key("a").remove(), "invalid"),
        (Attr("s")[0].remove(), "not a list"),
        (Attr("ss").key("a").delete({"a"}), "not a map"),
        (Attr("s").key("a").set(1), "not a map"),
        (Attr("s")[0].set(1), "not a list"),
        (Attr("n").set(Attr("n") + Decimal("1E+126") * 10**10), "does not fit"),
    ],
    ids=repr,
)
def test_apply_update_refuses_type_mismatches(action: Action, message: str) -> None:
    item: dict[str, AttributeValue] = {"s": {"S": "x"}, "n": {"N": "9" * 38}, "ss": {"SS": ["a"]}}
    with pytest.raises(ExpressionError, match=message):
        apply_update(update(action), item)


# --- properties ------------------------------------------------------------------

names = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(min_size=1, max_size=8))
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=8))
scalars: st.SearchStrategy[Value] = st.one_of(
    texts,
    st.integers(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.binary(max_size=4),
    st.booleans(),
    st.none(),
)
sets: st.SearchStrategy[Value] = st.one_of(
    st.frozensets(texts, min_size=1, max_size=3),
    st.frozensets(st.integers(), min_size=1, max_size=3),
    st.frozensets(st.binary(max_size=3), min_size=1, max_size=3),
)
values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(scalars, sets),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=6,
)
paths = st.builds(
    lambda name, steps: Attr(name, tuple(steps)),
    names,
    st.lists(st.one_of(names, st.integers(0, 20)), max_size=3),
)
TYPES: list[TypeName] = ["S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M"]


def leaves(path: Attr) -> st.SearchStrategy[Condition]:
    subject = st.one_of(st.just(path), st.just(path.size()))
    ordered = st.one_of(
        st.lists(st.integers(), min_size=2, max_size=2).map(sorted),
        st.lists(texts, min_size=2, max_size=2).map(sorted),
    )
    return st.one_of(
        st.builds(lambda s, v: s == v, subject, values),
        st.builds(lambda s, v: s < v, subject, scalars),
        st.builds(lambda s, b: s.between(*b), subject, ordered),
        st.builds(lambda s, vs: s.is_in(*vs), subject, st.lists(values, min_size=1, max_size=4)),
        st.builds(path.begins_with, st.one_of(texts, st.binary(max_size=3))),
        st.builds(path.contains, values),
        st.builds(path.attribute_type, st.sampled_from(TYPES)),
        st.just(path.exists()),
        st.just(path.not_exists()),
    )


conditions = st.recursive(
    paths.flatmap(leaves),
    lambda inner: st.one_of(
        st.builds(lambda a, b: a & b, inner, inner),
        st.builds(lambda a, b: a | b, inner, inner),
        st.builds(lambda a: ~a, inner),
    ),
    max_leaves=8,
)


def actions(path: Attr, source: Attr) -> st.SearchStrategy[Action]:
    numbers = st.integers()
    return st.one_of(
        st.builds(path.set, values),
        st.builds(lambda n: path.set(source + n), numbers),
        st.builds(lambda n: path.set(n - source), numbers),
        st.builds(lambda v: path.set(if_not_exists(source, v)), values),
        st.builds(lambda v: path.set(list_append(source, [v])), values),
        st.builds(lambda n: path.set(if_not_exists(source, 0) + n), numbers),
        st.just(path.set(source)),
        st.just(path.remove()),
        st.builds(path.add, st.one_of(numbers, sets)),
        st.builds(path.delete, sets),
    )


@st.composite
def updates_on_distinct_attributes(
    draw: st.DrawFn,
    attribute_names: st.SearchStrategy[str],
    max_index: int,
    max_actions: int,
    sources: st.SearchStrategy[Attr],
    actions: Callable[[Attr, Attr], st.SearchStrategy[Action]],
) -> Update:
    """Actions on distinct top-level attributes, so no two paths overlap. Each action's target
    is a path of up to two steps (names, or indexes up to ``max_index``) below its attribute;
    its strategy is ``actions(target, source)``, with ``source`` drawn from ``sources``."""
    tops = draw(st.lists(attribute_names, min_size=1, max_size=max_actions, unique=True))
    chosen = []
    for top in tops:
        steps = draw(st.lists(st.one_of(attribute_names, st.integers(0, max_index)), max_size=2))
        chosen.append(draw(actions(Attr(top, tuple(steps)), draw(sources))))
    return update(*chosen)


updates = updates_on_distinct_attributes(
    names, max_index=5, max_actions=4, sources=paths, actions=actions
)


TOKEN = re.compile(
    r"#n\d+|:v\d+|\[\d+\]|attribute_not_exists|attribute_exists|attribute_type|begins_with"
    r"|contains|size|if_not_exists|list_append|BETWEEN|AND|OR|NOT|IN|SET|REMOVE|ADD|DELETE"
    r"|<>|<=|>=|[=<>(),.+-]"
)
PLACEHOLDER = re.compile(r"#n\d+|:v\d+")


@settings(deadline=None, max_examples=300)
@given(condition=st.one_of(st.none(), conditions), upd=st.one_of(st.none(), updates))
def test_hostile_names_and_values_never_reach_the_expressions(
    condition: Condition | None, upd: Update | None
) -> None:
    compiled = compile_request(condition=condition, update=upd)
    texts_out = [t for t in (compiled.condition, compiled.update) if t is not None]
    for text in texts_out:
        found = TOKEN.findall(text)
        assert "".join(found) == text.replace(" ", ""), f"foreign text in {text!r}"
    # Every placeholder declared is used, and every one used is declared.
    referenced = {p for text in texts_out for p in PLACEHOLDER.findall(text)}
    assert referenced == set(compiled.names) | set(compiled.values)
    # De-duplicated: no name and no value stands behind two placeholders.
    assert len(set(compiled.names.values())) == len(compiled.names)
    encoded = [repr(sorted(v.items())) for v in compiled.values.values()]
    assert len(set(encoded)) == len(encoded)


@settings(deadline=None, max_examples=200)
@given(value=values)
def test_values_survive_their_placeholder(value: Value) -> None:
    compiled = compile_request(condition=Attr("a") == value)
    assert list(compiled.values.values()) == [to_attribute_value(value)]
    assert evaluate(Attr("a") == value, {"a": to_attribute_value(value)})


# Small names and steps, so generated paths often meet generated items.
small_names = st.sampled_from(["a", "b", "c"])
small_paths = st.builds(
    lambda name, steps: Attr(name, tuple(steps)),
    small_names,
    st.lists(st.one_of(small_names, st.integers(0, 2)), max_size=2),
)
small_values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(
        st.sampled_from([0, 1, Decimal("2.5"), "", "a", b"a", True, None]),
        st.sampled_from([frozenset({"a"}), frozenset({1, 2}), frozenset({b"a"})]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(small_names, inner, max_size=3)
    ),
    max_leaves=5,
)
small_items = st.dictionaries(small_names, small_values.map(to_attribute_value), max_size=3)


def small_actions(target: Attr, source: Attr) -> st.SearchStrategy[Action]:
    return st.one_of(
        st.builds(target.set, small_values),
        st.just(target.set(source + 1)),
        st.just(target.set(if_not_exists(source, 0) - 1)),
        st.just(target.set(list_append(source, ["x"]))),
        st.just(target.set(source)),
        st.just(target.remove()),
        st.builds(target.add, st.sampled_from([1, frozenset({"a"}), frozenset({3})])),
        st.builds(target.delete, st.sampled_from([frozenset({"a"}), frozenset({1})])),
    )


small_updates = updates_on_distinct_attributes(
    small_names, max_index=2, max_actions=3, sources=small_paths, actions=small_actions
)


def holds_an_empty_set(value: AttributeValue) -> bool:
    ((kind, raw),) = value.items()
    if kind in ("SS", "NS", "BS"):
        return not raw
    if kind == "L":
        return any(holds_an_empty_set(element) for element in raw)
    if kind == "M":
        return any(holds_an_empty_set(member) for member in raw.values())
    return False


@settings(deadline=None, max_examples=200)
@given(upd=small_updates, item=small_items)
def test_apply_update_fails_only_as_dynamodb_would_and_changes_nothing(
    upd: Update, item: dict[str, AttributeValue]
) -> None:
    before = repr(item)
    try:
        result = apply_update(upd, item)
    except ExpressionError:
        result = None
    assert repr(item) == before  # the input, nested values included, is untouched
    if result is not None:
        assert not any(holds_an_empty_set(value) for value in result.values())
        assert set(result) <= set(item) | {action.attr.name for action in upd.actions}


@settings(deadline=None, max_examples=200)
@given(condition=small_paths.flatmap(leaves), item=small_items)
def test_evaluate_answers_every_built_condition_on_every_item(
    condition: Condition, item: dict[str, AttributeValue]
) -> None:
    # Type mismatches in a condition make it false in DynamoDB; they never fail.
    assert evaluate(condition, item) in (True, False)
    assert evaluate(~condition, item) is not evaluate(condition, item)


# --- the compiled condition reads back as the tree it came from -----------------------


def path_shape(attr: Attr) -> tuple[str | int, ...]:
    return attr.path


def subject_shape(subject: Attr | Size) -> Any:
    return ("size", subject.attr.path) if isinstance(subject, Size) else subject.path


def encoded(value: Any) -> str:
    return repr(to_attribute_value(value))


def tree_shape(cond: Condition) -> Any:
    """A comparable form of a condition tree (see ``tree_of``)."""

    def leaf(cond: Condition) -> Any:
        if isinstance(cond, Compare):
            return ("cmp", subject_shape(cond.attr), cond.op, encoded(cond.value))
        if isinstance(cond, Between):
            return ("between", subject_shape(cond.attr), encoded(cond.low), encoded(cond.high))
        if isinstance(cond, In):
            return ("in", subject_shape(cond.attr), tuple(encoded(v) for v in cond.values))
        if isinstance(cond, Exists):
            return ("exists", cond.attr.path, cond.present)
        if isinstance(cond, BeginsWith):
            return ("begins_with", cond.attr.path, encoded(cond.prefix))
        if isinstance(cond, Contains):
            return ("contains", cond.attr.path, encoded(cond.value))
        if isinstance(cond, AttributeType):
            return ("attribute_type", cond.attr.path, encoded(cond.type_name))
        raise AssertionError(f"not a leaf: {cond!r}")

    return tree_of(cond, leaf)


def read_back(compiled: CompiledRequest) -> Any:
    """Parse a compiled condition with DynamoDB's precedence: comparisons, BETWEEN
    and IN, then functions, then NOT, then AND, then OR."""
    assert compiled.condition is not None
    stream = Tokens(TOKEN.findall(compiled.condition))
    peek, take = stream.peek, stream.take

    def path() -> tuple[str | int, ...]:
        steps: list[str | int] = [compiled.names[take()]]
        while peek() == "." or (peek() or "").startswith("["):
            token = take()
            steps.append(compiled.names[take()] if token == "." else int(token[1:-1]))
        return tuple(steps)

    def value() -> str:
        return repr(compiled.values[take()])

    def operand() -> Any:
        if peek() == "size":
            take("size")
            take("(")
            inner = path()
            take(")")
            return ("size", inner)
        return path()

    def primary() -> Any:
        token = peek()
        if token in ("attribute_exists", "attribute_not_exists"):
            take()
            take("(")
            found = path()
            take(")")
            return ("exists", found, token == "attribute_exists")
        if token in ("begins_with", "contains", "attribute_type"):
            take()
            take("(")
            found = path()
            take(",")
            argument = value()
            take(")")
            return (token, found, argument)
        subject = operand()
        word = take()
        if word == "BETWEEN":
            low = value()
            take("AND")
            return ("between", subject, low, value())
        if word == "IN":
            take("(")
            members = [value()]
            while peek() == ",":
                take(",")
                members.append(value())
            take(")")
            return ("in", subject, tuple(members))
        return ("cmp", subject, word, value())

    return read_condition(compiled.condition, stream, primary)


@settings(deadline=None, max_examples=300)
@given(condition=conditions)
def test_the_compiled_condition_reads_back_as_the_same_tree(condition: Condition) -> None:
    assert read_back(compile_request(condition=condition)) == tree_shape(condition)
