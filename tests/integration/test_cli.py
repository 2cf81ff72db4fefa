"""The ``idemstore`` command line, run as a subprocess against the local DynamoDB server.

Subprocess runs show what a user sees (output, exit code, no traceback); the
pure parsing and formatting functions and the less common paths run in process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import NoCredentialsError, NoRegionError

from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyConfigurationError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    RecordStatus,
    cli,
    create_table,
)
from idemstore.codec import to_item
from idemstore.testing import DUMMY_ACCESS_KEY, DUMMY_REGION, DUMMY_SECRET_KEY, MotoEndpoint

# --- helpers ------------------------------------------------------------------


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idemstore", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def plant(endpoint: MotoEndpoint, table: str, record: DataRecord) -> None:
    async def put() -> None:
        async with endpoint.store(table) as store:
            await store.put_record(record, now=time.time())

    asyncio.run(put())


def fetch(endpoint: MotoEndpoint, table: str, key: str) -> DataRecord | None:
    async def get() -> DataRecord | None:
        async with endpoint.store(table) as store:
            try:
                return await store.get_record(key)
            except IdempotencyItemNotFoundError:
                return None

    return asyncio.run(get())


def in_progress(key: str, now: float, *, owner_token: str | None = "owner-1") -> DataRecord:
    return DataRecord(
        idempotency_key=key,
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=int(now) + 3 * 3600 + 1800,
        in_progress_expiry_timestamp=int(now * 1000) + 630_000,
        owner_token=owner_token,
    )


def completed(key: str, now: float, *, result: str = '{"order": 42}') -> DataRecord:
    return DataRecord(
        idempotency_key=key,
        status=RecordStatus.COMPLETED,
        expiry_timestamp=int(now) + 3 * 3600 + 1800,
        response_data=result,
        payload_hash="5d41402abc4b2a76b9719d911017c592",
        owner_token="owner-2",
    )


def unique_key() -> str:
    return f"test-func.orders.handler#{uuid.uuid4().hex}"


def powertools_key(
    payload: Any,
    *,
    function_name: str,
    module: str,
    qualname: str,
    jmespath: str = "",
    hash_function: str = "md5",
) -> str:
    """The key the Powertools persistence layer computes for this function and payload.

    Powertools reads the function name from the environment, so the caller sets it.
    """
    import botocore.session
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
    )

    assert os.environ["AWS_LAMBDA_FUNCTION_NAME"] == function_name
    # A botocore client is what a boto3 client is; creating one does no I/O.
    client = botocore.session.get_session().create_client(
        "dynamodb",
        region_name=DUMMY_REGION,
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
    )
    layer = DynamoDBPersistenceLayer(table_name="unused", boto3_client=client)
    config = IdempotencyConfig(event_key_jmespath=jmespath, hash_function=hash_function)
    layer.configure(config, function_name=f"{module}.{qualname}")
    key = layer._get_hashed_idempotency_key(payload)
    assert isinstance(key, str)
    return key


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A clean environment: dummy credentials, an empty HOME, no AWS configuration."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path_factory.mktemp("home")),
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        # No instance metadata service on loopback; skip probing for it.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def table(moto_server: MotoEndpoint) -> str:
    name = f"cli-{uuid.uuid4().hex[:12]}"

    async def make() -> None:
        async with moto_server.store(name) as store:
            await create_table(store)

    asyncio.run(make())
    return name


@pytest.fixture
def where(moto_server: MotoEndpoint) -> list[str]:
    return ["--endpoint-url", moto_server.url, "--region", moto_server.region_name]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process's environment as the subprocesses get it, for in-process runs."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == cli.ENDPOINT_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- create-table ---------------------------------------------------------------


def test_create_table_is_idempotent_and_sets_ttl(
    moto_server: MotoEndpoint, cli_env: dict[str, str], where: list[str]
) -> None:
    name = f"cli-create-{uuid.uuid4().hex[:8]}"
    first = run_cli("create-table", name, "--expiry-attr", "expires_at", *where, env=cli_env)
    second = run_cli("create-table", name, *where, env=cli_env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created: table {name!r}"
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"already exists: table {name!r}"

    async def describe() -> tuple[Any, Any]:
        async with moto_server.store(name) as store:
            client = await store.client()
            table = await client.describe_table(TableName=name)
            ttl = await client.describe_time_to_live(TableName=name)
            return table["Table"], ttl["TimeToLiveDescription"]

    described, ttl = asyncio.run(describe())
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


# --- key ------------------------------------------------------------------------


def test_key_subprocess_equals_powertools_key(
    cli_env: dict[str, str], aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {"body": json.dumps({"order_id": 1234, "items": ["a", "b"]}), "headers": {}}
    expression = "powertools_json(body).[order_id, items]"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-fn")
    expected = powertools_key(
        event, function_name="orders-fn", module="app.orders", qualname="handler",
        jmespath=expression,
    )  # fmt: skip

    result = run_cli(
        "key", "--module", "app.orders", "--qualname", "handler", "--payload", json.dumps(event),
        "--jmespath", expression,
        env={**cli_env, "AWS_LAMBDA_FUNCTION_NAME": "orders-fn"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert expected.startswith("orders-fn.app.orders.handler#")


@pytest.mark.parametrize(
    ("payload", "jmespath", "hash_function", "environ_name", "flag_name"),
    [
        ({"user": "u-1", "amount": 10.5}, "", "md5", None, None),
        ({"user": "u-1", "amount": 10.5}, "user", "sha256", "env-fn", None),
        ({"a": [1, 2, {"b": None}], "c": "é"}, "", "md5", "env-fn", "flag-fn"),
        ([3, 2, 1], "[0]", "sha1", None, "flag-fn"),
        ({"n": 0}, "n", "md5", None, None),
    ],
)
def test_key_equals_powertools_key(
    payload: Any,
    jmespath: str,
    hash_function: str,
    environ_name: str | None,
    flag_name: str | None,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The function name: --function-name, else the environment, else test-func.
    effective = flag_name or environ_name or "test-func"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", effective)
    expected = powertools_key(
        payload, function_name=effective, module="svc.mod", qualname="Cls.method",
        jmespath=jmespath, hash_function=hash_function,
    )  # fmt: skip
    argv = ["key", "--module", "svc.mod", "--qualname", "Cls.method"]
    argv += ["--payload", json.dumps(payload), "--hash", hash_function]
    argv += ["--jmespath", jmespath] if jmespath else []
    argv += ["--function-name", flag_name] if flag_name else []
    environ = {"AWS_LAMBDA_FUNCTION_NAME": environ_name} if environ_name else {}

    assert cli.main(argv, environ) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_key_with_custom_prefix_ignores_function_identity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["key", "--key-prefix", "orders", "--payload", '{"id": 7}', "--jmespath", "id"]
    assert cli.main(argv, {"AWS_LAMBDA_FUNCTION_NAME": "ignored"}) == 0
    # md5 of the canonical JSON of 7, i.e. of the text "7".
    assert capsys.readouterr().out == "orders#8f14e45fceea167a5a36dedd4bea2543\n"


@pytest.mark.parametrize(
    ("payload", "jmespath", "code", "needle"),
    [
        ("{}", "", 1, "no idempotency key data in the payload (empty)"),
        ('{"a": null}', "a", 1, "JMESPath 'a' selected null"),
        ("[1,", "", 2, "--payload is not valid JSON"),
        ("{}", "a[", 2, "bad JMESPath expression 'a['"),
        ('{"b": "x"}', "nope(b)", 2, "failed on the payload"),
        ('{"b": "{x"}', "powertools_json(b)", 2, "failed on the payload"),
        ('{"b": "/w=="}', "powertools_base64(b)", 2, "failed on the payload"),
        ('{"b": "eA=="}', "powertools_base64_gzip(b)", 2, "failed on the payload"),
    ],
)
def test_key_errors_are_one_line(
    payload: str, jmespath: str, code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["key", "--key-prefix", "p", "--payload", payload, "--jmespath", jmespath]
    assert cli.main(argv, {}) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("idemstore key: error: ")
    assert needle in captured.err


# --- inspect --------------------------------------------------------------------


def test_inspect_in_progress_record(
    moto_server: MotoEndpoint, table: str, cli_env: dict[str, str], where: list[str]
) -> None:
    key, now = unique_key(), time.time()
    record = in_progress(key, now)
    assert record.in_progress_expiry_timestamp is not None
    plant(moto_server, table, record)

    result = run_cli("inspect", key, "--table", table, *where, env=cli_env)

    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert {k: v.strip() for k, v in fields.items()} == {
        "key": key,
        "status": "INPROGRESS",
        "expiry": f"{cli.iso_utc(record.expiry_timestamp)} (in 3h)",
        "in-progress expiry": (
            f"{cli.iso_utc(record.in_progress_expiry_timestamp / 1000, milliseconds=True)} (in 10m)"
        ),
        "lock available": "no",
        "payload hash": "-",
        "owner token": "owner-1",
        "result size": "-",
    }


def test_inspect_completed_record_as_json(
    moto_server: MotoEndpoint, table: str, cli_env: dict[str, str], where: list[str]
) -> None:
    key, now = unique_key(), time.time()
    result_text = json.dumps({"order": 42, "note": "déjà"}, ensure_ascii=False)
    record = completed(key, now, result=result_text)
    plant(moto_server, table, record)

    result = run_cli("inspect", key, "--table", table, "--json", *where, env=cli_env)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown == {
        "key": key,
        "status": "COMPLETED",
        "stored_status": "COMPLETED",
        "expiry_timestamp": record.expiry_timestamp,
        "expiry": cli.iso_utc(record.expiry_timestamp),
        "expiry_relative": "in 3h",
        "in_progress_expiry_timestamp": None,
        "in_progress_expiry": None,
        "in_progress_expiry_relative": None,
        "lock_available": False,
        "payload_hash": "5d41402abc4b2a76b9719d911017c592",
        "owner_token": "owner-2",
        "result_size_bytes": len(result_text.encode()),
    }
    assert shown["result_size_bytes"] > len(result_text)  # bytes, not characters


def test_inspect_in_sort_key_mode(
    moto_server: MotoEndpoint, aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-sk-{uuid.uuid4().hex[:8]}"
    argv = ["--endpoint-url", moto_server.url, "--region", moto_server.region_name]
    assert cli.main(["create-table", name, "--key-attr", "pk", "--sort-key", "sk", *argv]) == 0
    key, now = unique_key(), time.time()

    async def put() -> None:
        async with moto_server.store(
            name, key_attr="pk", sort_key_attr="sk", static_pk_value="idempotency#orders-fn"
        ) as store:
            await store.put_record(in_progress(key, now), now=now)

    asyncio.run(put())
    capsys.readouterr()
    layout = ["--key-attr", "pk", "--sort-key", "sk", "--static-pk-value", "idempotency#orders-fn"]

    assert cli.main(["inspect", key, "--table", name, "--json", *layout, *argv]) == 0
    assert json.loads(capsys.readouterr().out)["owner_token"] == "owner-1"
    # Under another partition value the record is not there.
    other = ["--key-attr", "pk", "--sort-key", "sk", "--static-pk-value", "idempotency#x"]
    assert cli.main(["inspect", key, "--table", name, *other, *argv]) == 1
    assert "no record for key" in capsys.readouterr().err


# --- release --------------------------------------------------------------------


def test_release_in_progress_record(
    moto_server: MotoEndpoint, table: str, cli_env: dict[str, str], where: list[str]
) -> None:
    key = unique_key()
    plant(moto_server, table, in_progress(key, time.time()))

    result = run_cli("release", key, "--table", table, *where, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"released INPROGRESS record {key!r} (fenced on owner token 'owner-1')"
    )
    assert fetch(moto_server, table, key) is None


def test_release_completed_record_needs_force(
    moto_server: MotoEndpoint, table: str, cli_env: dict[str, str], where: list[str]
) -> None:
    key = unique_key()
    record = completed(key, time.time())
    plant(moto_server, table, record)

    refused = run_cli("release", key, "--table", table, *where, env=cli_env)

    assert_one_line_error(refused, 1, "COMPLETED", "--force")
    assert fetch(moto_server, table, key) == record

    forced = run_cli("release", key, "--table", table, "--force", *where, env=cli_env)

    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == (
        f"deleted COMPLETED record {key!r} (fenced on owner token 'owner-2')"
    )
    assert fetch(moto_server, table, key) is None


def test_release_record_without_owner_token_needs_force(
    moto_server: MotoEndpoint, table: str, aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # A lock written by Powertools carries no owner token, so no fence is possible.
    key = unique_key()
    record = in_progress(key, time.time(), owner_token=None)
    plant(moto_server, table, record)
    argv = ["release", key, "--table", table, "--endpoint-url", moto_server.url]
    argv += ["--region", moto_server.region_name]

    assert cli.main(argv) == 1
    assert "no owner token" in capsys.readouterr().err
    assert fetch(moto_server, table, key) == record

    assert cli.main([*argv, "--force"]) == 0
    assert "unconditionally" in capsys.readouterr().out
    assert fetch(moto_server, table, key) is None


def test_release_does_not_delete_a_record_taken_over_meanwhile(
    moto_server: MotoEndpoint,
    table: str,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another caller takes the lock over between the command's read and its delete.
    key, now = unique_key(), time.time()
    plant(moto_server, table, in_progress(key, now))
    successor = in_progress(key, now, owner_token="owner-successor")
    read = AsyncDynamoStore.get_record

    async def read_then_lose_the_race(store: AsyncDynamoStore, wanted: str) -> DataRecord:
        record = await read(store, wanted)
        async with moto_server.store(table) as other:
            client = await other.client()
            await client.put_item(TableName=table, Item=to_item(other.schema, successor))
        return record

    monkeypatch.setattr(AsyncDynamoStore, "get_record", read_then_lose_the_race)
    argv = ["release", key, "--table", table, "--endpoint-url", moto_server.url]

    assert cli.main([*argv, "--region", moto_server.region_name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "held by another caller" in err
    assert fetch(moto_server, table, key) == successor


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("missing table", 1, "table 'no-such-table' not found"),
        ("missing record", 1, "no record for key 'absent#key'"),
        ("bad JSON", 2, "--payload is not valid JSON"),
        ("bad arguments", 2, "the following arguments are required: --table"),
        ("no credentials", 1, "no AWS credentials"),
    ],
)
def test_errors_are_one_line_without_traceback(
    case: str,
    code: int,
    needle: str,
    table: str,
    cli_env: dict[str, str],
    where: list[str],
    tmp_path: Path,
) -> None:
    env = cli_env
    args = {
        "missing table": ["inspect", "k", "--table", "no-such-table", *where],
        "missing record": ["inspect", "absent#key", "--table", table, *where],
        "bad JSON": ["key", "--payload", "{'single': 1}", "--key-prefix", "p"],
        "bad arguments": ["release", "k", *where],
        "no credentials": ["inspect", "k", "--table", table, *where],
    }[case]
    if case == "no credentials":
        env = {"HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}

    assert_one_line_error(run_cli(*args, env=env), code, needle)


def test_key_needs_function_identity_or_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["key", "--payload", "{}", "--module", "m"], {}) == 2
    assert "--qualname required unless --key-prefix" in capsys.readouterr().err


def test_each_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("create-table", "key", "inspect", "release"):
        with pytest.raises(SystemExit) as exited:
            cli.main([command, "--help"], {})
        assert exited.value.code == 0
        assert f"usage: idemstore {command}" in capsys.readouterr().out


def test_error_message_names_missing_credentials_and_region() -> None:
    def chained(outer: Exception, cause: Exception) -> Exception:
        outer.__cause__ = cause
        return outer

    no_credentials = chained(
        IdempotencyPersistenceLayerError("GetItem failed"), NoCredentialsError()
    )
    no_region = chained(IdempotencyConfigurationError("no AWS region"), NoRegionError())

    assert cli.error_message(no_credentials).startswith("no AWS credentials")
    assert "--region" in cli.error_message(no_region)
    assert cli.error_message(ValueError("two\n  lines")) == "two lines"


# --- pure parts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (0, "now"),
        (0.9, "now"),
        (5, "in 5s"),
        (-59, "59s ago"),
        (300, "in 5m"),
        (-180, "3m ago"),
        (3599, "in 59m"),
        (3600, "in 1h"),
        (-86_399, "23h ago"),
        (3 * 86_400 + 5, "in 3d"),
    ],
)
def test_relative_time(delta: float, text: str) -> None:
    assert cli.relative_time(delta) == text


def test_iso_utc() -> None:
    assert cli.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert cli.iso_utc(1_700_000_000.25, milliseconds=True) == "2023-11-14T22:13:20.250Z"


def test_describe_record_derives_expired_from_the_clock() -> None:
    record = completed("k", 1_700_000_000)
    expiry = record.expiry_timestamp

    live = cli.describe_record(record, now=expiry - 60)
    dead = cli.describe_record(record, now=expiry + 120)

    assert (live["status"], live["expiry_relative"], live["lock_available"]) == (
        "COMPLETED",
        "in 1m",
        False,
    )
    assert (dead["status"], dead["stored_status"], dead["expiry_relative"]) == (
        "EXPIRED",
        "COMPLETED",
        "2m ago",
    )
    assert dead["lock_available"] is True
    assert "status:             EXPIRED (stored: COMPLETED)" in cli.format_record(dead)


def test_stale_lock_shows_as_available() -> None:
    record = in_progress("k", 1_700_000_000)
    assert record.in_progress_expiry_timestamp is not None
    stale_at = record.in_progress_expiry_timestamp / 1000 + 1

    shown = cli.describe_record(record, now=stale_at)

    assert shown["status"] == "INPROGRESS"
    assert shown["in_progress_expiry_relative"] == "1s ago"
    assert shown["lock_available"] is True


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ([], {}, cli.Connection(None, None)),
        (
            [],
            {cli.ENDPOINT_ENV: "http://localhost:8000", "AWS_DEFAULT_REGION": "eu-west-1"},
            cli.Connection("http://localhost:8000", "eu-west-1"),
        ),
        (
            [],
            {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"},
            cli.Connection(None, "eu-central-1"),
        ),
        (
            ["--endpoint-url", "https://dynamodb.example:443", "--region", "ap-south-1"],
            {cli.ENDPOINT_ENV: "http://localhost:8000", "AWS_REGION": "eu-central-1"},
            cli.Connection("https://dynamodb.example:443", "ap-south-1"),
        ),
    ],
)
def test_connection_flags_take_precedence_over_environment(
    flags: list[str], environ: dict[str, str], expected: cli.Connection
) -> None:
    args = cli.build_parser().parse_args(["inspect", "k", "--table", "t", *flags])
    assert cli.connection_from(args, environ) == expected


def test_invalid_endpoint_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["inspect", "k", "--table", "t"])
    with pytest.raises(cli.UsageError, match=cli.ENDPOINT_ENV):
        cli.connection_from(args, {cli.ENDPOINT_ENV: "localhost:8000"})

    with pytest.raises(SystemExit) as exited:
        cli.main(["inspect", "k", "--table", "t", "--endpoint-url", "ftp://x"], {})
    assert exited.value.code == 2
    assert "not an http(s) URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["inspect", "k", "--table", "t", "--static-pk-value", "v"], "needs --sort-key"),
        (["create-table", "t", "--sort-key", "id"], "cannot be the same"),
    ],
)
def test_inconsistent_table_layout_is_a_usage_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv, {}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
