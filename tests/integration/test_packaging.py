"""`python -m build` makes an sdist and a wheel, and the wheel works installed in a clean venv."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]

pytestmark = pytest.mark.slow

# Run by the clean venv's interpreter: where idemstore came from, and one real idempotent call.
SMOKE_TEST = """
import asyncio, json, pathlib
import idemstore
from idemstore import InMemoryStore, idempotent_function

calls = []

@idempotent_function(data_keyword_argument="n", persistence_store=InMemoryStore())
async def double(n: int) -> int:
    calls.append(n)
    return 2 * n

async def twice():
    return [await double(n=21), await double(n=21)]

package = pathlib.Path(idemstore.__file__).parent
print(json.dumps({
    "file": idemstore.__file__,
    "py_typed": (package / "py.typed").is_file(),
    "all": idemstore.__all__,
    "results": asyncio.run(twice()),
    "calls": calls,
}))
"""


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(path.name for path in out.iterdir())
    assert built == [f"idemstore-{VERSION}-py3-none-any.whl", f"idemstore-{VERSION}.tar.gz"]
    return Dist(sdist=out / built[1], wheel=out / built[0])


def test_the_wheel_ships_every_module_and_py_typed(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "idemstore").rglob("*.py")}
    packaged = {name for name in names if name.startswith("idemstore/")}
    assert packaged == sources | {"idemstore/py.typed"}
    assert not any(name.startswith(("tests/", "examples/")) for name in names)


def test_the_wheel_metadata_is_complete(dist: Dist) -> None:
    info = f"idemstore-{VERSION}.dist-info"
    with zipfile.ZipFile(dist.wheel) as wheel:
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        licenses = [name for name in wheel.namelist() if name.startswith(f"{info}/licenses/")]

    assert metadata["Name"] == "idemstore"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert licenses == [f"{info}/licenses/LICENSE"]
    assert metadata["Requires-Python"] == PROJECT["requires-python"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == (ROOT / "README.md").read_text().strip()
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    urls = {url.split(",")[0] for url in metadata.get_all("Project-URL", [])}
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= urls
    assert "[pytest11]\nidemstore = idemstore.testing" in entry_points
    assert "[console_scripts]\nidemstore = idemstore.cli:main" in entry_points


def test_the_sdist_holds_sources_docs_tests_and_examples(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "noxfile.py",
        "idemstore/__init__.py",
        "idemstore/py.typed",
        "examples/quickstart.py",
        "tests/unit/test_public_api.py",
    }
    assert expected <= names


def test_the_wheel_installs_and_runs_in_a_clean_venv(dist: Dist, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The running pip installs into the new venv: no pip inside it, no index, no dependencies.
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run(*pip, "install", "--no-deps", "--no-index", "--quiet", str(dist.wheel))
    site_packages = _site_packages(python)
    # Dependencies come from this test environment, appended after the venv's own
    # site-packages, so idemstore itself can only come from the wheel.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site_packages / "test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")

    smoke = _run(python, "-c", SMOKE_TEST, cwd=tmp_path)
    cli = _run(env_dir / "bin" / "idemstore", "--help", cwd=tmp_path)

    report = json.loads(smoke)
    assert Path(report["file"]).resolve().is_relative_to(site_packages.resolve())
    assert report["py_typed"] is True
    assert report["all"] == __import__("idemstore").__all__
    assert report["results"] == [42, 42]
    assert report["calls"] == [21]
    assert "create-table" in cli


def _site_packages(python: Path) -> Path:
    found = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    return Path(found.strip())


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
