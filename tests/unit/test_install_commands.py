"""The install commands: the plugin's extra, the project's test group, CI = README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(requirement).name for requirement in requirements}


def test_the_pytest_extra_holds_only_what_the_fixtures_need() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]

    assert _names(extras["pytest"]) == {"pytest", "pytest-asyncio", "moto", "boto3"}
    assert Requirement(next(r for r in extras["pytest"] if r.startswith("moto"))).extras == {
        "server",
        "dynamodb",
    }
    assert "test" not in extras
    assert "dev" not in extras


def test_the_test_group_holds_the_extras_the_suite_uses_and_the_tools() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    group = PYPROJECT["dependency-groups"]["test"]

    for extra in ("pytest", "fastapi", "aiohttp", "otel"):
        assert set(extras[extra]) <= set(group), extra
    assert "idemstore" not in _names(group)  # a self-reference needs a recent pip
    assert {"mypy", "ruff", "nox", "build", "hypothesis"} <= _names(group)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Run the tests.*?```bash\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    readme_commands = [line for line in block.group(1).splitlines() if line.strip()]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci_commands = [line for line in ci_lines if line.strip() and not line.startswith("#")]

    assert readme_commands
    assert ci_commands[-len(readme_commands) :] == readme_commands
