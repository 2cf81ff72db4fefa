"""Creating the idempotency table: on-demand capacity, TTL on the expiry attribute.

An existing table is checked, not trusted: a key schema or TTL attribute other
than the store's would only surface later, as a failed request on every call.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from idemstore.errors import IdempotencyConfigurationError, IdempotencyPersistenceLayerError
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.table import TableSchema

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

TTL_ON = frozenset({"ENABLED", "ENABLING"})


def _schema_default(name: str) -> str:
    """An attribute name's default, from the one place defaults are written."""
    return str(TableSchema.default(name))


class TableSetup(enum.Enum):
    """What ``ensure_table`` did."""

    CREATED = "created"
    EXISTED = "already exists"
    TTL_ENABLED = "already exists; its TTL was off and is now enabled"


@dataclass(frozen=True)
class TableShape:
    """The key schema and TTL attribute a store needs its table to have."""

    key_attr: str
    sort_key_attr: str | None
    expiry_attr: str

    def key_text(self) -> str:
        return _key_text(self.key_attr, self.sort_key_attr, lambda _: "S")


def _key_text(partition: str | None, sort: str | None, type_of: Callable[[str], str]) -> str:
    sort_text = f"sort key {sort!r} ({type_of(sort)})" if sort else "no sort key"
    return f"partition key {partition!r} ({type_of(partition or '')}) and {sort_text}"


def key_schema_problem(described: Mapping[str, Any], expected: TableShape) -> str | None:
    """Why a table (``DescribeTable``'s ``Table``) has other keys than ``expected``; None if not."""
    types = {d["AttributeName"]: d["AttributeType"] for d in described["AttributeDefinitions"]}
    keys = {k["KeyType"]: k["AttributeName"] for k in described["KeySchema"]}
    partition, sort = keys.get("HASH"), keys.get("RANGE")
    same_names = (partition, sort) == (expected.key_attr, expected.sort_key_attr)
    if same_names and all(types.get(name) == "S" for name in (partition, sort) if name):
        return None
    found = _key_text(partition, sort, lambda name: types.get(name, "?"))
    return f"it has {found}, the store expects {expected.key_text()}"


def ttl_problem(ttl: Mapping[str, Any], expected: TableShape) -> str | None:
    """Why the table's TTL (``DescribeTimeToLive``) does not fit; None when it does or is off."""
    status, attribute = ttl.get("TimeToLiveStatus"), ttl.get("AttributeName")
    if status == "DISABLED":
        return None  # off: enabled on the expected attribute, as a creation would have
    if status in TTL_ON and attribute == expected.expiry_attr:
        return None
    if status in TTL_ON:
        return (
            f"its TTL is on {attribute!r}, the store writes the expiry to "
            f"{expected.expiry_attr!r} (expiry_attr)"
        )
    return f"its TTL is {status}; run again once it is DISABLED or ENABLED"


async def ensure_table(
    client_or_store: DynamoDBClient | AsyncDynamoStore,
    table_name: str | None = None,
    *,
    key_attr: str | None = None,
    sort_key_attr: str | None = None,
    expiry_attr: str | None = None,
) -> TableSetup:
    """Create the table, or check that the existing one fits; return what was done.

    Raises ``IdempotencyConfigurationError`` when an existing table's key
    schema or TTL attribute differs from the store's. A table whose TTL is off
    (a creation that was interrupted) gets it enabled.
    """
    if isinstance(client_or_store, AsyncDynamoStore):
        schema = client_or_store.schema
        table_name = table_name or client_or_store.table_name
        key_attr = key_attr or schema.key_attr
        sort_key_attr = sort_key_attr or schema.sort_key_attr
        expiry_attr = expiry_attr or schema.expiry_attr
    if not table_name:
        raise IdempotencyConfigurationError("create_table needs a table name")
    shape = TableShape(
        key_attr=key_attr or _schema_default("key_attr"),
        sort_key_attr=sort_key_attr,
        expiry_attr=expiry_attr or _schema_default("expiry_attr"),
    )
    if isinstance(client_or_store, AsyncDynamoStore):
        client = await client_or_store.client()
    else:
        client = client_or_store
    try:
        if await _create(client, table_name, shape):
            await _wait_active(client, table_name)
            await _enable_ttl(client, table_name, shape)
            return TableSetup.CREATED  # even if a concurrent creation enabled TTL first
        return await _check_existing(client, table_name, shape)
    except (ClientError, BotoCoreError) as exc:
        raise IdempotencyPersistenceLayerError(
            f"creating table {table_name!r} failed: {exc}"
        ) from exc


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
    call is idempotent; an existing table must have the same key schema and
    TTL attribute, else ``IdempotencyConfigurationError`` (see ``ensure_table``).
    """
    setup = await ensure_table(
        client_or_store,
        table_name,
        key_attr=key_attr,
        sort_key_attr=sort_key_attr,
        expiry_attr=expiry_attr,
    )
    return setup is TableSetup.CREATED


async def _create(client: DynamoDBClient, table_name: str, shape: TableShape) -> bool:
    """Send CreateTable; False when the table already exists."""
    key_schema: list[Any] = [{"AttributeName": shape.key_attr, "KeyType": "HASH"}]
    attributes: list[Any] = [{"AttributeName": shape.key_attr, "AttributeType": "S"}]
    if shape.sort_key_attr:
        key_schema.append({"AttributeName": shape.sort_key_attr, "KeyType": "RANGE"})
        attributes.append({"AttributeName": shape.sort_key_attr, "AttributeType": "S"})
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
    return True


async def _check_existing(client: DynamoDBClient, table_name: str, shape: TableShape) -> TableSetup:
    described = await client.describe_table(TableName=table_name)
    problem = key_schema_problem(described["Table"], shape)
    ttl = (await client.describe_time_to_live(TableName=table_name))["TimeToLiveDescription"]
    problem = problem or ttl_problem(ttl, shape)
    if problem is not None:
        raise IdempotencyConfigurationError(
            f"table {table_name!r} exists but does not fit the store: {problem}; "
            "pass the table's attribute names, or use another table"
        )
    if ttl.get("TimeToLiveStatus") in TTL_ON:
        return TableSetup.EXISTED
    # Off: a creation that has not reached its TTL step (or never will); finish it.
    await _wait_active(client, table_name)
    enabled = await _enable_ttl(client, table_name, shape)
    return TableSetup.TTL_ENABLED if enabled else TableSetup.EXISTED


async def _enable_ttl(client: DynamoDBClient, table_name: str, shape: TableShape) -> bool:
    """Turn TTL on; False when a concurrent creation turned it on first."""
    try:
        await client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": shape.expiry_attr},
        )
    except ClientError as exc:
        # DynamoDB refuses to enable TTL twice: fine if it is on where the store needs it.
        if exc.response.get("Error", {}).get("Code") != "ValidationException":
            raise
        ttl = (await client.describe_time_to_live(TableName=table_name))["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in TTL_ON:
            raise
        problem = ttl_problem(ttl, shape)
        if problem is not None:
            raise IdempotencyConfigurationError(
                f"table {table_name!r} does not fit the store: {problem}"
            ) from exc
        return False
    return True


async def _wait_active(client: DynamoDBClient, table_name: str) -> None:
    for _ in range(120):
        described = await client.describe_table(TableName=table_name)
        if described["Table"].get("TableStatus") == "ACTIVE":
            return
        await asyncio.sleep(0.5)
    raise IdempotencyPersistenceLayerError(f"table {table_name!r} did not become ACTIVE")
