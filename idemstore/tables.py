"""Creating the idempotency table: on-demand capacity, TTL on the expiry attribute."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from idemstore.errors import IdempotencyPersistenceLayerError
from idemstore.stores.dynamo import AsyncDynamoStore

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


async def create_table(
    client_or_store: DynamoDBClient | AsyncDynamoStore,
    table_name: str | None = None,
    *,
    key_attr: str | None = None,
    sort_key_attr: str | None = None,
    expiry_attr: str | None = None,
) -> bool:
    """Create the table if it does not exist; return whether it was created.

    Given a store, its table name and attribute names are the defaults. The
    call is idempotent: an existing table is left as it is.
    """
    if isinstance(client_or_store, AsyncDynamoStore):
        schema = client_or_store.schema
        client = await client_or_store.client()
        table_name = table_name or client_or_store.table_name
        key_attr = key_attr or schema.key_attr
        sort_key_attr = sort_key_attr or schema.sort_key_attr
        expiry_attr = expiry_attr or schema.expiry_attr
    else:
        client = client_or_store
    if not table_name:
        raise ValueError("create_table needs a table name")
    key_attr = key_attr or "id"
    expiry_attr = expiry_attr or "expiration"
    key_schema: list[Any] = [{"AttributeName": key_attr, "KeyType": "HASH"}]
    attributes: list[Any] = [{"AttributeName": key_attr, "AttributeType": "S"}]
    if sort_key_attr:
        key_schema.append({"AttributeName": sort_key_attr, "KeyType": "RANGE"})
        attributes.append({"AttributeName": sort_key_attr, "AttributeType": "S"})
    try:
        try:
            await client.create_table(
                TableName=table_name,
                KeySchema=key_schema,
                AttributeDefinitions=attributes,
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            return False
        await _wait_active(client, table_name)
        await client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": expiry_attr},
        )
    except (ClientError, BotoCoreError) as exc:
        raise IdempotencyPersistenceLayerError(
            f"creating table {table_name!r} failed: {exc}"
        ) from exc
    return True


async def _wait_active(client: DynamoDBClient, table_name: str) -> None:
    for _ in range(120):
        described = await client.describe_table(TableName=table_name)
        if described["Table"].get("TableStatus") == "ACTIVE":
            return
        await asyncio.sleep(0.5)
    raise IdempotencyPersistenceLayerError(f"table {table_name!r} did not become ACTIVE")
