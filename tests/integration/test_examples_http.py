"""The HTTP examples run and do what they say: built in process and served on loopback,
and executed as scripts the way their docstrings say, then stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import runpy
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_http_conformance import aiohttp_serving, uvicorn_serving

from idemstore import AsyncDynamoStore
from idemstore.testing import MotoEndpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PAYMENT = {"amount_cents": 1250, "currency": "EUR"}


def load(name: str) -> dict[str, Any]:
    # As when run as a script: the example's folder is importable (its shared helper).
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")


async def check_payments_api(url: str) -> None:
    """What both examples promise: one payment per key and account, replays marked."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        key = {"Idempotency-Key": "pay-1"}
        first = await client.post("/payments", json=PAYMENT, headers=key)
        retry = await client.post("/payments", json=PAYMENT, headers=key)
        other_account = await client.post(
            "/payments", json=PAYMENT, headers={**key, "X-Account": "acme"}
        )
        no_key = await client.post("/payments", json=PAYMENT)
        listed = (await client.get("/payments")).json()
    assert first.status_code == retry.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert first.json()["id"] == "pay_1"
    assert other_account.json()["id"] == "pay_2"
    assert other_account.json()["account"] == "acme"
    assert no_key.status_code == 400
    assert no_key.headers["content-type"] == "application/problem+json"
    assert [payment["id"] for payment in listed] == ["pay_1", "pay_2"]


@pytest.mark.asyncio
async def test_the_fastapi_example_app(dynamo_store: AsyncDynamoStore) -> None:
    example = load("fastapi_app")
    async with uvicorn_serving(example["create_app"](dynamo_store)) as url:
        await check_payments_api(url)


@pytest.mark.asyncio
async def test_the_aiohttp_example_app(dynamo_store: AsyncDynamoStore) -> None:
    example = load("aiohttp_app")
    async with aiohttp_serving(example["create_app"](dynamo_store)) as url:
        await check_payments_api(url)


def script_environment(endpoint: MotoEndpoint | None) -> dict[str, str]:
    """No AWS settings of the user's; the shared server's endpoint, or none at all."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    if endpoint is not None:
        env.update(
            AWS_ENDPOINT_URL_DYNAMODB=endpoint.url,
            IDEMSTORE_TABLE=f"example-{uuid.uuid4().hex[:12]}",
            AWS_DEFAULT_REGION=endpoint.region_name,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # the local server accepts anything
        )
    return env


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("script", "own_server"),
    [("fastapi_app.py", True), ("aiohttp_app.py", False)],
    ids=["fastapi-embedded-server", "aiohttp-endpoint-from-environment"],
)
async def test_the_example_runs_as_a_script(
    script: str, own_server: bool, moto_server: MotoEndpoint
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=script_environment(None if own_server else moto_server),
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if line.startswith("serving on http://127.0.0.1:"):
            await check_payments_api(line.removeprefix("serving on ").strip())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert line.startswith("serving on"), errors.decode()
    # Stopped by SIGTERM: a clean exit, or the signal re-raised once shut down (uvicorn does).
    assert process.returncode in (0, -signal.SIGTERM), errors.decode()
    assert b"Traceback" not in errors, errors.decode()
