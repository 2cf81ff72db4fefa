"""The pytest plugin never breaks a user's tools.

- Installed from the wheel next to plain pytest, without pytest-asyncio or moto,
  the plugin loads and stays inert; a test that uses a fixture needing them fails
  naming the extra to install.
- Under Python's development mode, where aiohttp parses responses strictly, the
  fixtures work: the local server sends one ``Server`` header.
- ``dynamo_endpoint`` sends stores built without ``endpoint_url`` to the local
  server for one test, refuses a store that talks elsewhere, and undoes it all.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from processes import run_captured

from idemstore import AsyncDynamoStore, IdempotencyConfigurationError
from idemstore.stores.dynamo import StoreState
from idemstore.testing import LoopbackTables, MotoEndpoint

ROOT = Path(__file__).resolve().parents[2]
EXTRA = 'pip install "idemstore[pytest]"'

PYTEST_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
"""

PLAIN_TESTS = """\
def test_plain() -> None:
    assert 1 + 1 == 2


def test_memory_store(memory_store) -> None:
    assert memory_store.items() == {}
"""

# Without pytest-asyncio its options would be unknown, and refused.
BARE_INI = """\
[pytest]
filterwarnings = error
"""

FIXTURE_TESTS = """\
def test_dynamo_store(dynamo_store) -> None:
    pass


def test_dynamo_endpoint(dynamo_endpoint) -> None:
    pass


def test_moto_server(moto_server) -> None:
    pass
"""

# Run under `python -X dev`: both kinds of store make real requests.
DEV_MODE_TESTS = """\
import os

import pytest

from idemstore import AsyncDynamoStore, InMemoryStore, idempotent_function
from idemstore.testing import RequestLog

MODULE_STORE = AsyncDynamoStore("module-level")


async def twice(store):
    calls = []

    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def double(n: int) -> int:
        calls.append(n)
        return 2 * n

    return [await double(n=21), await double(n=21)], calls


@pytest.mark.asyncio
async def test_dynamo_store(dynamo_store) -> None:
    log = RequestLog().attach(await dynamo_store.client())
    assert await twice(dynamo_store) == ([42, 42], [21])
    assert log.operations == ["PutItem", "UpdateItem", "PutItem"]


@pytest.mark.asyncio
async def test_dynamo_endpoint(dynamo_endpoint) -> None:
    assert "AWS_SESSION_TOKEN" not in os.environ
    await dynamo_endpoint.create_table(MODULE_STORE)
    assert await twice(MODULE_STORE) == ([42, 42], [21])


def test_the_environment_is_restored() -> None:
    assert os.environ["AWS_SESSION_TOKEN"] == "a-real-one"
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ
"""


