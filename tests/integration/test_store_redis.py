"""``AsyncRedisStore`` against a real server: atomicity, fencing, layout, faults, Powertools.

The contract shared with the other stores is in ``test_store_conformance.py``;
here are the Redis-specific guarantees. Powertools' Redis layer is sync: it runs
in a worker thread with redis-py's sync client, against the same server (the
in-flight lock proofs across libraries are in ``test_locks_across_libraries.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio
import valkey.asyncio
from powertools_twins import VALIDATING_AMOUNT, Library, as_lambda_function, other, receipt, twins
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from store_records import NOW, NOW_MS, completed, lock

from idemstore import (
    AsyncRedisStore,
    DataRecord,
    IdempotencyAlreadyInProgressError,
    IdempotencyConfig,
    IdempotencyCorruptRecordError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
    InMemoryStore,
    RecordStatus,
    idempotent_function,
)
from idemstore.loopback import RedisServer, start_redis_server

ORDER = {"order_id": "o-1", "amount": 1050, "customer": "c-9"}


@pytest_asyncio.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A second client on the same server, to look at what the store wrote."""
    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


async def stored_json(raw: redis.asyncio.Redis, key: str) -> Any:
    value = await raw.get(key)
    assert value is not None
    return json.loads(value)


# --- atomicity ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_50_concurrent_acquires_have_one_winner(redis_store: AsyncRedisStore) -> None:
    contenders = [lock(f"t{i}") for i in range(50)]
    outcomes = await asyncio.gather(
        *(redis_store.put_record(c, now=NOW) for c in contenders), return_exceptions=True
    )
    winners = [c for c, outcome in zip(contenders, outcomes, strict=True) if outcome is None]
    losers = [o for o in outcomes if isinstance(o, IdempotencyItemAlreadyExistsError)]
    assert len(winners) == 1
    assert len(losers) == 49
    assert all(error.old_data_record == winners[0] for error in losers)
    assert await redis_store.get_record(winners[0].idempotency_key) == winners[0]


@pytest.mark.asyncio
async def test_50_concurrent_callers_run_the_function_once(redis_store: AsyncRedisStore) -> None:
    # Fifty engines (as in fifty processes) with one key prefix: only the store decides.
    runs: list[int] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def charge(order: dict[str, Any]) -> str:
        runs.append(order["amount"])
        entered.set()
        await release.wait()
        return "charged"

    callers = [
        idempotent_function(
            data_keyword_argument="order", persistence_store=redis_store, key_prefix="orders"
        )(charge)
        for _ in range(50)
    ]
    calls = [asyncio.create_task(caller(order=ORDER)) for caller in callers]
    await entered.wait()
    pending: set[asyncio.Task[str]] = set(calls)
    while len(pending) > 1:  # the winner holds the lock until every other caller is answered
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    release.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert runs == [1050]
    assert outcomes.count("charged") == 1
    assert all(isinstance(o, IdempotencyAlreadyInProgressError) for o in outcomes if o != "charged")
    assert [await caller(order=ORDER) for caller in callers[:3]] == ["charged"] * 3
    assert runs == [1050]


# --- fencing --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_late_owner_cannot_complete_renew_or_release_after_a_take_over(
    redis_store: AsyncRedisStore,
) -> None:
    late = lock("t1", in_progress_expiry_timestamp=NOW_MS - 1)
    await redis_store.put_record(late, now=NOW - 120)
    taker = lock("t2")
    await redis_store.put_record(taker, now=NOW)
    for attempt in (
        redis_store.update_record(completed(late)),
        redis_store.renew_lease(late, in_progress_expiry_timestamp=NOW_MS + 600_000),
        redis_store.delete_record(late),
    ):
        with pytest.raises(IdempotencyLeaseLostError) as caught:
            await attempt
        assert caught.value.current_record == taker
    assert await redis_store.get_record(taker.idempotency_key) == taker


# --- layout and TTL ---------------------------------------------------------------


