"""The Powertools side of the compatibility proofs: a sync twin of an idemstore function.

A twin has the idemstore function's module and qualname: the same function before
migrating, so both libraries derive the same keys.
"""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import boto3  # type: ignore[import-untyped]  # boto3 ships no type information
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
)
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig as PowertoolsConfig,
)
from aws_lambda_powertools.utilities.idempotency import (
    idempotent_function as powertools_idempotent_function,
)

from idemstore import IdempotencyConfig, RecordStore, idempotent_function
from idemstore.testing import MotoEndpoint

F = TypeVar("F", bound=Callable[..., Any])

Library = Literal["idemstore", "powertools"]
"""Which library's function a proof calls."""


class FakeLambdaContext:
    """What both libraries read from the Lambda context: the time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def dynamo_layer(moto_server: MotoEndpoint, table_name: str) -> Any:
    """Powertools' DynamoDB layer on ``table_name`` of the local server."""
    client = boto3.client(
        "dynamodb",
        region_name=moto_server.region_name,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # not a secret: the local server accepts anything
        endpoint_url=moto_server.url,
    )
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)


def as_lambda_function(monkeypatch: Any, name: str) -> None:
    """Run as the Lambda function ``name``, with Powertools' idempotency enabled.

    idemstore reads the name when decorating and Powertools on each call: set it first.
    """
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", name)
    monkeypatch.delenv("POWERTOOLS_IDEMPOTENCY_DISABLED", raising=False)


def powertools_config(**options: Any) -> Any:
    """Powertools' config with ``options``, registered with a Lambda context."""
    config = PowertoolsConfig(**options)
    fake: Any = FakeLambdaContext()  # duck-typed: only the remaining time is read
    config.register_lambda_context(fake)
    return config


def powertools_twin(
    twin: Callable[..., Any],
    layer: Any,
    *,
    data_keyword_argument: str = "order",
    config: Any = None,
    **options: Any,
) -> Callable[[F], F]:
    """Powertools' decorator (with ``options``) on a sync function named like ``twin``."""

    def decorate(function: F) -> F:
        function.__module__ = twin.__module__
        function.__qualname__ = twin.__qualname__
        decorated: F = powertools_idempotent_function(
            function,
            data_keyword_argument=data_keyword_argument,
            persistence_store=layer,
            config=config or powertools_config(),
            **options,
        )
        return decorated

    return decorate


@dataclass(frozen=True)
class Twins:
    """One order function before and after migrating, and which library ran it."""

    idemstore: Callable[..., Awaitable[Any]]
    powertools: Callable[..., Any]
    runs: list[str] = field(default_factory=list)

    async def powertools_call(self, order: dict[str, Any]) -> Any:
        """Powertools' sync function, in a worker thread (it does blocking I/O)."""
        return await asyncio.to_thread(lambda: self.powertools(order=order))

    async def call(self, library: Library, order: dict[str, Any]) -> Any:
        """The function of ``library`` on ``order``, for proofs run in either direction."""
        if library == "idemstore":
            return await self.idemstore(order=order)
        return await self.powertools_call(order)


def other(library: Library) -> Library:
    """The library that is not ``library``: the one that replays what it completed."""
    return "powertools" if library == "idemstore" else "idemstore"


def receipt(order: dict[str, Any]) -> dict[str, Any]:
    """What an order function returns in the replay proofs, whichever library runs it."""
    return {"receipt": order["order_id"], "total": order["amount"], "lines": [1, 2]}


# Keys from the order id; a replay must match the amount the record was made for.
VALIDATING_AMOUNT: dict[str, Any] = {
    "event_key_jmespath": "order_id",
    "payload_validation_jmespath": "amount",
}


def twins(
    store: RecordStore,
    layer: Any,
    *,
    idemstore_result: Callable[[dict[str, Any]], Any] = lambda order: "idemstore",
    powertools_result: Callable[[dict[str, Any]], Any] = lambda order: "powertools",
    **options: Any,
) -> Twins:
    """An idemstore function on ``store`` and its Powertools twin on ``layer``.

    Both get the config ``options``; each appends its library's name to ``runs``
    and returns its own result (by default its name), so a test sees which one
    ran or replayed. ``idemstore_result`` may be a coroutine function: the
    idemstore function awaits it, so a test can hold that call open.
    """
    runs: list[str] = []

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=store,
        config=IdempotencyConfig(**options),
    )
    async def process_order(order: dict[str, Any]) -> Any:
        runs.append("idemstore")
        result = idemstore_result(order)
        return await result if inspect.isawaitable(result) else result

    @powertools_twin(process_order, layer, config=powertools_config(**options))
    def process_order_sync(order: dict[str, Any]) -> Any:
        runs.append("powertools")
        return powertools_result(order)

    return Twins(process_order, process_order_sync, runs)
