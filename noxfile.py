"""Developer sessions. Python versions and dependency groups come from pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

PYPROJECT = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())
PYTHONS = [
    c.rsplit(" :: ", 1)[-1]
    for c in PYPROJECT["project"]["classifiers"]
    if c.startswith("Programming Language :: Python :: 3.")
]
LINT_TARGETS = ["idemstore", "tests", "examples", "benchmarks", "noxfile.py"]
# The project's own test and dev tools: the `test` dependency group.
TEST_GROUP = nox.project.dependency_groups(PYPROJECT, "test")

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (the README's test command)."""
    session.install("-e", ".", *TEST_GROUP)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("-e", ".", *TEST_GROUP)
    session.run("ruff", "check", *LINT_TARGETS)
    session.run("ruff", "format", "--check", *LINT_TARGETS)


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, tests, examples and this file."""
    session.install("-e", ".", *TEST_GROUP)
    session.run("mypy", *LINT_TARGETS)


@nox.session(python=PYTHONS[0])
def examples(session: nox.Session) -> None:
    """Run every example against a local server, and the example pytest suite."""
    session.install("-e", ".", *TEST_GROUP)
    session.run("pytest", "tests/integration/test_examples.py", "examples/pytest_fixtures")


@nox.session(python=PYTHONS[0])
def build(session: nox.Session) -> None:
    """Build the sdist and wheel into dist/."""
    session.install("build")
    session.run("python", "-m", "build", "--outdir", "dist")


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """The benchmark harness, not part of the test suite; arguments go to it (e.g. --quick)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
