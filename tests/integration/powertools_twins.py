"""The Powertools side of the compatibility proofs: a sync twin of an idemstore function.

A twin has the idemstore function's module and qualname: the same function before
migrating, so both libraries derive the same keys.
"""

from collections.abc import Callable
from typing import Any, TypeVar

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

from idemstore.testing import MotoEndpoint

F = TypeVar("F", bound=Callable[..., Any])


class FakeLambdaContext:
    """What Powertools reads from the Lambda context: the time left."""

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