@pytest_asyncio.fixture
async def ours(redis_store: AsyncRedisStore) -> DataRecord:
    """Our lock, taken in ``redis_store`` at NOW: the record whose key a layout test reads."""
    held = lock("t1")
    await redis_store.put_record(held, now=NOW)
    return held


@pytest.mark.asyncio
async def test_the_value_is_powertools_json_plus_the_owner_token(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis, ours: DataRecord
) -> None:
    held = {
        "status": "INPROGRESS",
        "expiration": int(NOW) + 3600,
        "in_progress_expiration": NOW_MS + 60_000,
        "validation": "hash-1",
        "owner_token": "t1",
    }
    assert await stored_json(raw, ours.idempotency_key) == held
    await redis_store.update_record(completed(ours))
    done = {**held, "status": "COMPLETED", "data": '{"ok": true}'}
    assert await stored_json(raw, ours.idempotency_key) == done


@pytest.mark.asyncio
async def test_the_key_lives_until_its_expiration_on_the_callers_clock(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis, ours: DataRecord
) -> None:
    # Taken over from expiration + 1 s: 3601 s after the caller's now, less time elapsed.
    assert 3_590_000 < await raw.pttl(ours.idempotency_key) <= 3_601_000
    await redis_store.update_record(replace(completed(ours), expiry_timestamp=int(NOW) + 7200))
    assert 7_190_000 < await raw.pttl(ours.idempotency_key) <= 7_201_000
    assert await raw.ttl("fn.mod.f#k1") > 0


@pytest.mark.asyncio
async def test_a_result_too_large_for_an_item_is_compressed_as_base64_text(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis
) -> None:
    # The codec's policy, shared with the DynamoDB store: text while a DynamoDB item
    # would hold it (so Powertools reads it), compressed beyond.
    for key, copies, compressed in (("fn.mod.f#k1", 1000, False), ("fn.mod.f#k2", 5000, True)):
        ours = lock("t1", key=key)
        await redis_store.put_record(ours, now=NOW)
        done = completed(ours, json.dumps(["x" * 100] * copies))
        await redis_store.update_record(done)
        stored = await stored_json(raw, ours.idempotency_key)
        assert ("data" not in stored) is compressed
        assert isinstance(stored.get("data_zlib"), str) is compressed
        assert await redis_store.get_record(ours.idempotency_key) == done


# --- batch read -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_records_agrees_with_the_memory_store(redis_store: AsyncRedisStore) -> None:
    memory = InMemoryStore()
    held = [lock("t1", key="fn.mod.f#a"), completed(lock("t2", key="fn.mod.f#b"))]
    for store in (redis_store, memory):
        await store.put_record(held[0], now=NOW)
        await store.put_record(held[1], now=NOW)
    keys = ["fn.mod.f#b", "fn.mod.f#missing", "fn.mod.f#a", "fn.mod.f#b"]
    found = await redis_store.get_records(keys)
    assert found == {"fn.mod.f#a": held[0], "fn.mod.f#b": held[1]}
    assert await memory.get_records(keys) == found
    assert await redis_store.get_records([]) == {}


# --- bad values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'{"status": "DONE", "expiration": 9999999999}',
        b'{"status": "COMPLETED"}',
    ],
)
@pytest.mark.asyncio
async def test_an_unreadable_value_is_corrupt_and_never_overwritten(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis, value: bytes
) -> None:
    key = "fn.mod.f#bad"
    await raw.set(key, value)
    with pytest.raises(IdempotencyCorruptRecordError) as caught:
        await redis_store.get_record(key)
    assert caught.value.idempotency_key == key
    with pytest.raises(IdempotencyCorruptRecordError):
        await redis_store.put_record(lock("t1", key=key), now=NOW)
    with pytest.raises(IdempotencyCorruptRecordError):
        await redis_store.delete_record(lock("t1", key=key))
    assert await raw.get(key) == value


