"""Fixtures shared by the integration tests that prove compatibility with Powertools."""

from typing import Any

import pytest

from idemstore import AsyncDynamoStore
from idemstore.testing import MotoEndpoint


@pytest.fixture
def powertools_layer(moto_server: MotoEndpoint, dynamo_store: AsyncDynamoStore) -> Any:
    """Powertools' DynamoDB layer on the table of ``dynamo_store`` (a Redis module overrides it)."""
    # Imported here: the other integration modules need neither boto3 nor Powertools.
    from powertools_twins import dynamo_layer

    return dynamo_layer(moto_server, dynamo_store.table_name)
