"""A store's owned client lives and dies with its event loop.

A script, a Lambda entry point or a test suite may run each call in its own
``asyncio.run``: the client of a closed loop must be dropped without leaking
its HTTP session, and a closed store must refuse to be used again.

The scripts run in a child process under ``-X dev`` (asyncio debug mode and
aiohttp's strict parser) with ResourceWarning as an error. They reach the
server through the fault proxy, which also merges the server's duplicate
``Server`` headers that the strict parser refuses.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

from faults.proxy import FaultProxy
from idemstore.stores.dynamo import AsyncDynamoStore

LOOP_PER_CALL = textwrap.dedent(
    """
    import asyncio
    import sys

    from idemstore import idempotent_function
    from idemstore.loopback import MotoEndpoint

    store = MotoEndpoint(url=sys.argv[1]).store(sys.argv[2])
    runs = []

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def place_order(order: dict) -> dict:
        runs.append(order)
        return {"order": order["id"]}

    async def call() -> dict:
        return await place_order(order={"id": 7})

    first = asyncio.run(call())
    second = asyncio.run(call())  # a new loop: the first loop's client is closed
    assert first == second == {"order": 7}, (first, second)
    assert len(runs) == 1, runs
    print("ok")
    """
)

LAMBDA_ENTRY_POINT = textwrap.dedent(
    """
    import sys

    from idemstore import IdempotencyConfig, idempotent, lambda_entry_point
    from idemstore.loopback import MotoEndpoint

    store = MotoEndpoint(url=sys.argv[1]).store(sys.argv[2])

    @idempotent(persistence_store=store, config=IdempotencyConfig(event_key_jmespath="id"))
    async def handler(event: dict, context: object) -> dict:
        return {"id": event["id"]}

    entry = lambda_entry_point(handler)
    assert entry({"id": 1}, None) == {"id": 1}
    assert entry({"id": 1}, None) == {"id": 1}
    entry.close()  # the store is never closed: its client goes with the loop
    print("ok")
    """
)


async def run_script(script: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-W",
        "error::ResourceWarning",
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
async def test_a_loop_per_call_leaks_no_client_session(
    fault_proxy: FaultProxy, direct_store: AsyncDynamoStore
) -> None:
    code, stdout, stderr = await run_script(LOOP_PER_CALL, fault_proxy.url, direct_store.table_name)

    assert "unclosed" not in stderr.lower()
    assert (code, stdout.strip()) == (0, "ok"), stderr
    # The second call was a replay, made through a second client.
    assert fault_proxy.operations == ["PutItem", "UpdateItem", "PutItem"]


@pytest.mark.asyncio
async def test_closing_a_lambda_entry_point_closes_the_client(
    fault_proxy: FaultProxy, direct_store: AsyncDynamoStore
) -> None:
    code, stdout, stderr = await run_script(
        LAMBDA_ENTRY_POINT, fault_proxy.url, direct_store.table_name
    )

    assert "unclosed" not in stderr.lower()
    assert (code, stdout.strip()) == (0, "ok"), stderr
    assert fault_proxy.operations == ["PutItem", "UpdateItem", "PutItem"]