@pytest.mark.asyncio
async def test_a_key_of_another_type_is_corrupt(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis
) -> None:
    await raw.hset("fn.mod.f#hash", "status", "COMPLETED")
    with pytest.raises(IdempotencyCorruptRecordError):
        await redis_store.put_record(lock("t1", key="fn.mod.f#hash"), now=NOW)
    with pytest.raises(IdempotencyCorruptRecordError):
        await redis_store.get_record("fn.mod.f#hash")
    with pytest.raises(IdempotencyCorruptRecordError):
        await redis_store.get_records(["fn.mod.f#other", "fn.mod.f#hash"])
    assert await raw.hgetall("fn.mod.f#hash") == {b"status": b"COMPLETED"}


# --- one key per script, one round trip per operation -----------------------------


class ScriptCalls:
    """Records every EVALSHA the client sends: the number of keys and the keys."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[int, tuple[Any, ...]]] = []
        original = client.evalsha

        async def evalsha(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
            self.calls.append((numkeys, keys_and_args[:numkeys]))
            return await original(sha, numkeys, *keys_and_args)

        client.evalsha = evalsha


class Requests:
    """Records every request the client sends: commands by name, pipelines by size."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        original = client.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.names.append(str(args[0]).upper())
            return await original(*args, **options)

        client.execute_command = execute_command
        original_pipeline = client.pipeline

        def pipeline(*args: Any, **options: Any) -> Any:
            batch = original_pipeline(*args, **options)
            original_execute = batch.execute

            async def execute(*args: Any, **options: Any) -> Any:
                self.names.append(f"PIPELINE[{len(batch.command_stack)}]")
                return await original_execute(*args, **options)

            batch.execute = execute
            return batch

        client.pipeline = pipeline

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


@pytest.mark.asyncio
async def test_every_script_touches_exactly_one_key(
    redis_store: AsyncRedisStore, raw: redis.asyncio.Redis
) -> None:
    calls = ScriptCalls(redis_store.client)
    ours = lock("t1")
    await redis_store.put_record(ours, now=NOW)
    await redis_store.renew_lease(ours, in_progress_expiry_timestamp=NOW_MS + 120_000)
    await redis_store.update_record(completed(ours))
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        await redis_store.put_record(lock("t2"), now=NOW)
    await raw.script_flush()  # the next call meets NOSCRIPT and loads its script again
    other = lock("t3", key="fn.mod.f#k2")
    await redis_store.put_record(other, now=NOW)
    await redis_store.delete_record(other)
    # Seven operations, and the one that met NOSCRIPT sent its EVALSHA again.
    assert len(calls.calls) == 8
    assert [numkeys for numkeys, _ in calls.calls] == [1] * 8
    assert {keys[0] for _, keys in calls.calls} == {"fn.mod.f#k1", "fn.mod.f#k2"}


@pytest.mark.asyncio
async def test_round_trips_per_path(redis_store: AsyncRedisStore, raw: redis.asyncio.Redis) -> None:
    @idempotent_function(data_keyword_argument="order", persistence_store=redis_store)
    async def charge(order: dict[str, Any]) -> str:
        if order.get("fail"):
            raise RuntimeError("declined")
        return "charged"

    warm = lock("t0", key="warm#up")  # every script loaded on the server once
    await redis_store.put_record(warm, now=NOW)
    await redis_store.update_record(completed(warm))
    await redis_store.delete_record(completed(warm))
    requests = Requests(redis_store.client)
    await charge(order=ORDER)
    assert requests.take() == ["EVALSHA", "EVALSHA"]  # acquire, complete
    await charge(order=ORDER)
    assert requests.take() == ["EVALSHA"]  # the failed acquire returns the record
    with pytest.raises(RuntimeError):
        await charge(order={**ORDER, "fail": True})
    assert requests.take() == ["EVALSHA", "EVALSHA"]  # acquire, release
    await redis_store.get_records(["a", "b", "a"])
    assert requests.take() == ["PIPELINE[2]"]  # one round trip, each key once


# --- valkey's client, owned clients ---------------------------------------------------