def _run_pytest(
    python: Path | str, project: Path, *args: str, env: dict[str, str], flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run_captured(
        [str(python), *flags, "-m", "pytest", "-p", "no:cacheprovider", "-rN", *args],
        cwd=project,
        env=env,
        timeout=180,
    )


def _clean_environment(**extra: str) -> dict[str, str]:
    """The environment without anything that would change which Python code runs."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "PYTEST", "VIRTUAL_ENV"))
    }
    return {**kept, **extra}


# --- without the optional dependencies --------------------------------------


@dataclass(frozen=True)
class BareInstall:
    """The wheel in a fresh venv; dependencies come from a filtered copy of ours."""

    python: Path
    project: Path
    tmp: Path

    def dependencies_without(self, *distributions: str) -> Path:
        """A directory with this environment's packages, less these distributions and idemstore.

        Links, not copies: cheap. Entry points are read from the ``.dist-info``
        directories found on ``sys.path``, so a distribution left out is as
        absent to pytest's plugin loading as if it had never been installed.
        """
        left_out = {name.replace("-", "_").lower() for name in (*distributions, "idemstore")}
        target = self.tmp / ("deps-without-" + "-".join(sorted(left_out)))
        if target.exists():
            return target
        target.mkdir()
        site_dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        for site_dir in sorted(site_dirs):
            for entry in Path(site_dir).iterdir():
                name = entry.name.split("-", 1)[0].split(".", 1)[0].lower()
                if name in left_out or "idemstore" in entry.name or entry.suffix == ".pth":
                    continue
                link = target / entry.name
                if not link.exists():
                    link.symlink_to(entry)
        return target

    def pytest(self, *args: str, without: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        deps = self.dependencies_without(*without)
        return _run_pytest(
            self.python, self.project, *args, env=_clean_environment(PYTHONPATH=str(deps))
        )


@pytest.fixture(scope="module")
def bare_install(tmp_path_factory: pytest.TempPathFactory) -> BareInstall:
    tmp = tmp_path_factory.mktemp("bare")
    wheels = tmp / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), ROOT],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("idemstore-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", wheel],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    project = tmp / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(BARE_INI)
    (project / "test_plain.py").write_text(PLAIN_TESTS)
    (project / "test_fixtures.py").write_text(FIXTURE_TESTS)
    return BareInstall(python=python, project=project, tmp=tmp)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tests", "exit_code", "expected"),
    [
        pytest.param("test_plain.py", 0, ["2 passed"], id="the-plugin-loads-and-stays-inert"),
        pytest.param(
            "test_fixtures.py",
            1,
            [
                "3 errors",
                f"the dynamo_store fixture needs pytest-asyncio: {EXTRA}",
                f"the dynamo_endpoint fixture needs pytest-asyncio: {EXTRA}",
                "the moto_server fixture: the local DynamoDB-protocol server needs",
                "(moto is missing)",
            ],
            id="the-fixtures-fail-naming-the-extra",
        ),
    ],
)
def test_without_pytest_asyncio_and_moto(
    bare_install: BareInstall, tests: str, exit_code: int, expected: list[str]
) -> None:
    result = bare_install.pytest(tests, without=("pytest-asyncio", "moto"))

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert [text for text in expected if text not in result.stdout] == []
    assert "Traceback" not in result.stdout


@pytest.mark.slow
def test_without_moto_the_server_fixtures_fail_naming_the_extra(
    bare_install: BareInstall,
) -> None:
    result = bare_install.pytest(
        "test_fixtures.py", "-o", "asyncio_default_fixture_loop_scope=function", without=("moto",)
    )

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "3 errors" in out
    assert out.count(f"(moto is missing): {EXTRA}") == 3
    assert "needs pytest-asyncio" not in out


# --- development mode -------------------------------------------------------


def test_the_local_server_sends_one_server_header(moto_server: MotoEndpoint) -> None:
    address = urlsplit(moto_server.url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/",
            body="{}",
            headers={
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": (
                    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/dynamodb/"
                    "aws4_request, SignedHeaders=host, Signature=0"
                ),
            },
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 200
    assert len(response.msg.get_all("Server") or []) == 1


@pytest.mark.slow
def test_the_fixtures_work_under_python_development_mode(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(PYTEST_INI)
    (tmp_path / "test_dev_mode.py").write_text(DEV_MODE_TESTS)

    result = _run_pytest(
        sys.executable,
        tmp_path,
        "test_dev_mode.py",
        flags=("-X", "dev"),
        env=_clean_environment(AWS_SESSION_TOKEN="a-real-one"),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


# --- dynamo_endpoint ----------------------------------------------------------


@pytest.fixture
def elsewhere() -> AsyncDynamoStore:
    return AsyncDynamoStore("elsewhere", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")


@pytest.mark.asyncio
async def test_dynamo_endpoint_points_default_stores_at_the_local_server(
    dynamo_endpoint: LoopbackTables, moto_server: MotoEndpoint
) -> None:
    store = AsyncDynamoStore("pointed")

    assert await dynamo_endpoint.create_table(store) is store
    client = await store.client()
    # Described, not listed: the session's server holds more tables than one page lists.
    table = await client.describe_table(TableName="pointed")

    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == moto_server.url
    assert client.meta.endpoint_url == moto_server.url
    assert client.meta.region_name == moto_server.region_name
    assert table["Table"]["TableName"] == "pointed"


@pytest.mark.asyncio
async def test_dynamo_endpoint_refuses_a_store_that_talks_elsewhere(
    dynamo_endpoint: LoopbackTables, elsewhere: AsyncDynamoStore
) -> None:
    with pytest.raises(IdempotencyConfigurationError, match="not the local server"):
        await dynamo_endpoint.create_table(elsewhere)


@pytest.mark.asyncio
async def test_loopback_tables_delete_their_tables_and_close_the_stores(
    moto_server: MotoEndpoint,
) -> None:
    tables = LoopbackTables(moto_server)
    store = moto_server.store("loopback-tables")
    admin = moto_server.store("unused")
    try:
        await tables.create_table(store)
        await tables.create_table(store)  # twice: one table, one store to close
        first_client = await store.client()

        await tables.aclose()

        client = await admin.client()
        # Described, not listed: the session's server holds more tables than one page lists.
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            await client.describe_table(TableName="loopback-tables")
        # The store stays usable (a module-level store serves the next test), with a
        # client of its own made afresh.
        assert store.state is StoreState.OPEN
        assert await store.client() is not first_client
    finally:
        await store.aclose()
        await admin.aclose()
