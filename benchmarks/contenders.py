"""The contenders: one idempotent call, done four ways against the same endpoint.

- ``idemstore``: ``idempotent_function`` over ``AsyncDynamoStore`` (its own client config);
- ``raw-aiobotocore``: the same DynamoDB requests written by hand on an aiobotocore
  client with its default configuration: the floor for an aiobotocore library;
- ``powertools-to-thread``: the Powertools sync ``idempotent_function`` with
  ``DynamoDBPersistenceLayer`` (boto3), called through ``asyncio.to_thread``;
- ``powertools-16-threads``: the same, through a 16-thread pool.

Every contender runs the same body (``Body``): it counts its runs, and can be
held open (for in-flight and in-progress measurements) or made to raise.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from idemstore import AsyncDynamoStore, IdempotencyConfig, idempotent_function
from idemstore.loopback import DUMMY_ACCESS_KEY, DUMMY_REGION, DUMMY_SECRET_KEY, isolated_session

TABLE_NAME = "idemstore-bench"
WAIT_SECONDS = 30.0
"""How long a duplicate waits for a running call, when waiting is on."""


class BodyFailedError(Exception):
    """What the function body raises when a payload asks it to fail."""


class Body:
    """The decorated function's body: counts runs; holds or fails when the payload asks.

    Thread-safe, for the thread-pool contenders. ``hold`` is released by ``release``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released_async = asyncio.Event()
        self.runs = 0
        self.in_flight = 0

    def enter(self, order: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.runs += 1
        if order.get("fail"):
            raise BodyFailedError(order["order_id"])
        return {"order_id": order["order_id"], "status": "accepted", "total": order["amount"]}

    async def run_async(self, order: dict[str, Any]) -> dict[str, Any]:
        result = self.enter(order)
        if order.get("hold"):
            self.in_flight += 1
            await self._released_async.wait()
            self.in_flight -= 1
        return result

    def run_sync(self, order: dict[str, Any]) -> dict[str, Any]:
        result = self.enter(order)
        if order.get("hold"):
            with self._lock:
                self.in_flight += 1
            self._released.wait()
            with self._lock:
                self.in_flight -= 1
        return result

    def hold(self) -> None:
        self._released.clear()
        self._released_async.clear()

    def release(self) -> None:
        self._released.set()
        self._released_async.set()


def order(order_id: str, **flags: bool) -> dict[str, Any]:
    """A small, realistic payload: the idempotency key is derived from all of it."""
    return {
        "order_id": order_id,
        "customer": "c-1029",
        "amount": 4200,
        "currency": "EUR",
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        **flags,
    }


class Contender(Protocol):
    name: str
    supports_waiting: bool
    supports_local_cache: bool
    max_in_flight: int | None
    """How many calls can be inside the body at once (None: no limit but memory)."""
    body: Body

    async def open(self, endpoint_url: str) -> None: ...

    async def call(self, payload: dict[str, Any], *, waiting: bool = False) -> Any: ...

    async def call_cached(self, payload: dict[str, Any]) -> Any: ...

    async def close(self) -> None: ...


class IdemstoreContender:
    name = "idemstore"
    supports_waiting = True
    supports_local_cache = True
    max_in_flight: int | None = None

    def __init__(self) -> None:
        self.body = Body()
        self._store: AsyncDynamoStore | None = None
        self._plain: Callable[..., Any] | None = None
        self._waiting: Callable[..., Any] | None = None
        self._cached: Callable[..., Any] | None = None

    async def open(self, endpoint_url: str) -> None:
        store = AsyncDynamoStore(
            TABLE_NAME,
            endpoint_url=endpoint_url,
            region_name=DUMMY_REGION,
            session=isolated_session(),
        )
        self._store = store
        body = self.body

        @idempotent_function(data_keyword_argument="order", persistence_store=store)
        async def process_order(order: dict[str, Any]) -> dict[str, Any]:
            return await body.run_async(order)

        @idempotent_function(
            data_keyword_argument="order",
            persistence_store=store,
            config=IdempotencyConfig(wait_for_in_progress_seconds=WAIT_SECONDS),
        )
        async def process_order_waiting(order: dict[str, Any]) -> dict[str, Any]:
            return await body.run_async(order)

        @idempotent_function(
            data_keyword_argument="order",
            persistence_store=store,
            config=IdempotencyConfig(use_local_cache=True),
        )
        async def process_order_cached(order: dict[str, Any]) -> dict[str, Any]:
            return await body.run_async(order)

        self._plain, self._waiting, self._cached = (
            process_order,
            process_order_waiting,
            process_order_cached,
        )
        await store.client()

    async def call(self, payload: dict[str, Any], *, waiting: bool = False) -> Any:
        function = self._waiting if waiting else self._plain
        assert function is not None
        return await function(order=payload)

    async def call_cached(self, payload: dict[str, Any]) -> Any:
        assert self._cached is not None
        return await self._cached(order=payload)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.aclose()


# The requests idemstore sends, written out by hand (same texts, same placeholders).
_ACQUIRE = (
    "attribute_not_exists(#n0) OR #n1 < :v0 OR #n2 = :v1 AND attribute_exists(#n3) AND #n3 < :v2"
)
_ACQUIRE_NAMES = {
    "#n0": "id",
    "#n1": "expiration",
    "#n2": "status",
    "#n3": "in_progress_expiration",
}
_COMPLETE_CONDITION = "#n0 = :v0 AND #n1 = :v1"
_COMPLETE_UPDATE = "SET #n0 = :v2, #n2 = :v3, #n3 = :v4 REMOVE #n4"
_COMPLETE_NAMES = {
    "#n0": "status",
    "#n1": "owner_token",
    "#n2": "expiration",
    "#n3": "data",
    "#n4": "data_zlib",
}
_RELEASE = "attribute_not_exists(#n0) OR #n1 = :v0"


RAW_KEY_PREFIX = "test-func.benchmarks.contenders.RawAiobotocoreContender.call.<locals>"
"""As long as idemstore's prefix for its function here, so the items are the same size;
the order id stands for the digest (no hashing: that is the library's own work)."""


class RawAiobotocoreContender:
    """Lock, run, complete (or release) with hand-written requests; no hashing, no models."""

    name = "raw-aiobotocore"
    supports_waiting = False
    supports_local_cache = False
    max_in_flight: int | None = None

    def __init__(self) -> None:
        self.body = Body()
        self._session: AioSession | None = None
        self._context: Any = None
        self._client: Any = None

    async def open(self, endpoint_url: str) -> None:
        self._session = isolated_session()
        # No config: aiobotocore's defaults (10 connections, parameter validation on).
        self._context = self._session.create_client(
            "dynamodb", region_name=DUMMY_REGION, endpoint_url=endpoint_url
        )
        self._client = await self._context.__aenter__()

    async def call(self, payload: dict[str, Any], *, waiting: bool = False) -> Any:
        client = self._client
        key = {"id": {"S": f"{RAW_KEY_PREFIX}#{payload['order_id']}"}}
        token = uuid.uuid4().hex
        now = time.time()
        try:
            await client.put_item(
                TableName=TABLE_NAME,
                Item={
                    **key,
                    "expiration": {"N": str(int(now) + 3600)},
                    "in_progress_expiration": {"N": str(int(now * 1000) + 60_000)},
                    "status": {"S": "INPROGRESS"},
                    "owner_token": {"S": token},
                },
                ConditionExpression=_ACQUIRE,
                ExpressionAttributeNames=_ACQUIRE_NAMES,
                ExpressionAttributeValues={
                    ":v0": {"N": str(int(now))},
                    ":v1": {"S": "INPROGRESS"},
                    ":v2": {"N": str(int(now * 1000))},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            # ALL_OLD adds the old item to the error, which the typed response does not declare.
            old = cast("dict[str, Any] | None", exc.response.get("Item"))
            if old and old["status"]["S"] == "COMPLETED":
                return json.loads(old["data"]["S"])
            raise
        try:
            result = await self.body.run_async(payload)
        except Exception:
            await client.delete_item(
                TableName=TABLE_NAME,
                Key=key,
                ConditionExpression=_RELEASE,
                ExpressionAttributeNames={"#n0": "id", "#n1": "owner_token"},
                ExpressionAttributeValues={":v0": {"S": token}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            raise
        await client.update_item(
            TableName=TABLE_NAME,
            Key=key,
            ConditionExpression=_COMPLETE_CONDITION,
            UpdateExpression=_COMPLETE_UPDATE,
            ExpressionAttributeNames=_COMPLETE_NAMES,
            ExpressionAttributeValues={
                ":v0": {"S": "INPROGRESS"},
                ":v1": {"S": token},
                ":v2": {"S": "COMPLETED"},
                ":v3": {"N": str(int(time.time()) + 3600)},
                ":v4": {"S": json.dumps(result, sort_keys=True)},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return result

    async def call_cached(self, payload: dict[str, Any]) -> Any:
        raise NotImplementedError("no local cache")

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)


class PowertoolsContender:
    """The sync Powertools utility, called from asyncio through threads."""

    supports_waiting = False
    supports_local_cache = True

    def __init__(self, name: str, threads: int | None) -> None:
        """``threads=None``: ``asyncio.to_thread`` (the default executor)."""
        self.name = name
        self.body = Body()
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bench") if threads else None
        self.max_in_flight: int | None = threads or _default_executor_threads()
        self._plain: Callable[..., Any] | None = None
        self._cached: Callable[..., Any] | None = None

    async def open(self, endpoint_url: str) -> None:
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
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=DUMMY_ACCESS_KEY,
            aws_secret_access_key=DUMMY_SECRET_KEY,
            region_name=DUMMY_REGION,
        )
        # One connection per thread, so the connection pool never makes a thread wait.
        client = session.client(
            "dynamodb",
            endpoint_url=endpoint_url,
            config=Config(max_pool_connections=max(10, self.max_in_flight or 0)),
        )
        body = self.body

        def process_order(order: dict[str, Any]) -> dict[str, Any]:
            return body.run_sync(order)

        def decorate(config: Any) -> Callable[..., Any]:
            layer = DynamoDBPersistenceLayer(table_name=TABLE_NAME, boto3_client=client)
            decorator = powertools_idempotent_function(
                data_keyword_argument="order", persistence_store=layer, config=config
            )
            wrapped: Callable[..., Any] = decorator(process_order)
            return wrapped

        self._plain = decorate(PowertoolsConfig())
        self._cached = decorate(PowertoolsConfig(use_local_cache=True))

    async def _in_thread(self, function: Callable[..., Any], payload: dict[str, Any]) -> Any:
        call = functools.partial(function, order=payload)
        if self._pool is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def call(self, payload: dict[str, Any], *, waiting: bool = False) -> Any:
        assert self._plain is not None
        return await self._in_thread(self._plain, payload)

    async def call_cached(self, payload: dict[str, Any]) -> Any:
        assert self._cached is not None
        return await self._in_thread(self._cached, payload)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _default_executor_threads() -> int:
    """The default executor's size (``ThreadPoolExecutor``'s documented default)."""
    return min(32, (os.cpu_count() or 1) + 4)


CONTENDER_NAMES = ("idemstore", "raw-aiobotocore", "powertools-to-thread", "powertools-16-threads")


def make_contender(name: str) -> Contender:
    if name == "idemstore":
        return IdemstoreContender()
    if name == "raw-aiobotocore":
        return RawAiobotocoreContender()
    if name == "powertools-to-thread":
        return PowertoolsContender(name, threads=None)
    if name == "powertools-16-threads":
        return PowertoolsContender(name, threads=16)
    raise ValueError(f"unknown contender {name!r}; known: {', '.join(CONTENDER_NAMES)}")
