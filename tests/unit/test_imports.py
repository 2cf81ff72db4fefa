"""What importing idemstore and making a first call load: only what the call needs.

Each check runs in a fresh interpreter, since this test process has long since
imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

NEVER_IMPORTED = (
    "fastapi",
    "starlette",
    "aiohttp.web",
    "argparse",
    "idemstore.batch",
    "idemstore.cli",
    "idemstore.integrations",
    "opentelemetry",
    "redis",
    "boto3",
    "moto",
)
"""Loaded only by the parts that use them: web frameworks, batch processing, the CLI, ..."""

AWS_SDK = ("aiobotocore", "botocore", "aiohttp")
"""Needed by ``AsyncDynamoStore`` alone."""


def modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` has run in a fresh interpreter."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return set(loaded)


def loaded_from(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in modules for package in packages if (name + ".").startswith(package + ".")
    )


def test_the_check_sees_a_package_that_is_loaded() -> None:
    modules = modules_after("import argparse, idemstore.integrations._http")

    assert loaded_from(modules, NEVER_IMPORTED) == [
        "argparse",
        "idemstore.integrations",
        "idemstore.integrations._http",
    ]


def test_importing_idemstore_loads_no_optional_part_and_no_aws_sdk() -> None:
    # idemstore.observe: the hooks a tracer attaches to, without loading OpenTelemetry.
    modules = modules_after("import idemstore, idemstore.observe")

    assert "idemstore.idempotency" in modules
    assert loaded_from(modules, NEVER_IMPORTED) == []
    assert loaded_from(modules, AWS_SDK) == []


def two_calls_on_a_memory_store(config: str) -> str:
    """A script that calls a function made idempotent on an in-memory store twice, the
    second call a replay; ``config`` is the decorator's config, as Python source."""
    return f"""
        import asyncio
        from idemstore import IdempotencyConfig, InMemoryStore, idempotent_function

        store = InMemoryStore()
        config = {config}

        @idempotent_function(data_keyword_argument="order", persistence_store=store, config=config)
        async def process(order: dict) -> dict:
            return {{"accepted": order["id"]}}

        assert asyncio.run(process(order={{"id": 1}})) == {{"accepted": 1}}
        assert asyncio.run(process(order={{"id": 1}})) == {{"accepted": 1}}
        """


def test_a_first_call_on_an_in_memory_store_loads_no_optional_part_and_no_aws_sdk() -> None:
    modules = modules_after(two_calls_on_a_memory_store(config="None"))

    assert "idemstore.stores.memory" in modules
    assert loaded_from(modules, NEVER_IMPORTED) == []
    assert loaded_from(modules, AWS_SDK) == []


PYDANTIC = ("pydantic", "pydantic_core", "annotated_types")
"""Needed only for typed results and the HTTP configuration."""


def test_a_plain_call_returning_a_dict_loads_no_pydantic() -> None:
    config = 'IdempotencyConfig(event_key_jmespath="id", use_local_cache=True)'
    modules = modules_after(two_calls_on_a_memory_store(config))

    assert "idemstore.serialization" in modules
    assert loaded_from(modules, PYDANTIC) == []


def test_a_typed_result_loads_pydantic() -> None:
    """The check above sees pydantic when a call does need it."""
    modules = modules_after(
        """
        import asyncio, dataclasses
        from idemstore import InMemoryStore, idempotent_function

        @dataclasses.dataclass
        class Receipt:
            order: int

        @idempotent_function(data_keyword_argument="order", persistence_store=InMemoryStore())
        async def process(order: dict) -> Receipt:
            return Receipt(order["id"])

        assert asyncio.run(process(order={"id": 1})) == Receipt(1)
        """
    )

    assert "pydantic" in loaded_from(modules, PYDANTIC)


@pytest.mark.parametrize("opened", [False, True], ids=["lazy-client", "open-stores"])
def test_a_lambda_handler_on_dynamodb_loads_no_optional_part(opened: bool) -> None:
    modules = modules_after(
        f"""
        from idemstore import AsyncDynamoStore, idempotent, lambda_entry_point
        from idemstore.loopback import isolated_session

        store = AsyncDynamoStore(
            "orders", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
            session=isolated_session(),
        )

        @idempotent(persistence_store=store)
        async def handle(event: dict[str, object], context: object) -> dict[str, object]:
            return event

        handler = lambda_entry_point(handle, open_stores=[store] if {opened} else ())
        handler.loop.run_until_complete(store.aclose())
        handler.close()
        """
    )

    assert "aiobotocore.session" in modules
    assert loaded_from(modules, NEVER_IMPORTED) == []
    assert loaded_from(modules, PYDANTIC) == []
