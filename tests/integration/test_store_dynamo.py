"""What only ``AsyncDynamoStore`` does: request counts, races, errors, client lifecycle."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import store_records
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from store_records import NOW, NOW_MS, completed

from idemstore.codec import to_item
from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyItemTooLargeError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyStoreClosedError,
    IdempotencyStoreUnreachableError,
    IdempotencyTableNotFoundError,
)
from idemstore.idempotency import idempotent_function
from idemstore.records import DataRecord
from idemstore.stores.dynamo import DEFAULT_CLIENT_CONFIG, AsyncDynamoStore, StoreState
from idemstore.tables import create_table
from idemstore.testing import DUMMY_REGION, MotoEndpoint, RequestLog, isolated_session

FAST_FAILURE = AioConfig(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)


def lock(token: str, *, key: str = "fn.mod.f#k1", **changes: Any) -> DataRecord:
    """A lock with no payload hash."""
    return store_records.lock(token, key=key, **{"payload_hash": None, **changes})


def table_name() -> str:
    return f"idemstore-test-{uuid.uuid4().hex[:12]}"


def counting_create_client(
    session: AioSession, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Record every client the session is asked to build."""
    calls: list[dict[str, Any]] = []
    original: Callable[..., Any] = session.create_client

    def create_client(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(session, "create_client", create_client)
    return calls


def closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connections are refused


# --- request counts -------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_operation_is_exactly_one_request(dynamo_store: AsyncDynamoStore) -> None:
    log = RequestLog().attach(await dynamo_store.client())
    ours, theirs = lock("t1"), lock("t2")

    async def requests_of(operation: Any) -> list[str]:
        log.clear()
        await operation
        return list(log.operations)

    assert await requests_of(dynamo_store.put_record(ours, now=NOW)) == ["PutItem"]
    assert await requests_of(dynamo_store.get_record(ours.idempotency_key)) == ["GetItem"]
    renewal = dynamo_store.renew_lease(ours, in_progress_expiry_timestamp=NOW_MS + 1)
    assert await requests_of(renewal) == ["UpdateItem"]
    assert await requests_of(dynamo_store.update_record(completed(ours))) == ["UpdateItem"]

    log.clear()
    with pytest.raises(IdempotencyItemAlreadyExistsError) as caught:
        await dynamo_store.put_record(theirs, now=NOW)
    assert log.operations == ["PutItem"]  # the old record came with the refusal: no GetItem
    assert caught.value.old_data_record == completed(
        replace(ours, in_progress_expiry_timestamp=NOW_MS + 1)
    )

    log.clear()
    with pytest.raises(IdempotencyLeaseLostError):
        await dynamo_store.update_record(completed(theirs))
    with pytest.raises(IdempotencyLeaseLostError):
        await dynamo_store.delete_record(theirs)
    assert log.operations == ["UpdateItem", "DeleteItem"]

    released = lock("t3", key="fn.mod.f#k2")
    await dynamo_store.put_record(released, now=NOW)
    assert await requests_of(dynamo_store.delete_record(released)) == ["DeleteItem"]
    log.clear()
    with pytest.raises(IdempotencyItemNotFoundError):
        await dynamo_store.get_record(released.idempotency_key)
    assert log.operations == ["GetItem"]


@pytest.mark.asyncio
async def test_concurrent_puts_of_one_key_have_exactly_one_winner(
    dynamo_store: AsyncDynamoStore,
) -> None:
    log = RequestLog().attach(await dynamo_store.client())
    contenders = [lock(f"token-{i}") for i in range(50)]
    outcomes = await asyncio.gather(
        *(dynamo_store.put_record(c, now=NOW) for c in contenders), return_exceptions=True
    )
    winners = [c for c, outcome in zip(contenders, outcomes, strict=True) if outcome is None]
    assert len(winners) == 1
    (winner,) = winners
    losses = [outcome for outcome in outcomes if outcome is not None]
    assert len(losses) == 49
    for loss in losses:
        assert isinstance(loss, IdempotencyItemAlreadyExistsError)
        assert loss.old_data_record == winner
    assert log.operations == ["PutItem"] * 50
    assert await dynamo_store.get_record(winner.idempotency_key) == winner


# --- errors ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_missing_table_names_table_and_endpoint(moto_server: MotoEndpoint) -> None:
    missing = table_name()
    async with moto_server.store(missing) as store:
        with pytest.raises(IdempotencyTableNotFoundError) as caught:
            await store.get_record("fn.mod.f#k1")
        with pytest.raises(IdempotencyTableNotFoundError):
            await store.put_record(lock("t1"), now=NOW)
    error = caught.value
    assert (error.table_name, error.endpoint_url) == (missing, moto_server.url)
    assert missing in str(error)
    assert moto_server.url in str(error)
    assert isinstance(error, IdempotencyPersistenceLayerError)
    assert isinstance(error.__cause__, ClientError)


def unreachable_store(**kwargs: Any) -> AsyncDynamoStore:
    """A store whose endpoint refuses every connection (default retry settings)."""
    return AsyncDynamoStore(
        table_name(),
        endpoint_url=f"http://127.0.0.1:{closed_local_port()}",
        region_name=DUMMY_REGION,
        session=isolated_session(),
        **kwargs,
    )


@pytest.mark.asyncio
async def test_an_unreachable_endpoint_fails_fast_and_says_nothing_was_sent() -> None:
    async with unreachable_store() as store:
        log = RequestLog().attach(await store.client())
        with pytest.raises(IdempotencyStoreUnreachableError) as caught:
            await store.get_record("fn.mod.f#k1")
        assert log.operations == ["GetItem"] * 2  # two connect attempts, not five
        log.clear()
        with pytest.raises(IdempotencyStoreUnreachableError) as caught_write:
            await store.put_record(lock("t1"), now=NOW)
        assert log.operations == ["PutItem"] * 2
    for error in (caught.value, caught_write.value):
        assert isinstance(error, IdempotencyPersistenceLayerError)
        assert isinstance(error.__cause__, EndpointConnectionError)
        assert "fn.mod.f#k1" in str(error)
        assert error.endpoint_url == store.endpoint_url


@pytest.mark.parametrize("connect_attempts", [1, 3])
@pytest.mark.asyncio
async def test_connect_attempts_are_tunable(connect_attempts: int) -> None:
    async with unreachable_store(connect_attempts=connect_attempts) as store:
        log = RequestLog().attach(await store.client())
        with pytest.raises(IdempotencyStoreUnreachableError):
            await store.put_record(lock("t1"), now=NOW)
    assert log.operations == ["PutItem"] * connect_attempts


@pytest.mark.asyncio
async def test_a_decorated_call_on_a_dead_store_sends_no_release() -> None:
    runs: list[int] = []
    async with unreachable_store() as store:
        log = RequestLog().attach(await store.client())

        @idempotent_function(data_keyword_argument="order", persistence_store=store)
        async def place_order(order: dict[str, int]) -> int:
            runs.append(order["id"])
            return order["id"]

        with pytest.raises(IdempotencyStoreUnreachableError):
            await place_order(order={"id": 1})
    # The put never left: there is no lock whose release the engine should try.
    assert log.operations == ["PutItem"] * 2
    assert runs == []


@pytest.mark.asyncio
async def test_a_connect_failure_after_a_sent_attempt_is_not_called_unreachable() -> None:
    # The first attempt reaches a server that reads it and hangs up, then stops
    # listening: the retry is refused. The first attempt may have been applied, so
    # the error must not claim that nothing was written.
    received: list[bytes] = []

    async def read_then_vanish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head)
        server.close()  # stop listening first, so the retry finds nothing
        writer.close()

    server = await asyncio.start_server(read_then_vanish, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = AsyncDynamoStore(
        table_name(),
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=DUMMY_REGION,
        session=isolated_session(),
    )
    async with store:
        log = RequestLog().attach(await store.client())
        with pytest.raises(IdempotencyPersistenceLayerError) as caught:
            await store.put_record(lock("t1"), now=NOW)
    await server.wait_closed()
    assert type(caught.value) is IdempotencyPersistenceLayerError
    assert isinstance(caught.value.__cause__, EndpointConnectionError)
    assert len(received) == 1
    assert log.operations == ["PutItem"] * 3  # sent, then two refused connects


@pytest.mark.asyncio
async def test_an_item_over_the_size_limit_is_refused(moto_server: MotoEndpoint) -> None:
    # Random text holding 500 KiB of entropy: over 400 KB even compressed.
    async with moto_server.store(table_name()) as store:
        await create_table(store)
        huge = random.Random(7).randbytes(500 * 1024).hex()
        with pytest.raises(IdempotencyItemTooLargeError) as caught_put:
            await store.put_record(completed(lock("t1"), json.dumps(huge)), now=NOW)
        held = lock("t1", key="fn.mod.f#k2")
        await store.put_record(held, now=NOW)
        with pytest.raises(IdempotencyItemTooLargeError) as caught_update:
            await store.update_record(completed(held, json.dumps(huge)))
        # Not asserted: that the refused update left the item unchanged. DynamoDB
        # rejects the whole request; moto applies the other SETs before refusing.
    assert caught_put.value.idempotency_key == "fn.mod.f#k1"
    assert caught_update.value.idempotency_key == "fn.mod.f#k2"
    for error in (caught_put.value, caught_update.value):
        assert isinstance(error.__cause__, ClientError)
        assert error.__cause__.response["Error"]["Code"] == "ValidationException"


@pytest.mark.asyncio
async def test_a_large_compressible_result_is_stored_compressed(
    dynamo_store: AsyncDynamoStore,
) -> None:
    held = lock("t1")
    await dynamo_store.put_record(held, now=NOW)
    result = json.dumps([{"row": i, "text": "lorem ipsum " * 8} for i in range(10_000)])
    await dynamo_store.update_record(completed(held, result))
    client = await dynamo_store.client()
    raw = await client.get_item(
        TableName=dynamo_store.table_name, Key=dynamo_store.schema.key(held.idempotency_key)
    )
    item = raw["Item"]
    assert "data" not in item
    assert len(item["data_zlib"]["B"]) < len(result) // 20
    assert (await dynamo_store.get_record(held.idempotency_key)).response_data == result


CORRUPT = [
    pytest.param({"status": {"S": "BOGUS"}}, "status", id="unknown-status"),
    pytest.param({"data": {"N": "1"}}, "data", id="data-a-number"),
    pytest.param({"expiration": {"S": "tomorrow"}}, "expiration", id="expiry-a-string"),
    pytest.param({"data_zlib": {"B": b"not zlib"}}, "data_zlib", id="compressed-garbage"),
]


CORRUPT_KEY = "fn.mod.f#corrupt"


async def plant_corrupt_item(store: AsyncDynamoStore, changes: dict[str, Any]) -> None:
    """Store a completed record for ``CORRUPT_KEY`` with ``changes`` made to its item."""
    client = await store.client()
    item = {**to_item(store.schema, completed(lock("t1", key=CORRUPT_KEY))), **changes}
    await client.put_item(TableName=store.table_name, Item=item)


@pytest.mark.parametrize(("changes", "attribute"), CORRUPT)
@pytest.mark.asyncio
async def test_a_corrupt_item_is_reported_by_get(
    dynamo_store: AsyncDynamoStore, changes: dict[str, Any], attribute: str
) -> None:
    await plant_corrupt_item(dynamo_store, changes)
    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        await dynamo_store.get_record(CORRUPT_KEY)
    assert (caught.value.idempotency_key, caught.value.attribute) == (CORRUPT_KEY, attribute)


@pytest.mark.parametrize(
    ("changes", "attribute"),
    # A corrupt expiry lets any acquire fail its condition, so the old item comes back.
    [case for case in CORRUPT if case.id != "expiry-a-string"],
)
@pytest.mark.asyncio
async def test_a_corrupt_item_is_reported_by_a_refused_put(
    dynamo_store: AsyncDynamoStore, changes: dict[str, Any], attribute: str
) -> None:
    await plant_corrupt_item(dynamo_store, changes)
    log = RequestLog().attach(await dynamo_store.client())
    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        await dynamo_store.put_record(lock("t2", key=CORRUPT_KEY), now=NOW)
    assert (caught.value.idempotency_key, caught.value.attribute) == (CORRUPT_KEY, attribute)
    assert log.operations == ["PutItem"]


# --- client lifecycle -------------------------------------------------------------


def test_one_store_serves_successive_event_loops(moto_server: MotoEndpoint) -> None:
    # As in Lambda: a store built at module scope, each invocation in its own asyncio.run.
    store = moto_server.store(table_name())
    held = lock("t1")

    async def first_invocation() -> object:
        await create_table(store)
        await store.put_record(held, now=NOW)
        return await store.client()

    async def second_invocation() -> tuple[DataRecord, object]:
        await store.update_record(completed(held))
        return await store.get_record(held.idempotency_key), await store.client()

    first_client = asyncio.run(first_invocation())
    found, second_client = asyncio.run(second_invocation())
    assert found == completed(held)
    assert second_client is not first_client  # the first one belonged to a closed loop
    asyncio.run(store.aclose())


@pytest.mark.asyncio
async def test_a_callers_client_is_used_and_left_open(moto_server: MotoEndpoint) -> None:
    name = table_name()
    async with moto_server.session().create_client(
        "dynamodb", endpoint_url=moto_server.url, region_name=moto_server.region_name
    ) as client:
        async with AsyncDynamoStore(name, client=client) as store:
            assert await store.client() is client
            await create_table(store)
            await store.put_record(lock("t1"), now=NOW)
        described = await client.describe_table(TableName=name)  # still open
        assert described["Table"]["TableName"] == name
        with pytest.raises(IdempotencyStoreClosedError):
            await store.get_record("fn.mod.f#k1")
        # The caller's client keeps the caller's retry settings: nothing was installed.
        another = AsyncDynamoStore(name, client=client)
        assert await another.get_record("fn.mod.f#k1") == lock("t1")


@pytest.mark.asyncio
async def test_async_with_closes_the_owned_client(
    dynamo_store: AsyncDynamoStore, moto_server: MotoEndpoint
) -> None:
    store = moto_server.store(dynamo_store.table_name, client_config=FAST_FAILURE)
    async with store as entered:
        assert entered is store
        await store.put_record(lock("t1"), now=NOW)
        owned = await store.client()
    with pytest.raises(BotoCoreError):  # its HTTP session is closed
        await owned.describe_table(TableName=store.table_name)
    assert store.state is StoreState.CLOSED


@pytest.mark.asyncio
async def test_a_closed_store_refuses_to_reopen(
    dynamo_store: AsyncDynamoStore, moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = moto_server.session()
    calls = counting_create_client(session, monkeypatch)
    store = AsyncDynamoStore(
        dynamo_store.table_name,
        endpoint_url=moto_server.url,
        region_name=moto_server.region_name,
        session=session,
    )
    states = [store.state]
    await store.put_record(lock("t1"), now=NOW)
    await store.aclose()
    await store.aclose()  # closing twice is harmless
    states.append(store.state)
    assert states == [StoreState.OPEN, StoreState.CLOSED]
    with pytest.raises(IdempotencyStoreClosedError, match=dynamo_store.table_name):
        await store.client()
    with pytest.raises(IdempotencyStoreClosedError):
        await store.get_record("fn.mod.f#k1")
    with pytest.raises(IdempotencyStoreClosedError):
        await store.put_record(lock("t2", key="fn.mod.f#k2"), now=NOW)
    with pytest.raises(IdempotencyStoreClosedError):
        async with store:
            pass
    assert len(calls) == 1  # no client was opened after the close
    assert issubclass(IdempotencyStoreClosedError, IdempotencyError)


@pytest.mark.asyncio
async def test_a_partial_client_config_keeps_the_other_defaults(
    moto_server: MotoEndpoint,
) -> None:
    retries_only = AioConfig(retries={"max_attempts": 1})
    async with moto_server.store(table_name(), client_config=retries_only) as store:
        # Any: the stubs of botocore's Config omit the options read here.
        config: Any = (await store.client()).meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (config.read_timeout, config.max_pool_connections) == (10, 64)
    # botocore rewrites the retries of the config it is given: never the shared default.
    default: Any = DEFAULT_CLIENT_CONFIG
    assert default.retries == {"mode": "standard", "max_attempts": 4}


@pytest.mark.asyncio
async def test_the_endpoint_comes_from_botocore_environment_variables(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_server.url)
    store = AsyncDynamoStore(
        table_name(), region_name=moto_server.region_name, session=moto_server.session()
    )
    async with store:
        assert (await store.client()).meta.endpoint_url == moto_server.url
        await create_table(store)
        await store.put_record(lock("t1"), now=NOW)
        assert await store.get_record("fn.mod.f#k1") == lock("t1")


def test_the_constructor_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    session = isolated_session()
    calls = counting_create_client(session, monkeypatch)
    AsyncDynamoStore("t", endpoint_url="http://bogus.invalid:1", region_name="us-east-1")
    store = AsyncDynamoStore("t", session=session)  # no region anywhere: found at first use
    assert calls == []
    with pytest.raises(IdempotencyConfigurationError, match="region"):
        asyncio.run(store.get_record("fn.mod.f#k1"))
    assert len(calls) == 1
    asyncio.run(store.aclose())


@pytest.mark.asyncio
async def test_concurrent_first_use_creates_one_client(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = moto_server.session()
    calls = counting_create_client(session, monkeypatch)
    async with AsyncDynamoStore(
        table_name(), endpoint_url=moto_server.url, region_name=DUMMY_REGION, session=session
    ) as store:
        clients = await asyncio.gather(*(store.client() for _ in range(20)))
        assert all(client is clients[0] for client in clients)
        errors = await asyncio.gather(
            *(store.get_record(f"k{i}") for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(error, IdempotencyTableNotFoundError) for error in errors)
    assert len(calls) == 1


# --- sort-key mode ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_sort_key_mode_item_layout(moto_server: MotoEndpoint) -> None:
    async with moto_server.store(
        table_name(), sort_key_attr="sk", static_pk_value="idempotency#orders"
    ) as store:
        await create_table(store)
        held = lock("t1")
        await store.put_record(held, now=NOW)
        client = await store.client()
        raw = await client.get_item(
            TableName=store.table_name,
            Key={"id": {"S": "idempotency#orders"}, "sk": {"S": held.idempotency_key}},
        )
        assert raw["Item"] == to_item(store.schema, held)
        assert raw["Item"]["id"] == {"S": "idempotency#orders"}


def test_the_static_partition_value_defaults_to_the_function_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-fn")
    assert (
        AsyncDynamoStore("t", sort_key_attr="sk").schema.static_pk_value == "idempotency#orders-fn"
    )
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    assert AsyncDynamoStore("t", sort_key_attr="sk").schema.static_pk_value == "idempotency#"


def test_bad_configuration_fails_at_construction() -> None:
    with pytest.raises(IdempotencyConfigurationError):
        AsyncDynamoStore("")
    with pytest.raises(IdempotencyConfigurationError) as caught:
        AsyncDynamoStore("t", key_attr="id", sort_key_attr="id")
    assert isinstance(caught.value, IdempotencyError)
    for attempts in (0, -1, 1.5, True):
        with pytest.raises(IdempotencyConfigurationError, match="connect_attempts"):
            AsyncDynamoStore("t", connect_attempts=attempts)  # type: ignore[arg-type]  # wrong on purpose


@pytest.mark.asyncio
async def test_the_region_comes_from_aws_region_when_not_given(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = AsyncDynamoStore(
        "region-probe", endpoint_url=moto_server.url, session=moto_server.session()
    )
    try:
        client = await store.client()
        assert client.meta.region_name == "eu-west-3"
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_malformed_endpoint_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "not a url")
    store = AsyncDynamoStore("t", region_name="us-east-1", session=isolated_session())
    try:
        with pytest.raises(IdempotencyConfigurationError, match="AWS_ENDPOINT_URL_DYNAMODB"):
            await store.client()
    finally:
        await store.aclose()
