"""Text that would break a naively built expression: syntax, placeholders, paths, non-ASCII.

Names and values drawn from it must reach the server as data, never as expression text.
"""

HOSTILE_TEXT = [
    ") OR attribute_exists(x",
    "a) OR (b",
    "#n0",
    ":v0",
    "#",
    ":",
    "'",
    '"',
    "a b",
    " ",
    "\n",
    "AND",
    "NOT",
    "SET x = y",
    "a.b",
    "a[0]",
    "naïve ☃",
    "\U0001f600",
    "<>",
    "]",
    "[",
    ".",
    "size(x)",
    "a, b",
]
