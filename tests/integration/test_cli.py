"""The ``idemstore`` command line, run as a subprocess against the local DynamoDB server.

Subprocess runs show what a user sees (output, exit code, no traceback); the
pure parsing and formatting functions and the less common paths run in process.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from botocore.exceptions import NoCredentialsError, NoRegionError
from moto_tables import new_table

from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyConfig,
    IdempotencyConfigurationError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    RecordStatus,
    TableSchema,
    cli,
    create_table,
)
from idemstore.codec import to_item
from idemstore.tables import TableSetup, ensure_table
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


def make_table(
    endpoint: MotoEndpoint, name: str, keys: list[tuple[str, str, str]], ttl_attr: str | None
) -> None:
    """A table made by hand: (attribute, HASH or RANGE, type) keys, TTL on ``ttl_attr``."""

    key_schema: list[Any] = [{"AttributeName": n, "KeyType": k} for n, k, _ in keys]
    attributes: list[Any] = [{"AttributeName": n, "AttributeType": t} for n, _, t in keys]

    async def make() -> None:
        async with endpoint.store(name) as store:
            client = await store.client()
            await client.create_table(
                TableName=name,
                KeySchema=key_schema,
                AttributeDefinitions=attributes,
                BillingMode="PAY_PER_REQUEST",
            )
            if ttl_attr is not None:
                await client.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attr},
                )

    asyncio.run(make())


def describe_ttl(endpoint: MotoEndpoint, name: str) -> dict[str, Any]:
    async def describe() -> dict[str, Any]:
        async with endpoint.store(name) as store:
            client = await store.client()
            answer = await client.describe_time_to_live(TableName=name)
            return dict(answer["TimeToLiveDescription"])

    return asyncio.run(describe())


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
    return new_table(moto_server, "cli")


@pytest.fixture
def where(moto_server: MotoEndpoint) -> list[str]:
    return ["--endpoint-url", moto_server.url, "--region", moto_server.region_name]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process's environment as the subprocesses get it, for in-process runs."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
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
    second = run_cli("create-table", name, "--expiry-attr", "expires_at", *where, env=cli_env)

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


@pytest.mark.parametrize(
    ("keys", "ttl_attr", "flags", "needles"),
    [
        (
            [("pk", "HASH", "S")],
            "expiration",
            [],
            ["partition key 'pk' (S) and no sort key", "expects partition key 'id' (S)"],
        ),
        (
            [("id", "HASH", "S"), ("sk", "RANGE", "S")],
            "expiration",
            [],
            ["it has partition key 'id' (S) and sort key 'sk' (S)", "and no sort key"],
        ),
        (
            [("id", "HASH", "S")],
            "expiration",
            ["--sort-key", "sk"],
            ["it has partition key 'id' (S) and no sort key", "and sort key 'sk' (S)"],
        ),
        ([("id", "HASH", "N")], "expiration", [], ["partition key 'id' (N)"]),
        ([("id", "HASH", "S")], "ttl", [], ["its TTL is on 'ttl'", "to 'expiration'"]),
    ],
    ids=["partition-key-name", "extra-sort-key", "missing-sort-key", "key-type", "ttl-attribute"],
)
def test_create_table_refuses_an_existing_table_that_does_not_fit(
    keys: list[tuple[str, str, str]],
    ttl_attr: str,
    flags: list[str],
    needles: list[str],
    moto_server: MotoEndpoint,
    aws_env: None,
    where: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"cli-misfit-{uuid.uuid4().hex[:8]}"
    make_table(moto_server, name, keys, ttl_attr)

    assert cli.main(["create-table", name, *flags, *where]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"idemstore create-table: error: table {name!r} exists but")
    for needle in needles:
        assert needle in captured.err
    assert describe_ttl(moto_server, name)["AttributeName"] == ttl_attr  # left as it was


def test_create_table_subprocess_names_the_mismatch(
    moto_server: MotoEndpoint, cli_env: dict[str, str], where: list[str]
) -> None:
    name = f"cli-misfit-{uuid.uuid4().hex[:8]}"
    make_table(moto_server, name, [("pk", "HASH", "S"), ("sk", "RANGE", "S")], "expiration")

    result = run_cli("create-table", name, *where, env=cli_env)

    assert_one_line_error(result, 1, "sort key 'sk' (S)", "pass the table's attribute names")


@pytest.mark.asyncio
async def test_create_table_function_raises_a_configuration_error_on_a_misfit(
    moto_server: MotoEndpoint,
) -> None:
    name = f"cli-misfit-{uuid.uuid4().hex[:8]}"
    async with moto_server.store(name) as store:
        assert await create_table(store) is True
        assert await create_table(store) is False  # the same shape: nothing to do
    async with moto_server.store(name, sort_key_attr="sk") as store:
        with pytest.raises(IdempotencyConfigurationError, match="and no sort key"):
            await create_table(store)
    async with moto_server.store(name, expiry_attr="expires_at") as store:
        with pytest.raises(IdempotencyConfigurationError, match="its TTL is on 'expiration'"):
            await create_table(store)


def test_create_table_enables_ttl_left_off(
    moto_server: MotoEndpoint, aws_env: None, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # A table whose creation stopped before its TTL step, or that was made without it.
    name = f"cli-no-ttl-{uuid.uuid4().hex[:8]}"
    make_table(moto_server, name, [("id", "HASH", "S")], ttl_attr=None)
    assert describe_ttl(moto_server, name)["TimeToLiveStatus"] == "DISABLED"

    assert cli.main(["create-table", name, *where]) == 0

    assert capsys.readouterr().out == (
        f"already exists: table {name!r} (its TTL was off; now enabled on 'expiration')\n"
    )
    assert describe_ttl(moto_server, name) == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expiration",
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("other_ttl_attr", "outcome"),
    [("expiration", TableSetup.EXISTED), ("ttl", IdempotencyConfigurationError)],
)
async def test_ensure_table_racing_another_creation_for_the_ttl_step(
    other_ttl_attr: str, outcome: object, moto_server: MotoEndpoint
) -> None:
    # Another creation made the table and enables TTL just before this one does;
    # DynamoDB then refuses the second UpdateTimeToLive (moto does not, so the
    # refusal is answered in its place, after the other creation's request).
    name = f"cli-race-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(make_table, moto_server, name, [("id", "HASH", "S")], None)
    refused: list[str] = []

    async def other_creation_first(**_: Any) -> tuple[Any, dict[str, Any]]:
        async with moto_server.store(name) as other:
            other_client = await other.client()
            await other_client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": other_ttl_attr},
            )
        refused.append(name)
        error = {"Code": "ValidationException", "Message": "TimeToLive is already enabled"}
        return SimpleNamespace(status_code=400), {"Error": error}

    async with moto_server.store(name) as store:
        client = await store.client()
        # The stubs type handlers as returning None; a before-call handler's answer
        # stands in for the server's.
        client.meta.events.register(
            "before-call.dynamodb.UpdateTimeToLive",
            other_creation_first,  # type: ignore[arg-type]  # see above
        )
        if outcome is TableSetup.EXISTED:
            assert await ensure_table(store) is TableSetup.EXISTED
        else:
            with pytest.raises(IdempotencyConfigurationError, match="its TTL is on 'ttl'"):
                await ensure_table(store)
    assert refused == [name]


# --- endpoint, region, version ----------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
def test_endpoint_from_botocores_variables(
    variable: str, moto_server: MotoEndpoint, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, variable: moto_server.url, "AWS_REGION": moto_server.region_name}
    name = f"cli-env-{uuid.uuid4().hex[:8]}"

    created = run_cli("create-table", name, env=env)
    missing = run_cli("inspect", "absent#key", "--table", name, env=env)

    assert created.returncode == 0, created.stderr
    assert created.stdout == f"created: table {name!r}\n"
    # The table is found there: only the record is missing.
    assert_one_line_error(missing, 1, f"no record for key 'absent#key' in table {name!r}")


def test_missing_region_is_a_runtime_error(
    moto_server: MotoEndpoint, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "AWS_CONFIG_FILE": os.devnull}  # and no AWS_REGION / AWS_DEFAULT_REGION

    result = run_cli("inspect", "k", "--table", "t", "--endpoint-url", moto_server.url, env=env)

    assert_one_line_error(result, 1, "no AWS region", "--region", "AWS_REGION")


def test_version(cli_env: dict[str, str]) -> None:
    result = run_cli("--version", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"idemstore {importlib.metadata.version('idemstore')}\n"


def test_importing_idemstore_does_not_import_the_command_line() -> None:
    check = "import sys, idemstore; print(sorted({'argparse', 'idemstore.cli'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_attribute_defaults_come_from_the_table_schema() -> None:
    args = cli.build_parser().parse_args(["create-table", "t"])
    layout = cli.layout_from(args, {})
    defaults = {option.name: option.default for option in fields(TableSchema)}
    assert (layout.key_attr, layout.expiry_attr) == (defaults["key_attr"], defaults["expiry_attr"])


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


# --- http-key -------------------------------------------------------------------


async def created(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering 201 with an empty JSON object."""
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.asyncio
async def test_http_key_is_the_key_the_middleware_stores(
    dynamo_store: AsyncDynamoStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from idemstore.integrations.asgi import HttpIdempotencyConfig, IdempotencyMiddleware

    config = HttpIdempotencyConfig(
        scope=lambda request: request.headers["X-Account"],
        key_prefix="payments",
        idempotency_config=IdempotencyConfig(hash_function="sha256"),
    )
    app = IdempotencyMiddleware(created, store=dynamo_store, config=config)
    body = b'{"amount_cents": 1250}'
    headers = {"Idempotency-Key": '"pay-1"', "X-Account": "acme"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/payments?currency=EUR", content=body, headers=headers)
    assert response.status_code == 201
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    identity = ["http-key", "--key", '"pay-1"', "--scope", "acme", "--prefix", "payments"]
    identity += ["--hash-function", "sha256"]
    request = ["--method", "post", "--path", "/payments", "--query", "?currency=EUR"]
    request += ["--body-file", str(body_file)]

    assert cli.main([*identity, *request], {}) == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    key = shown["key"].strip()
    record = await dynamo_store.get_record(key)
    assert record.status is RecordStatus.COMPLETED
    assert record.payload_hash == shown["payload hash"].strip()
    # Without the request: the key alone, ready for inspect and release.
    assert cli.main(identity, {}) == 0
    assert capsys.readouterr().out == f"{key}\n"
    # Another scope, another key.
    assert cli.main([*identity[:4], "other", *identity[5:]], {}) == 0
    assert capsys.readouterr().out.strip() not in ("", key)


def test_http_key_defaults_are_the_middlewares(capsys: pytest.CaptureFixture[str]) -> None:
    from idemstore.integrations._http import call_identity, request_fingerprint
    from idemstore.integrations.asgi import HttpIdempotencyConfig

    expected = call_identity(
        HttpIdempotencyConfig(),
        key="k-1",
        scope=None,
        fingerprint=request_fingerprint("POST", "/p", "", b""),
    )

    assert cli.main(["http-key", "--key", "k-1", "--method", "POST", "--path", "/p"], {}) == 0
    assert capsys.readouterr().out == (
        f"key:          {expected.key}\npayload hash: {expected.payload_hash}\n"
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--key", "two words"], "must be a quoted string or a token"),
        (["--key", '"open'], "string is not closed"),
        (["--key", "k", "--path", "/p"], "needs --method and --path"),
        (["--key", "k", "--method", "POST"], "needs --method and --path"),
        (["--key", "k", "--method", "POST", "--path", "/p?a=1"], "pass it with --query"),
        (["--key", "k", "--method", "POST", "--path", "/p", "--body-file", "/no/such"], "/no/such"),
        (["--key", "k", "--prefix", ""], "--prefix must not be empty"),
    ],
)
def test_http_key_errors_are_usage_errors(
    flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["http-key", *flags], {}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("idemstore http-key: error: ")
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
        "result": "-",
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
        "result": result_text,
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
    # The partition value derived from the function name, as the store derives it.
    sort_key = ["--key-attr", "pk", "--sort-key", "sk"]
    named = ["inspect", key, "--table", name, "--json", *sort_key, *argv]
    assert cli.main([*named, "--function-name", "orders-fn"], {}) == 0
    assert json.loads(capsys.readouterr().out)["key"] == key
    assert cli.main(named, {"AWS_LAMBDA_FUNCTION_NAME": "orders-fn"}) == 0
    assert json.loads(capsys.readouterr().out)["key"] == key
    assert cli.main(named, {"AWS_LAMBDA_FUNCTION_NAME": "other-fn"}) == 1
    assert "no record for key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        (["--sort-key", "sk"], {}, "idempotency#"),
        (["--sort-key", "sk"], {"AWS_LAMBDA_FUNCTION_NAME": "env-fn"}, "idempotency#env-fn"),
        (
            ["--sort-key", "sk", "--function-name", "flag-fn"],
            {"AWS_LAMBDA_FUNCTION_NAME": "env-fn"},
            "idempotency#flag-fn",
        ),
        (["--sort-key", "sk", "--static-pk-value", "custom"], {}, "custom"),
        ([], {"AWS_LAMBDA_FUNCTION_NAME": "env-fn"}, None),
    ],
)
def test_static_pk_value_is_derived_like_the_store_does(
    flags: list[str], environ: dict[str, str], expected: str | None
) -> None:
    args = cli.build_parser().parse_args(["release", "k", "--table", "t", *flags])
    assert cli.layout_from(args, environ).static_pk_value == expected


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--function-name", "f"], "--function-name needs --sort-key"),
        (
            ["--sort-key", "sk", "--function-name", "f", "--static-pk-value", "v"],
            "exclude each other",
        ),
    ],
)
def test_function_name_flag_errors(
    flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["inspect", "k", "--table", "t", *flags], {}) == 2
    assert needle in capsys.readouterr().err


