"""``AsyncDynamoStore``: idempotency records in DynamoDB through aiobotocore.

The only module that talks to DynamoDB. Every operation is exactly one request;
expressions come from ``idemstore.expressions`` via the table schema.

Client ownership: a client passed in is used and never closed. Otherwise the
store creates one lazily on first use, owns it, and closes it in ``aclose()``
(or ``async with store``). An owned client belongs to the event loop it was made
in; used from another loop (``asyncio.run`` per invocation), the store makes a
new one instead of failing.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiobotocore
import botocore
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from idemstore.codec import from_item, to_item
from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyItemNotFoundError,
    IdempotencyItemTooLargeError,
    IdempotencyPersistenceLayerError,
    IdempotencyTableNotFoundError,
    IdempotencyTransactionLimitError,
)
from idemstore.expressions import AttributeValue, CompiledRequest, compile_request
from idemstore.lock_rules import (
    acquire_request,
    completion_request,
    owned_in_progress,
    owned_or_gone,
    renewal_update,
)
from idemstore.records import DataRecord
from idemstore.stores.contract import (
    APPLIED,
    WriteOutcome,
    fence_token,
    settle_fenced,
    settle_put,
)
from idemstore.table import TableSchema
from idemstore.transactions import (
    CONDITION_FAILED,
    StagedWrite,
    client_request_token,
    reasons_from_response,
    settle_transaction,
)

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

USER_AGENT = (
    f"idemstore aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__} "
    f"Python/{platform.python_version()} {platform.system()}/{platform.release()}"
)
"""Built once: botocore otherwise rebuilds its User-Agent twice for every request,
about a tenth of a request's client CPU. A ``client_config`` may set its own."""

DEFAULT_CLIENT_CONFIG = AioConfig(
    # The store's requests are built by the expression module and known-good;
    # skipping botocore's per-call parameter validation saves client CPU.
    parameter_validation=False,
    user_agent=USER_AGENT,
    retries={"mode": "standard", "max_attempts": 4},
    max_pool_connections=64,
    tcp_keepalive=True,
    connect_timeout=5,
    read_timeout=10,
)


