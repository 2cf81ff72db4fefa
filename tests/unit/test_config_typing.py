"""Configuration is type-checked: a misspelt or mistyped option fails in mypy, with and
without the pydantic plugin, and at run time with ``IdempotencyConfigurationError``.

``IdempotencyConfig`` is a dataclass, whose signature type checkers read from its fields;
``HttpIdempotencyConfig`` is a pydantic model with a checked ``__init__`` written out."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from idemstore import IdempotencyConfig, IdempotencyConfigurationError
from idemstore.integrations._http import HttpIdempotencyConfig

GOOD = """\
from idemstore import IdempotencyConfig
from idemstore.integrations._http import HttpIdempotencyConfig

config = IdempotencyConfig(
    event_key_jmespath="order_id",
    expires_after_seconds=5,
    in_progress_lease_seconds=2,
    response_hook=lambda response, record: response,
    clock=lambda: 0.0,
)
http = HttpIdempotencyConfig(
    methods=["post", "put"],
    stored_statuses=[200, range(500, 600)],
    header_denylist={"set-cookie", "x-secret"},
    idempotency_config=config,
)
"""

# Each line holds one mistake; the test expects one mypy error on each line.
BAD = """\
from idemstore import IdempotencyConfig
from idemstore.integrations._http import HttpIdempotencyConfig

IdempotencyConfig(expire_after_seconds=5)
IdempotencyConfig(expires_after_seconds="soon")
IdempotencyConfig(use_local_cache=True, local_cache_max_item=10)
IdempotencyConfig("order_id")
IdempotencyConfig(clock=12.0)
HttpIdempotencyConfig(require_keys=True)
HttpIdempotencyConfig(max_capture_bytes="1MB")
HttpIdempotencyConfig(idempotency_config={"expires_after_seconds": 5})
"""

BAD_LINES = list(range(4, 12))


def _mypy_errors(tmp_path: Path, plugins: str) -> dict[str, set[int]]:
    """Lines with an error, per snippet file, from ``mypy --strict`` run outside the project
    (so the project's own configuration is not read)."""
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\n{plugins}")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "good.py",
            "bad.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert completed.returncode in (0, 1), completed.stderr + completed.stdout
    errors: dict[str, set[int]] = {"good.py": set(), "bad.py": set()}
    for line in completed.stdout.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].strip() == "error":
            errors.setdefault(parts[0], set()).add(int(parts[1]))
    assert set(errors) == {"good.py", "bad.py"}, completed.stdout
    return errors


@pytest.mark.slow
@pytest.mark.parametrize(
    "plugins",
    [pytest.param("", id="no-plugin"), pytest.param("plugins = pydantic.mypy\n", id="plugin")],
)
def test_mypy_reports_every_mistaken_option(tmp_path: Path, plugins: str) -> None:
    errors = _mypy_errors(tmp_path, plugins)
    assert errors["good.py"] == set()
    assert errors["bad.py"] == set(BAD_LINES)


@pytest.mark.parametrize(
    ("config_class", "options"),
    [
        (IdempotencyConfig, {"expire_after_seconds": 5}),
        (IdempotencyConfig, {"expires_after_seconds": "soon"}),
        (IdempotencyConfig, {"clock": 12.0}),
        (HttpIdempotencyConfig, {"require_keys": True}),
        (HttpIdempotencyConfig, {"max_capture_bytes": "1MB"}),
    ],
)
def test_mistaken_options_are_configuration_errors_at_run_time(
    config_class: type[Any], options: dict[str, Any]
) -> None:
    with pytest.raises(IdempotencyConfigurationError, match=next(iter(options))):
        config_class(**options)


def test_positional_options_are_configuration_errors_at_run_time() -> None:
    positional: Any = IdempotencyConfig  # the type checker rejects this call, as tested above
    with pytest.raises(TypeError):
        positional("order_id")


def test_the_dataclass_signature_is_keyword_only_with_every_option() -> None:
    options = [f for f in dataclasses.fields(IdempotencyConfig) if f.init]
    parameters = list(inspect.signature(IdempotencyConfig).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in options]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    assert [p.default for p in parameters] == [f.default for f in options]
    assert all(not f.name.startswith("_") for f in options)


@pytest.mark.parametrize("config_class", [HttpIdempotencyConfig])
def test_the_checked_signature_lists_every_field_with_its_default(
    config_class: type[BaseModel],
) -> None:
    """The ``__init__`` type checkers read (under ``if TYPE_CHECKING:``) matches the fields."""
    module = sys.modules[config_class.__module__]
    tree = ast.parse(textwrap.dedent(inspect.getsource(config_class)))
    (checked_init,) = [
        node
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and ast.unparse(branch.test) == "TYPE_CHECKING"
        for node in branch.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    ]
    arguments = checked_init.args
    assert [argument.arg for argument in arguments.args] == ["self"]
    assert arguments.vararg is None
    assert arguments.kwarg is None
    names = [argument.arg for argument in arguments.kwonlyargs]
    assert names == list(config_class.model_fields)
    for name, default in zip(names, arguments.kw_defaults, strict=True):
        field = config_class.model_fields[name]
        assert default is not None, f"{name} has no default"
        value = eval(ast.unparse(default), vars(module))  # the module's own source text
        if field.default_factory is not None:
            assert value is Ellipsis, name
        else:
            assert value == field.default, name
