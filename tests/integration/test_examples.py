"""The examples run and do what they say: in process against the shared local server,
and as the README runs them, as scripts with no endpoint and no AWS credentials."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import run_captured

from idemstore import DataRecord, RecordStatus
from idemstore.testing import MotoEndpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LoadExample = Callable[[str], dict[str, Any]]
"""Runs an example file as a module and returns its namespace."""

RunExample = Callable[[str], Any]
"""Loads an example and returns what its ``main()`` returns (a coroutine for an async one)."""


@pytest.fixture
def endpoint_variable() -> str:
    """Where the examples find the endpoint: a variable botocore reads itself."""
    return "AWS_ENDPOINT_URL_DYNAMODB"


@pytest.fixture
def load_example(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch, endpoint_variable: str
) -> LoadExample:
    """Load an example's module namespace, configured for the shared local server."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(endpoint_variable, moto_server.url)
    monkeypatch.setenv("AWS_REGION", moto_server.region_name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")  # the local server accepts anything
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

    def load(name: str) -> dict[str, Any]:
        return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")

    return load


@pytest.fixture
def run_example(load_example: LoadExample) -> RunExample:
    """Run an example's ``main()`` against the shared local server, for the tests that
    need nothing else from its module."""
    return lambda name: load_example(name)["main"]()


@pytest.mark.asyncio
async def test_quickstart_replays_the_second_call(
    load_example: LoadExample, moto_server: MotoEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("quickstart")

    summary = await example["main"]()

    assert summary.executions == 1
    first, second = summary.receipts
    assert isinstance(second, example["Receipt"])
    assert second == first
    assert summary.requests == [["PutItem", "UpdateItem"], ["PutItem"]]
    assert summary.key.startswith("test-func.example_quickstart.demo.<locals>.charge#")
    out = capsys.readouterr().out
    assert "call 1: executed" in out
    assert "call 2: replayed" in out
    assert summary.key in out
    assert f"at {moto_server.url}" in out


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
def test_the_store_reads_the_endpoint_from_botocores_variables(
    variable: str, moto_server: MotoEndpoint, tmp_path: Path
) -> None:
    # A separate process: its own local server would keep its records to itself,
    # so the record is in the shared server only if the store's client (given no
    # endpoint_url by the example) found the endpoint in the environment.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        {variable: moto_server.url},
        HOME=str(tmp_path),
        AWS_REGION=moto_server.region_name,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # the local server accepts anything
    )

    result = run_captured(
        [sys.executable, "-W", "error", str(EXAMPLES / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert f"at {moto_server.url}" in result.stdout
    key = next(
        line.removeprefix("idempotency key: ")
        for line in result.stdout.splitlines()
        if line.startswith("idempotency key: ")
    )

    async def stored() -> DataRecord:
        async with moto_server.store("idemstore-quickstart") as store:
            return await store.get_record(key)

    assert asyncio.run(stored()).status is RecordStatus.COMPLETED


def test_lambda_handler_replays_warm_invocations(
    load_example: LoadExample, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("lambda_handler")

    responses = example["main"]()

    a1, a2, b, a3 = (json.loads(response["body"]) for response in responses)
    assert a1 == a2 == a3  # retries of order A: the first response, replayed
    assert b["order_id"] != a1["order_id"]
    assert b["confirmation"] != a1["confirmation"]
    assert [response["statusCode"] for response in responses] == [201] * 4
    assert example["ORDERS_CREATED"] == [a1["order_id"], b["order_id"]]
    out = capsys.readouterr().out
    assert [line.split()[2] for line in out.splitlines() if line.startswith("invocation")] == [
        "executed",
        "replayed",
        "executed",
        "replayed",
    ]


@pytest.mark.asyncio
async def test_sqs_batch_replays_the_duplicate_and_reports_the_failure(
    run_example: RunExample, capsys: pytest.CaptureFixture[str]
) -> None:
    response, shipped, redelivery = await run_example("sqs_batch")

    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-4"}]}
    assert sorted(order_id.split("-")[1] for order_id in shipped) == ["1", "2"]
    first, again = capsys.readouterr().out.split("the same batch redelivered:")
    outcomes = dict(
        line.strip().split(": ", 1) for line in first.splitlines() if line.startswith("  msg-")
    )
    kinds = {message: outcome.split(" ", 1)[0] for message, outcome in outcomes.items()}
    assert kinds == {
        "msg-1": "executed",
        "msg-2": "executed",
        "msg-3": "attached",
        "msg-4": "failed",
    }
    assert outcomes["msg-3"].split(" ", 1)[1] == outcomes["msg-1"].split(" ", 1)[1]
    assert outcomes["msg-4"].startswith("failed ValueError(")
    # Redelivered: one read replays the three completed records; the failed one runs again.
    assert sorted(redelivery) == ["BatchGetItem", "DeleteItem", "PutItem"]
    assert again.count(": replayed Shipment(") == 3
    assert len(shipped) == 2


@pytest.mark.asyncio
async def test_kinesis_stream_stops_at_the_failure_and_resumes_there(
    run_example: RunExample, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, applied = await run_example("kinesis_stream")

    assert first == {"batchItemFailures": [{"itemIdentifier": s} for s in ("3", "4", "5")]}
    assert second == {"batchItemFailures": []}
    assert applied == ["deposit 100", "withdraw 30", "deposit 5", "withdraw 50"]
    out = capsys.readouterr().out
    assert "balance: 25" in out


@pytest.mark.asyncio
async def test_transfer_debits_once_despite_a_stalled_worker(
    run_example: RunExample, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = await run_example("transfer")

    # A ran and stalled, B committed, the over-balance payment ran and was refused.
    assert summary.body_runs == ["A", "B", "B"]
    assert summary.late_worker_error == "IdempotencyLeaseLostError"
    first, replayed = summary.receipts
    assert first.worker == "B"
    assert replayed == first
    assert summary.ledger_entries == 1
    assert summary.balance == 10000 - 3000
    assert summary.refused == [0]  # the debit's condition failed
    assert "debits applied: 1" in capsys.readouterr().out


def test_otel_console_nests_the_dynamodb_spans_under_each_call(
    run_example: RunExample, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = run_example("otel_console")

    prefix = "idemstore test-func.example_otel_console.charge_twice.<locals>.charge"
    assert tree == [
        f"{prefix}: executed",
        "  DynamoDB.PutItem (UNSET)",
        "  DynamoDB.UpdateItem (UNSET)",
        f"{prefix}: replayed",
        "  DynamoDB.PutItem (ERROR)",  # the refused conditional put that found the record
    ]
    out = capsys.readouterr().out
    assert '"idemstore.outcome": "executed"' in out  # the console exporter's JSON


def test_powertools_logger_and_metrics_get_every_decision(
    run_example: RunExample, capsys: pytest.CaptureFixture[str]
) -> None:
    responses = run_example("lambda_powertools_observability")

    assert responses[0] == responses[1]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    decisions = [line for line in lines if line.get("message") == "idempotency decision"]
    assert [line["idemstore_outcome"] for line in decisions] == ["executed", "replayed"]
    assert [line["idemstore_requests"] for line in decisions] == [2, 1]
    assert {line["idemstore_store"] for line in decisions} == {"dynamodb"}
    emf = [line for line in lines if "_aws" in line]
    assert [line["outcome"] for line in emf if "IdempotentCalls" in line] == [
        "executed",
        "replayed",
    ]
    assert [line["IdempotencyStoreRequests"] for line in emf if "service" in line] == [
        [2.0],
        [1.0],
    ]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("quickstart.py", "function executions for 2 calls: 1"),
        ("transfer.py", "function runs: 3; debits applied: 1"),
        ("lambda_handler.py", "orders created for 4 invocations: 2"),
        ("otel_console.py", "charge: replayed\n  DynamoDB.PutItem (ERROR)"),
        ("lambda_powertools_observability.py", "orders created for 2 invocations: 1"),
        ("sqs_batch.py", "orders shipped: 2; batch response: {'batchItemFailures': [{'item"),
        ("kinesis_stream.py", "balance: 25"),
    ],
)
def test_example_runs_as_a_script_without_aws(script: str, expected: str, tmp_path: Path) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "IDEMSTORE_"))
    }
    env["HOME"] = str(tmp_path)  # no ~/.aws: nothing but the local server can be used

    result = run_captured(
        [sys.executable, "-W", "error", str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert result.stderr == ""  # no warnings, e.g. about unclosed connections


def readme_quick_start() -> str:
    """The first Python block of the README's Quick start section."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_quick_start_runs_as_shown(moto_server: MotoEndpoint, tmp_path: Path) -> None:
    # As the README says to run it: a script, the endpoint in botocore's variable.
    script = tmp_path / "quickstart.py"
    script.write_text(readme_quick_start())
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_ENDPOINT_URL_DYNAMODB=moto_server.url,
        AWS_REGION=moto_server.region_name,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # the local server accepts anything
    )

    runs = [
        run_captured(
            [sys.executable, "-W", "error", str(script)],
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        for _ in range(2)
    ]

    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""
        assert run.stdout.endswith(": True\n")
    # The body ran once over both runs: the second run replayed the stored receipt.
    assert [run.stdout.count("charging o-1") for run in runs] == [1, 0]