class AsyncDynamoStore:
    """Idempotency records in one DynamoDB table.

    The constructor does no I/O and builds no client. Attribute options left
    at None take ``TableSchema``'s defaults, which are Powertools' (``id``,
    ``expiration``, ...; ``static_pk_value`` is ``idempotency#`` plus the Lambda
    function's name).
    """

    def __init__(
        self,
        table_name: str,
        *,
        key_attr: str | None = None,
        static_pk_value: str | None = None,
        sort_key_attr: str | None = None,
        expiry_attr: str | None = None,
        in_progress_expiry_attr: str | None = None,
        status_attr: str | None = None,
        data_attr: str | None = None,
        validation_key_attr: str | None = None,
        owner_token_attr: str | None = None,
        compressed_data_attr: str | None = None,
        compress_threshold_bytes: int | None = None,
        client: DynamoDBClient | None = None,
        session: AioSession | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client_config: AioConfig | None = None,
    ) -> None:
        if not table_name:
            raise IdempotencyConfigurationError("table_name must be a non-empty string")
        self.table_name = table_name
        self._schema = TableSchema.build(
            key_attr=key_attr,
            sort_key_attr=sort_key_attr,
            static_pk_value=static_pk_value,
            expiry_attr=expiry_attr,
            in_progress_expiry_attr=in_progress_expiry_attr,
            status_attr=status_attr,
            data_attr=data_attr,
            validation_key_attr=validation_key_attr,
            owner_token_attr=owner_token_attr,
            compressed_data_attr=compressed_data_attr,
            compress_threshold_bytes=compress_threshold_bytes,
        )
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._given_client = client
        self._session = session
        self._client_config = (
            DEFAULT_CLIENT_CONFIG.merge(client_config) if client_config else DEFAULT_CLIENT_CONFIG
        )
        self._owned: _OwnedClient | None = None

    @property
    def schema(self) -> TableSchema:
        return self._schema

    def __repr__(self) -> str:
        return f"AsyncDynamoStore({self.table_name!r}, endpoint_url={self.endpoint_url!r})"

    # --- client lifecycle ---------------------------------------------------

    async def client(self) -> DynamoDBClient:
        """The client in use: the caller's, or one owned for the running loop."""
        if self._given_client is not None:
            return self._given_client
        loop = asyncio.get_running_loop()
        owned = self._owned
        if owned is None or owned.loop is not loop:
            if owned is not None:
                owned.abandon()
            owned = self._owned = _OwnedClient(loop, self._open_client())
        return await owned.ready()

    async def _open_client(self) -> tuple[DynamoDBClient, Any]:
        session = self._session or get_session()
        context = session.create_client(
            "dynamodb",
            # botocore reads only AWS_DEFAULT_REGION; AWS_REGION is what Lambda and
            # the other SDKs set, so honour it too.
            region_name=self.region_name or os.environ.get("AWS_REGION") or None,
            endpoint_url=self.endpoint_url,
            config=self._client_config,
        )
        try:
            client = await context.__aenter__()
        except NoRegionError as exc:
            raise IdempotencyConfigurationError(
                "no AWS region: pass region_name= or set AWS_REGION / AWS_DEFAULT_REGION"
            ) from exc
        return client, context

    async def aclose(self) -> None:
        """Close the client the store owns; a caller's client is left open."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- record operations ----------------------------------------------------

    async def get_record(self, idempotency_key: str) -> DataRecord:
        client = await self.client()
        try:
            response = await client.get_item(
                TableName=self.table_name,
                Key=self._schema.key(idempotency_key),
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "GetItem", idempotency_key) from exc
        item = response.get("Item")
        if item is None:
            raise IdempotencyItemNotFoundError(idempotency_key)
        return from_item(self._schema, item)

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        outcome = await self._write_with_old(
            "PutItem",
            record.idempotency_key,
            acquire_request(self._schema, now),
            item=to_item(self._schema, record),
        )
        settle_put(record, outcome)

    async def update_record(self, record: DataRecord) -> None:
        outcome = await self._write_with_old(
            "UpdateItem",
            record.idempotency_key,
            completion_request(self._schema, record, fence_token(record)),
        )
        settle_fenced(record, outcome, "complete")

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        outcome = await self._write_with_old(
            "UpdateItem",
            record.idempotency_key,
            compile_request(
                condition=owned_in_progress(self._schema, fence_token(record)),
                update=renewal_update(self._schema, record, in_progress_expiry_timestamp),
            ),
        )
        settle_fenced(record, outcome, "renew the lease of")

    async def delete_record(self, record: DataRecord) -> None:
        outcome = await self._write_with_old(
            "DeleteItem",
            record.idempotency_key,
            compile_request(
                condition=owned_or_gone(self._schema, fence_token(record), record.status)
            ),
        )
        settle_fenced(record, outcome, "release")

    async def complete_with_writes(
        self, record: DataRecord | None, writes: Sequence[StagedWrite]
    ) -> None:
        """The completion and the staged writes in one ``TransactWriteItems``, the
        completion first (see ``idemstore.transactions.TransactionalStore``).

        The request token derives from the lock's owner token, so every attempt of
        one completion is the same transaction to DynamoDB: botocore's retries of an
        attempt whose answer was lost are applied once. A retry refused because the
        record already shows our own completion proves the first attempt applied.
        """
        items = [write.request() for write in writes]
        kwargs: dict[str, Any] = {}
        key = "<no record>"
        if record is not None:
            key = record.idempotency_key
            request = completion_request(self._schema, record, fence_token(record))
            completion = {
                "TableName": self.table_name,
                "Key": self._schema.key(key),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                **request.as_kwargs(),
            }
            items.insert(0, {"Update": completion})
            kwargs["ClientRequestToken"] = client_request_token(fence_token(record))
        client = await self.client()
        try:
            # The pure transactions module builds plain dicts, not the stubs' TypedDicts.
            await client.transact_write_items(TransactItems=items, **kwargs)  # type: ignore[arg-type]
        except ClientError as exc:
            code = _error_code(exc)
            if code == "TransactionCanceledException":
                raw = exc.response.get("CancellationReasons")
                reasons = reasons_from_response(raw, len(items))
                current = None
                if record is not None and reasons[0].code == CONDITION_FAILED:
                    current = await self._current(key, reasons[0].item)
                settle_transaction(record, writes, reasons, current)
                return
            message = str(exc)
            if code == "ResourceNotFoundException":
                # Any of the tables may be the missing one: name them all, not only ours.
                tables = sorted({self.table_name, *(write.table for write in writes)})
                raise IdempotencyPersistenceLayerError(
                    f"TransactWriteItems refused: one of the tables {tables} does not exist "
                    f"at {self.endpoint_url or self.region_name}: {message}"
                ) from exc
            if code == "ValidationException" and "multiple operations on one item" in message:
                raise IdempotencyTransactionLimitError(
                    f"TransactWriteItems refused: {message}", limit="same_item"
                ) from exc
            raise self._translate(exc, "TransactWriteItems", key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "TransactWriteItems", key) from exc

    async def _current(
        self, idempotency_key: str, item: Mapping[str, Any] | None
    ) -> DataRecord | None:
        """The record a failed condition was checked against: returned, or read."""
        if item:
            return from_item(self._schema, item)
        try:
            return await self.get_record(idempotency_key)
        except IdempotencyItemNotFoundError:
            return None

    async def purge_record(self, idempotency_key: str) -> None:
        """Delete a record whatever its state or owner.

        An operator's action (the CLI's ``release --force``); the engine never
        uses it, since it ignores the lock's fence.
        """
        client = await self.client()
        try:
            await client.delete_item(
                TableName=self.table_name, Key=self._schema.key(idempotency_key)
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "DeleteItem", idempotency_key) from exc

    # --- plumbing -------------------------------------------------------------

    async def _write(
        self,
        operation: str,
        idempotency_key: str,
        request: CompiledRequest,
        *,
        item: dict[str, AttributeValue] | None = None,
    ) -> WriteOutcome:
        """One conditional write, with the old item returned when the condition fails.

        A put when given the item, else an update when the request has one, else a delete.
        """
        client = await self.client()
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            **request.as_kwargs(),
        }
        try:
            if item is not None:
                await client.put_item(Item=item, **kwargs)
            elif request.update is not None:
                await client.update_item(Key=self._schema.key(idempotency_key), **kwargs)
            else:
                await client.delete_item(Key=self._schema.key(idempotency_key), **kwargs)
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise self._translate(exc, operation, idempotency_key) from exc
            # The typed response omits "Item", which ALL_OLD adds to this error.
            old_item: Mapping[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            return from_item(self._schema, old_item) if old_item else None
        except BotoCoreError as exc:
            raise self._translate(exc, operation, idempotency_key) from exc
        return APPLIED

    async def _write_with_old(
        self,
        operation: str,
        idempotency_key: str,
        request: CompiledRequest,
        *,
        item: dict[str, AttributeValue] | None = None,
    ) -> WriteOutcome:
        """A conditional write whose failed condition always comes with the record now stored.

        A server that ignores ``ReturnValuesOnConditionCheckFailure`` answers
        without the old item; one consistent read then tells a record that is
        gone from our own write whose first answer was lost (a retried put or
        completion), so every caller judges the same record.
        """
        outcome = await self._write(operation, idempotency_key, request, item=item)
        if outcome is not None:
            return outcome
        try:
            return await self.get_record(idempotency_key)
        except IdempotencyItemNotFoundError:
            return None

    def _translate(
        self, exc: ClientError | BotoCoreError, operation: str, idempotency_key: str
    ) -> IdempotencyPersistenceLayerError:
        code = _error_code(exc) if isinstance(exc, ClientError) else None
        if code == "ResourceNotFoundException":
            return IdempotencyTableNotFoundError(
                self.table_name, region_name=self.region_name, endpoint_url=self.endpoint_url
            )
        message = str(exc)
        if code == "ValidationException" and "size" in message and "exceeded" in message:
            return IdempotencyItemTooLargeError(
                f"{operation} of {idempotency_key!r} refused: {message}",
                idempotency_key=idempotency_key,
            )
        return IdempotencyPersistenceLayerError(
            f"{operation} of {idempotency_key!r} on table {self.table_name!r} failed: {message}"
        )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _OwnedClient:
    """A client the store opened, bound to the loop it was opened in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, opening: Any) -> None:
        self.loop = loop
        # A task, so concurrent first callers share one client instead of racing.
        self._task: asyncio.Task[tuple[DynamoDBClient, Any]] = loop.create_task(opening)

    async def ready(self) -> DynamoDBClient:
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()[0]  # opened: every call after the first comes here
        client, _ = await asyncio.shield(task)
        return client

    async def close(self) -> None:
        if self.loop is not asyncio.get_running_loop():
            self.abandon()
            return
        try:
            _, context = await self._task
        except (IdempotencyConfigurationError, BotoCoreError, OSError):
            return  # never opened: nothing to close
        await context.__aexit__(None, None, None)

    def abandon(self) -> None:
        """Drop a client whose loop is gone, closing its sockets without that loop."""
        if not self._task.done() or self._task.cancelled() or self._task.exception():
            self._task.cancel()
            return
        client, _ = self._task.result()
        http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        sessions = getattr(http_session, "_sessions", None) or {}
        # aiohttp would warn about the unclosed session when garbage-collected;
        # its connector's close needs no loop once that loop is closed.
        for session in list(sessions.values()):
            connector = session.connector
            if connector is not None and self.loop.is_closed():
                connector._close()
