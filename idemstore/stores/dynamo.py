"""``AsyncDynamoStore``: idempotency records in DynamoDB through aiobotocore.

The only module that talks to DynamoDB. Every operation is exactly one request;
expressions come from ``idemstore.expressions`` via the table schema.

Client ownership: a client passed in is used and never closed. Otherwise the
store creates one lazily on first use, owns it, and closes it in ``aclose()``
(or ``async with store``). An owned client belongs to the event loop it was made
in and is closed when that loop shuts down; used from another loop
(``asyncio.run`` per invocation), the store makes a new one instead of failing.

The store's state is OPEN until ``aclose()``, then CLOSED for good: a closed store
raises ``IdempotencyStoreClosedError`` rather than quietly opening a new client.
"""

from __future__ import annotations

import asyncio
import enum
import os
import platform
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import AsyncGeneratorType, TracebackType
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
    IdempotencyStoreClosedError,
    IdempotencyStoreUnreachableError,
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
from idemstore.retries import DEFAULT_CONNECT_ATTEMPTS, install_retry_policy, never_sent
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
    # Longer than a SYN retransmitted once (1 s, then 3 s) when a burst of new
    # connections overflows a listen queue: 2 s failed 500 concurrent first calls
    # on a loaded machine with "Connect timeout" on a local endpoint.
    connect_timeout=5,
    read_timeout=10,
)

BATCH_GET_LIMIT = 100
"""Keys per ``BatchGetItem`` request: DynamoDB's limit."""
BATCH_GET_ATTEMPTS = 3
"""Requests per chunk while DynamoDB leaves keys unprocessed; the rest stay unread."""
BATCH_GET_BACKOFF_SECONDS = 0.05


def merge_client_config(base: AioConfig, override: AioConfig | None = None) -> AioConfig:
    """A new config: ``base`` with the options given in ``override``, dicts merged key by key.

    botocore's ``Config.merge`` replaces a dict option whole, so
    ``retries={"max_attempts": 1}`` would lose the default's ``mode``. Here nested
    dicts (``retries``, ``s3``, ``proxies_config``, ``connector_args``...) are merged
    recursively, the override's keys winning; other options are replaced. Every
    dict in the result is a new one, never shared with ``base`` or ``override``.
    """
    options = {name: _merged(None, value) for name, value in _given_options(base).items()}
    if override is not None:
        for name, value in _given_options(override).items():
            options[name] = _merged(options.get(name), value)
    return AioConfig(**options)


def _given_options(config: AioConfig) -> dict[str, Any]:
    """The options a config was built with: what ``Config.merge`` itself reads."""
    options: dict[str, Any] = config._user_provided_options  # type: ignore[attr-defined]  # missing from the stubs
    return options


def _merged(ours: Any, theirs: Any) -> Any:
    if not isinstance(theirs, Mapping):
        return theirs
    merged = dict(ours) if isinstance(ours, Mapping) else {}
    for key, value in theirs.items():
        merged[key] = _merged(merged.get(key), value)
    return merged