@pytest.mark.asyncio
async def test_the_valkey_client_works_alike(
    redis_store: AsyncRedisStore, redis_server: RedisServer
) -> None:
    client = valkey.asyncio.Valkey(host=redis_server.host, port=redis_server.port)
    try:
        store = AsyncRedisStore(client)
        ours = lock("t1")
        await store.put_record(ours, now=NOW)
        await store.update_record(completed(ours))
        assert await redis_store.get_record(ours.idempotency_key) == completed(ours)
        with pytest.raises(IdempotencyItemAlreadyExistsError):
            await store.put_record(lock("t2"), now=NOW)
        assert await store.get_records([ours.idempotency_key]) == {
            ours.idempotency_key: completed(ours)
        }
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_valkey_client_errors_are_typed(redis_server: RedisServer) -> None:
    client = valkey.asyncio.Valkey(host=redis_server.host, port=_closed_port(), retry_on_error=[])
    try:
        with pytest.raises(IdempotencyPersistenceLayerError) as caught:
            await AsyncRedisStore(client).get_record("fn.mod.f#k1")
        assert isinstance(caught.value.__cause__, valkey.exceptions.ConnectionError)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_from_url_owns_its_client(
    redis_store: AsyncRedisStore, redis_server: RedisServer
) -> None:
    async with AsyncRedisStore.from_url(redis_server.url) as store:
        await store.put_record(lock("t1"), now=NOW)
        owned = store.client
        assert await store.get_record("fn.mod.f#k1") == lock("t1")
    assert isinstance(owned, redis.asyncio.Redis)
    # Closed by aclose(): redis-py keeps the connections, disconnected.
    assert not any(c.is_connected for c in owned.connection_pool._available_connections)
    await AsyncRedisStore(redis_store.client).aclose()  # a caller's client stays open
    assert await redis_store.get_record("fn.mod.f#k1") == lock("t1")


