"""Reading a compiled condition back: the boolean layer both expression proofs share.

DynamoDB's precedence is NOT, then AND, then OR; parentheses group. Each proof
supplies the reader of its own operands (comparisons, functions); runs of the
same connective come back flattened, as ``("and" | "or", [parts])``.
"""

from collections.abc import Callable
from typing import Any

from idemstore.expressions import And, Condition, Not, Or


def flattened(kind: str, parts: list[Any]) -> tuple[str, list[Any]]:
    """``(kind, parts)`` with the parts of any part of the same kind spliced in: AND and OR
    are associative, so a tree and its reading compare alike however they nest."""
    flat: list[Any] = []
    for part in parts:
        flat.extend(part[1] if part[0] == kind else [part])
    return (kind, flat)


def tree_of(cond: Condition, leaf: Callable[[Condition], Any]) -> Any:
    """A comparable form of a condition tree, in the shape its reading takes: ``leaf`` for
    comparisons and functions, NOT kept, AND/OR chains flattened."""
    if isinstance(cond, Not):
        return ("not", tree_of(cond.inner, leaf))
    if isinstance(cond, And | Or):
        kind = "and" if isinstance(cond, And) else "or"
        return flattened(kind, [tree_of(cond.left, leaf), tree_of(cond.right, leaf)])
    return leaf(cond)


class Tokens:
    """A condition's tokens, consumed from the front."""

    def __init__(self, stream: list[str]) -> None:
        self.stream = stream
        self.position = 0

    def peek(self) -> str | None:
        return self.stream[self.position] if self.position < len(self.stream) else None

    def take(self, expected: str | None = None) -> str:
        token = self.stream[self.position]
        self.position += 1
        assert expected is None or token == expected, (token, expected)
        return token


def read_condition(text: str, tokens: Tokens, primary: Callable[[], Any]) -> Any:
    """The whole condition ``text`` as a tree; ``primary`` reads one operand from ``tokens``."""

    def chain(kind: str, word: str, operand: Callable[[], Any]) -> Any:
        parts = [operand()]
        while tokens.peek() == word:
            tokens.take(word)
            parts.append(operand())
        return parts[0] if len(parts) == 1 else flattened(kind, parts)

    def disjunction() -> Any:
        return chain("or", "OR", conjunction)

    def conjunction() -> Any:
        return chain("and", "AND", negation)

    def negation() -> Any:
        if tokens.peek() == "NOT":
            tokens.take("NOT")
            return ("not", negation())
        if tokens.peek() == "(":
            tokens.take("(")
            inner = disjunction()
            tokens.take(")")
            return inner
        return primary()

    result = disjunction()
    assert tokens.peek() is None, f"trailing tokens in {text!r}"
    return result