class StoreState(enum.Enum):
    """Where a store is in its life: OPEN until ``aclose()``, then CLOSED for good."""

    OPEN = "open"
    CLOSED = "closed"


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
        connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS,
    ) -> None:
        if not table_name:
            raise IdempotencyConfigurationError("table_name must be a non-empty string")
        if isinstance(connect_attempts, bool) or not isinstance(connect_attempts, int):
            raise IdempotencyConfigurationError(
                f"connect_attempts must be an int, got {type(connect_attempts).__name__}"
            )
        if connect_attempts < 1:
            raise IdempotencyConfigurationError(
                f"connect_attempts must be at least 1, got {connect_attempts}"
            )
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
        self._client_config = merge_client_config(DEFAULT_CLIENT_CONFIG, client_config)
        self._connect_attempts = connect_attempts
        self._owned: _OwnedClient | None = None
        self._state = StoreState.OPEN

    @property
    def schema(self) -> TableSchema:
        return self._schema

    @property
    def state(self) -> StoreState:
        return self._state

    def __repr__(self) -> str:
        return f"AsyncDynamoStore({self.table_name!r}, endpoint_url={self.endpoint_url!r})"

    # --- client lifecycle ---------------------------------------------------

    async def client(self) -> DynamoDBClient:
        """The client in use: the caller's, or one owned for the running loop."""
        if self._state is StoreState.CLOSED:
            raise IdempotencyStoreClosedError(
                f"the store of table {self.table_name!r} is closed; a closed store is not "
                "reopened: build a new one"
            )
        if self._given_client is not None:
            return self._given_client
        loop = asyncio.get_running_loop()
        owned = self._owned
        if owned is None or owned.loop is not loop:
            if owned is not None:
                owned.abandon()
            owned = self._owned = _OwnedClient(loop, self._client_lifetime())
        return await owned.ready()

    async def open(self) -> None:
        """Open the client now rather than on the first record operation.

        For the Lambda INIT phase (see ``lambda_entry_point(open_stores=...)``): the
        client is built (credentials, service model) and so is its HTTP session,
        before the first invocation. It belongs to the running loop, as
        ``client()``'s does. Sends no request.
        """
        client = await self.client()
        # aiobotocore makes its HTTP session on the first request, reading the CA
        # bundle for its TLS context in a thread: most of a first request's CPU.
        # Private to aiobotocore (pinned below 3.11); skipped if it changes shape.
        http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        make_session = getattr(http_session, "_get_session", None)
        proxies = getattr(http_session, "_proxy_config", None)
        if make_session is not None and proxies is not None:
            await make_session(proxies.proxy_url_for(client.meta.endpoint_url))

    async def _client_lifetime(self) -> AsyncGenerator[DynamoDBClient, None]:
        """Open a client, yield it, close it when closed (by ``aclose()`` or by the loop)."""
        session = self._session or get_session()
        context = session.create_client(
            "dynamodb",
            # botocore reads only AWS_DEFAULT_REGION; AWS_REGION is what Lambda and
            # the other SDKs set, so honour it too.
            region_name=self.region_name or os.environ.get("AWS_REGION") or None,
            endpoint_url=self.endpoint_url,
            # A copy: botocore rewrites the ``retries`` dict of the config it is given.
            config=merge_client_config(self._client_config),
        )
        try:
            client = await context.__aenter__()
        except NoRegionError as exc:
            raise IdempotencyConfigurationError(
                "no AWS region: pass region_name= or set AWS_REGION / AWS_DEFAULT_REGION"
            ) from exc
        except ValueError as exc:  # botocore's "Invalid endpoint", from the option or the env
            raise IdempotencyConfigurationError(
                f"invalid DynamoDB endpoint ({exc}): check endpoint_url= or "
                "AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL"
            ) from exc
        try:
            install_retry_policy(client, connect_attempts=self._connect_attempts)
            yield client
        finally:
            await context.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Close the store for good, and the client it owns; a caller's client is left open."""
        self._state = StoreState.CLOSED
        await self.drop_client()

    async def drop_client(self) -> None:
        """Close the client the store owns, if any, and stay open: the next operation
        opens a new one, reading the environment afresh (for test fixtures that point
        a module-level store somewhere for one test). A caller's client is left open."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()

    async def __aenter__(self) -> Self:
        if self._state is StoreState.CLOSED:
            raise IdempotencyStoreClosedError(
                f"the store of table {self.table_name!r} is closed and cannot be entered again"
            )
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

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]:
        """The records found, by key; missing keys are absent.

        ``BatchGetItem`` with consistent reads: duplicate keys read once (DynamoDB
        rejects them), one request per hundred keys. Keys DynamoDB leaves
        unprocessed (throttling, the 16 MB response limit) are asked again a few
        times, then left absent for the caller's per-key path.
        """
        keys = list(dict.fromkeys(idempotency_keys))
        chunks = [keys[i : i + BATCH_GET_LIMIT] for i in range(0, len(keys), BATCH_GET_LIMIT)]
        found: dict[str, DataRecord] = {}
        for chunk_records in await asyncio.gather(*(self._get_chunk(c) for c in chunks)):
            found.update(chunk_records)
        return found

    async def _get_chunk(self, keys: list[str]) -> dict[str, DataRecord]:
        client = await self.client()
        request: Any = {
            self.table_name: {
                "Keys": [self._schema.key(key) for key in keys],
                "ConsistentRead": True,
            }
        }
        found: dict[str, DataRecord] = {}
        for attempt in range(BATCH_GET_ATTEMPTS):
            if attempt:
                await asyncio.sleep(BATCH_GET_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                response = await client.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise self._translate(exc, "BatchGetItem", keys[0]) from exc
            for item in response.get("Responses", {}).get(self.table_name, []):
                record = from_item(self._schema, item)
                found[record.idempotency_key] = record
            request = response.get("UnprocessedKeys") or None
            if not request:
                break
        return found

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
        return await self._current(idempotency_key, None)

    def _translate(
        self, exc: ClientError | BotoCoreError, operation: str, idempotency_key: str
    ) -> IdempotencyPersistenceLayerError:
        if never_sent(exc):
            return IdempotencyStoreUnreachableError(
                f"{operation} of {idempotency_key!r} on table {self.table_name!r} was never "
                f"sent, nothing was written: {exc}",
                endpoint_url=self.endpoint_url,
            )
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
    """A client the store opened, bound to the loop it was opened in and closed with it.

    The client lives in an async generator (``_client_lifetime``) whose ``finally``
    closes it. A running loop tracks the async generators first stepped in it and
    closes them when it shuts down (``loop.shutdown_asyncgens()``, which
    ``asyncio.run``, ``asyncio.Runner``, pytest-asyncio and
    ``lambda_entry_point.close`` call), so a loop per call leaks no HTTP session
    even when ``aclose()`` is never called.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, lifetime: AsyncGenerator[DynamoDBClient, None]
    ) -> None:
        self.loop = loop
        self._lifetime = lifetime
        # A task, so concurrent first callers share one client instead of racing.
        self._task: asyncio.Task[DynamoDBClient] = loop.create_task(self._open())

    async def _open(self) -> DynamoDBClient:
        return await anext(self._lifetime)

    async def ready(self) -> DynamoDBClient:
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()  # opened: every call after the first comes here
        return await asyncio.shield(task)

    async def close(self) -> None:
        if self.loop is not asyncio.get_running_loop():
            self.abandon()
            return
        await asyncio.wait([self._task])  # an opening under way ends first, however it ends
        if not self._task.cancelled():
            self._task.exception()  # seen here, so never logged as unretrieved
        await self._lifetime.aclose()

    def abandon(self) -> None:
        """Let go of a client whose loop is not the running one."""
        if not self.loop.is_closed():
            if not self._task.done():
                self._task.cancel()
            # Still tracked by its loop, which closes it when it shuts down.
            return
        lifetime = self._lifetime
        if isinstance(lifetime, AsyncGeneratorType) and lifetime.ag_frame is None:
            return  # closed with its loop
        if self._task.done() and not self._task.cancelled() and self._task.exception() is None:
            _forget_sessions_of_closed_loop(self._task.result())


def _forget_sessions_of_closed_loop(client: DynamoDBClient) -> None:
    """Mark the HTTP sessions of a client whose loop was closed without shutting down
    its async generators (``loop.close()`` alone) as closed.

    The one place that reaches into aiobotocore and aiohttp internals. Their close
    needs the loop, which is gone: without this, each session warns "Unclosed client
    session" when collected. The sockets themselves can only be closed by their
    loop, so such a loop still leaks them; ``asyncio.run`` never does.
    """
    http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    sessions = getattr(http_session, "_sessions", None) or {}
    for session in list(sessions.values()):
        connector = session.connector
        if connector is not None:
            connector._close()  # on a closed loop: only marks the connector closed