def test_inspect_shows_a_preview_of_a_long_result(
    moto_server: MotoEndpoint, table: str, aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    key, now = unique_key(), time.time()
    result_text = json.dumps({"lines": ["x" * 50] * 10})
    plant(moto_server, table, completed(key, now, result=result_text))
    argv = ["inspect", key, "--table", table, "--endpoint-url", moto_server.url]
    argv += ["--region", moto_server.region_name]

    assert cli.main(argv) == 0
    rows = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    limit = cli.RESULT_PREVIEW_CHARS
    assert rows["result"].strip() == (
        f"{result_text[:limit]}... ({len(result_text) - limit} more characters; --json shows all)"
    )
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == result_text


@pytest.mark.parametrize(
    ("text", "preview"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('"two\nlines\r"', '"two\\nlines\\r"'),
        ("x" * 22, "x" * 20 + "... (2 more characters; --json shows all)"),
    ],
)
def test_result_preview_is_one_line(text: str, preview: str) -> None:
    assert cli.result_preview(text, limit=20) == preview


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


@pytest.mark.parametrize("stored", [RecordStatus.COMPLETED, RecordStatus.INPROGRESS])
def test_release_of_an_expired_record_succeeds_without_deleting(
    stored: RecordStatus,
    moto_server: MotoEndpoint,
    table: str,
    cli_env: dict[str, str],
    where: list[str],
) -> None:
    # Expired is no lock: the next call takes the record over, whatever its owner.
    key, now = unique_key(), time.time()
    fresh = completed(key, now) if stored is RecordStatus.COMPLETED else in_progress(key, now)
    record = replace(fresh, expiry_timestamp=int(now) - 150, owner_token=None)
    plant(moto_server, table, record)

    result = run_cli("release", key, "--table", table, *where, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"nothing to release: {stored.value} record {key!r} expired 2m ago, "
        "so the next call runs again (--force deletes it)\n"
    )
    assert fetch(moto_server, table, key) == record

    forced = run_cli("release", key, "--table", table, "--force", *where, env=cli_env)

    assert forced.returncode == 0, forced.stderr
    assert "deleted" in forced.stdout
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
    for command in ("create-table", "key", "http-key", "inspect", "release"):
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
            {
                "AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000",
                "AWS_DEFAULT_REGION": "eu-west-1",
            },
            cli.Connection("http://localhost:8000", "eu-west-1"),
        ),
        (
            [],
            {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"},
            cli.Connection(None, "eu-central-1"),
        ),
        (
            [],
            {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_DYNAMODB": "http://ddb:2"},
            cli.Connection("http://ddb:2", None),
        ),
        ([], {"AWS_ENDPOINT_URL": "http://all:1"}, cli.Connection("http://all:1", None)),
        (
            [],
            {"AWS_ENDPOINT_URL": "http://all:1", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "True"},
            cli.Connection(None, None),
        ),
        (
            ["--endpoint-url", "https://dynamodb.example:443", "--region", "ap-south-1"],
            {"AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000", "AWS_REGION": "eu-central-1"},
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
    with pytest.raises(cli.UsageError, match="AWS_ENDPOINT_URL_DYNAMODB"):
        cli.connection_from(args, {"AWS_ENDPOINT_URL_DYNAMODB": "localhost:8000"})
    with pytest.raises(cli.UsageError, match="AWS_ENDPOINT_URL: not an http"):
        cli.connection_from(args, {"AWS_ENDPOINT_URL": "localhost:8000"})

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