@pytest.mark.asyncio
async def test_a_client_decoding_responses_works_alike(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(
        host=redis_server.host, port=redis_server.port, decode_responses=True
    )
    try:
        store = AsyncRedisStore(client)
        ours = lock("t1", key="fn.mod.f#decoded")
        await store.put_record(ours, now=NOW)
        with pytest.raises(IdempotencyItemAlreadyExistsError) as caught:
            await store.put_record(lock("t2", key="fn.mod.f#decoded"), now=NOW)
        assert caught.value.old_data_record == ours
        assert await store.get_records([ours.idempotency_key]) == {ours.idempotency_key: ours}
    finally:
        await client.aclose()


def test_the_plugin_and_the_store_load_without_redis_installed() -> None:
    code = (
        "import sys; sys.modules['redis'] = None; sys.modules['valkey'] = None\n"
        "import idemstore.testing, idemstore\n"
        "try:\n"
        "    idemstore.AsyncRedisStore.from_url('redis://127.0.0.1:1')\n"
        "except idemstore.IdempotencyConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the redis package" in found.stdout


def _closed_port() -> int:
    from idemstore.loopback import _free_port

    return _free_port()  # free, so nothing listens there


def start_one_node_cluster() -> RedisServer:
    server = start_redis_server(extra_options={"cluster-enabled": "yes"})
    with redis.Redis(host=server.host, port=server.port) as admin:
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while admin.cluster("info")["cluster_state"] != "ok":  # settles within moments
            time.sleep(0.05)
    return server


@pytest_asyncio.fixture
async def cluster_client() -> AsyncIterator[redis.asyncio.RedisCluster]:
    """A one-node cluster holding every slot: the client routes each command by its
    keys' slot and refuses a command whose keys span slots."""
    server = start_one_node_cluster()
    try:
        client = redis.asyncio.RedisCluster(host=server.host, port=server.port)
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        server.close()


@pytest.mark.asyncio
async def test_the_store_runs_on_a_cluster_client(
    cluster_client: redis.asyncio.RedisCluster,
) -> None:
    store = AsyncRedisStore(cluster_client)
    keys = [f"fn.mod.f#{i}" for i in range(8)]  # spread over many slots
    assert len({cluster_client.keyslot(key) for key in keys}) == 8
    for i, key in enumerate(keys):
        held = lock(f"t{i}", key=key)
        await store.put_record(held, now=NOW)
        await store.renew_lease(held, in_progress_expiry_timestamp=NOW_MS + 120_000)
        if i % 2:
            await store.delete_record(held)
        else:
            await store.update_record(completed(held))
    found = await store.get_records(keys)
    assert sorted(found) == keys[::2]
    assert all(record.status is RecordStatus.COMPLETED for record in found.values())
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        await store.put_record(lock("t9", key=keys[0]), now=NOW)


# --- server restart, connection loss ---------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of the test's own, to stop and restart without disturbing the others."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.close()


def one_retry_client(host: str, port: int) -> redis.asyncio.Redis:
    # One immediate retry on a dropped connection, as a production client would
    # configure it; redis-py's default backs off for up to seconds between retries.
    return redis.asyncio.Redis(host=host, port=port, retry=Retry(NoBackoff(), 1))


@contextlib.asynccontextmanager
async def redis_store_over(client: redis.asyncio.Redis) -> AsyncIterator[AsyncRedisStore]:
    """A store over ``client``, which is closed when the block ends."""
    try:
        yield AsyncRedisStore(client)
    finally:
        await client.aclose()


def charging_function(
    store: AsyncRedisStore, runs: list[str]
) -> Callable[..., Coroutine[Any, Any, str]]:
    """An idempotent ``charge(order=...)`` that appends ``"ran"`` to ``runs`` on each run."""

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def charge(order: dict[str, Any]) -> str:
        runs.append("ran")
        return "charged"

    return charge


@pytest.mark.asyncio
async def test_a_server_down_gives_a_typed_error_and_runs_nothing(own_server: RedisServer) -> None:
    async with redis_store_over(one_retry_client(own_server.host, own_server.port)) as store:
        runs: list[str] = []
        charge = charging_function(store, runs)

        own_server.stop()
        with pytest.raises(IdempotencyPersistenceLayerError) as caught:
            await charge(order=ORDER)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
        assert runs == []
        own_server.start()  # the same port: the client reconnects by itself
        assert await charge(order=ORDER) == "charged"
        assert await charge(order=ORDER) == "charged"
        assert runs == ["ran"]


@pytest.mark.asyncio
async def test_a_restart_while_the_function_runs_gives_a_typed_error(
    own_server: RedisServer,
) -> None:
    async with redis_store_over(one_retry_client(own_server.host, own_server.port)) as store:
        runs: list[str] = []

        @idempotent_function(data_keyword_argument="order", persistence_store=store)
        async def charge(order: dict[str, Any]) -> str:
            runs.append("ran")
            await asyncio.to_thread(own_server.restart)  # no persistence: the lock is gone
            return "charged"

        with pytest.raises(IdempotencyLeaseLostError) as caught:
            await charge(order=ORDER)
        assert caught.value.current_record is None
        assert runs == ["ran"]


class DropOneReply:
    """A TCP proxy to the server that forwards the next script call, waits for the
    server's reply, and closes the client's connection instead of passing it on:
    the write is applied and the client never hears."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.armed = False
        self.dropped = 0
        self.port = 0
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.server.host, self.server.port)
        try:
            while chunk := await reader.read(65536):
                up_writer.write(chunk)
                await up_writer.drain()
                reply = await up_reader.read(65536)
                if self.armed and b"EVALSHA" in chunk.upper():
                    self.armed = False
                    self.dropped += 1
                    return  # applied; the reply is dropped with the connection
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            up_writer.close()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
                await writer.wait_closed()


@pytest_asyncio.fixture
async def dropping_proxy(redis_server: RedisServer) -> AsyncIterator[DropOneReply]:
    proxy = DropOneReply(redis_server)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.mark.parametrize("path", ["acquire", "complete"])
@pytest.mark.asyncio
async def test_a_retried_write_whose_reply_was_lost_finds_its_own_token(
    redis_store: AsyncRedisStore, dropping_proxy: DropOneReply, path: str
) -> None:
    async with redis_store_over(one_retry_client("127.0.0.1", dropping_proxy.port)) as store:
        runs: list[str] = []

        @idempotent_function(data_keyword_argument="order", persistence_store=store)
        async def charge(order: dict[str, Any]) -> str:
            runs.append("ran")
            dropping_proxy.armed = path == "complete"
            return "charged"

        await store.put_record(lock("t0", key="warm#up"), now=NOW)  # connected, script loaded
        dropping_proxy.armed = path == "acquire"
        assert await charge(order=ORDER) == "charged"
        assert dropping_proxy.dropped == 1
        assert await charge(order=ORDER) == "charged"
        assert runs == ["ran"]


@pytest.mark.asyncio
async def test_a_lost_lock_reply_without_retry_is_typed_and_leaves_no_lock(
    redis_store: AsyncRedisStore, dropping_proxy: DropOneReply
) -> None:
    async with redis_store_over(
        redis.asyncio.Redis(host="127.0.0.1", port=dropping_proxy.port, retry=Retry(NoBackoff(), 0))
    ) as store:
        runs: list[str] = []
        charge = charging_function(store, runs)

        await store.put_record(lock("t0", key="warm#up"), now=NOW)
        dropping_proxy.armed = True
        with pytest.raises(IdempotencyPersistenceLayerError) as caught:
            await charge(order=ORDER)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
        assert runs == []
        key = charge.idempotency_engine.identify(ORDER).key  # type: ignore[attr-defined]  # set by the decorator
        with pytest.raises(IdempotencyItemNotFoundError):
            await redis_store.get_record(key)  # the applied lock was released at once
        assert await charge(order=ORDER) == "charged"
        assert runs == ["ran"]


# --- Powertools, both ways ------------------------------------------------------------


@pytest.fixture(autouse=True)
def function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_lambda_function(monkeypatch, "orders-service")


@pytest.mark.parametrize(
    "first",
    [
        pytest.param("powertools", id="idemstore-replays-powertools"),
        pytest.param("idemstore", id="powertools-replays-idemstore"),
    ],
)
@pytest.mark.asyncio
async def test_a_record_completed_by_one_library_replays_in_the_other(
    redis_store: AsyncRedisStore, redis_powertools_layer: Any, first: Library
) -> None:
    pair = twins(
        redis_store, redis_powertools_layer, idemstore_result=receipt, powertools_result=receipt
    )

    completed = await pair.call(first, ORDER)
    replayed = await pair.call(other(first), ORDER)

    assert completed == replayed == {"receipt": "o-1", "total": 1050, "lines": [1, 2]}
    assert pair.runs == [first]


@pytest.mark.asyncio
async def test_a_powertools_result_without_validation_is_a_mismatch(
    redis_store: AsyncRedisStore, redis_powertools_layer: Any
) -> None:
    # Powertools drops ``validation`` when it completes; a missing hash is not a match.
    pair = twins(redis_store, redis_powertools_layer, **VALIDATING_AMOUNT)
    runs = pair.runs

    await pair.powertools_call(ORDER)
    key = pair.idemstore.idempotency_engine.identify(ORDER).key  # type: ignore[attr-defined]  # set by the decorator
    stored = await redis_store.get_record(key)
    assert stored.status is RecordStatus.COMPLETED
    assert stored.payload_hash is None
    with pytest.raises(IdempotencyValidationError):
        await pair.idemstore(order=ORDER)
    assert runs == ["powertools"]

    # Without validation the same record replays.
    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=redis_store,
        config=IdempotencyConfig(event_key_jmespath="order_id"),
        key_prefix=key.rsplit("#", 1)[0],
    )
    async def charge_unvalidated(order: dict[str, Any]) -> str:
        runs.append("idemstore")
        return "idemstore"

    assert await charge_unvalidated(order=ORDER) == "powertools"
    assert runs == ["powertools"]
