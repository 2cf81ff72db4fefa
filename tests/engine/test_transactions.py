"""Staged writes commit with the fenced completion, all or nothing (idemstore.transactions).

Each test marked ``server`` runs on ``InMemoryStore`` and on the moto server;
the side tables are real tables there, read back directly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from engine.conftest import request_log
from engine.delegating import DelegatingStore
from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyConfig,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    InMemoryStore,
    RecordStatus,
    RecordStore,
    idempotent_function,
)
from idemstore.codec import to_item
from idemstore.errors import (
    IdempotencyStagingError,
    IdempotencyTransactionCanceledError,
    IdempotencyTransactionLimitError,
)
from idemstore.expressions import Attr, AttributeValue
from idemstore.outcome import Unstored
from idemstore.transactions import ConditionCheck, Delete, Put, StagedWrite, Update, stage


@dataclass
class Tables:
    """Two side tables next to the idempotency table: orders by ``pk``, stock by ``sku``."""

    store: RecordStore
    orders: str
    stock: str

    async def items(self, table: str) -> list[dict[str, AttributeValue]]:
        if isinstance(self.store, InMemoryStore):
            return self.store.table_items(table)
        assert isinstance(self.store, AsyncDynamoStore)
        client = await self.store.client()
        response = await client.scan(TableName=table, ConsistentRead=True)
        return [{name: dict(value) for name, value in item.items()} for item in response["Items"]]

    async def quantity(self, sku: str) -> int:
        for item in await self.items(self.stock):
            if item["sku"] == {"S": sku}:
                return int(item["qty"]["N"])
        raise AssertionError(f"no stock item {sku!r}")

    async def order_ids(self) -> list[str]:
        return sorted(item["pk"]["S"] for item in await self.items(self.orders))

    async def seed_stock(self, sku: str, qty: int) -> None:
        await self.store.complete_with_writes(None, [Put(self.stock, {"sku": sku, "qty": qty})])  # type: ignore[attr-defined]  # both stores under test have it

    async def take_over(self, key: str) -> None:
        """Another caller takes the lock over, as a lease lapse would let it."""
        now = 2_000_000_000
        other = DataRecord(
            idempotency_key=key,
            status=RecordStatus.INPROGRESS,
            expiry_timestamp=now + 3600,
            in_progress_expiry_timestamp=now * 1000,
            owner_token="someone-else",
        )
        if isinstance(self.store, InMemoryStore):
            self.store.overwrite(other)
            return
        assert isinstance(self.store, AsyncDynamoStore)
        client = await self.store.client()
        await client.put_item(
            TableName=self.store.table_name, Item=to_item(self.store.schema, other)
        )


@pytest_asyncio.fixture
async def tables(store: RecordStore) -> Tables:
    suffix = uuid.uuid4().hex[:8]
    orders, stock = f"orders-{suffix}", f"stock-{suffix}"
    if isinstance(store, InMemoryStore):
        store.create_table(orders, "pk")
        store.create_table(stock, "sku")
    else:
        assert isinstance(store, AsyncDynamoStore)
        client = await store.client()
        for name, key in ((orders, "pk"), (stock, "sku")):
            await client.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
    return Tables(store, orders, stock)


Place = Callable[..., Awaitable[dict[str, Any]]]


def placing(tables: Tables, runs: list[str], **config: Any) -> Place:
    """An idempotent order: writes the order and takes one from stock, exactly once."""

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=tables.store,
        config=IdempotencyConfig(**config),
    )
    async def place(*, order: dict[str, Any]) -> dict[str, Any]:
        runs.append(order["id"])
        stage(Put(tables.orders, {"pk": order["id"], "total": order["total"]}))
        stage(
            Update(
                tables.stock,
                {"sku": order["sku"]},
                update=Attr("qty").add(-1),
                condition=Attr("qty") >= 1,
            )
        )
        return {"order": order["id"]}

    return place


def staging(store: RecordStore, *writes: StagedWrite) -> Callable[..., Awaitable[int]]:
    """An idempotent function of ``n`` that stages ``writes`` in one call and returns ``n``."""

    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def staged(*, n: int) -> int:
        stage(*writes)
        return n

    return staged


@pytest.mark.server
@pytest.mark.asyncio
async def test_staged_writes_commit_with_the_completion_in_one_request(tables: Tables) -> None:
    await tables.seed_stock("apple", 2)
    runs: list[str] = []
    place = placing(tables, runs)
    log = await request_log(tables.store)

    assert await place(order={"id": "o1", "sku": "apple", "total": 5}) == {"order": "o1"}
    assert log.operations == ["PutItem", "TransactWriteItems"]
    assert await tables.order_ids() == ["o1"]
    assert await tables.quantity("apple") == 1

    log.clear()
    assert await place(order={"id": "o1", "sku": "apple", "total": 5}) == {"order": "o1"}
    assert log.operations == ["PutItem"]  # replayed: nothing staged, nothing sent
    assert runs == ["o1"]
    assert await tables.quantity("apple") == 1


@pytest.mark.server
@pytest.mark.asyncio
async def test_without_staged_writes_the_completion_is_the_plain_update(
    store: RecordStore,
) -> None:
    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def plain(*, n: int) -> int:
        return n

    log = await request_log(store)
    assert await plain(n=1) == 1
    assert log.operations == ["PutItem", "UpdateItem"]


@pytest.mark.server
@pytest.mark.asyncio
async def test_a_failed_staged_condition_applies_nothing_and_releases_the_lock(
    tables: Tables,
) -> None:
    await tables.seed_stock("pear", 0)
    runs: list[str] = []
    place = placing(tables, runs)
    log = await request_log(tables.store)

    with pytest.raises(IdempotencyTransactionCanceledError) as caught:
        await place(order={"id": "o2", "sku": "pear", "total": 7})

    error = caught.value
    assert error.failed == [1]
    assert [type(write).__name__ for write in error.writes] == ["Put", "Update"]
    assert error.reasons[0].code is None
    assert error.reasons[1].code == "ConditionalCheckFailed"
    assert error.reasons[1].item == {"sku": {"S": "pear"}, "qty": {"N": "0"}}
    assert error.result == {"order": "o2"}
    assert "write 1 (Update" in str(error)
    assert log.operations == ["PutItem", "TransactWriteItems", "DeleteItem"]
    assert await tables.order_ids() == []  # the order's put did not apply either
    assert await tables.quantity("pear") == 0

    # The lock was released: with stock, the retry runs and commits.
    await tables.seed_stock("pear", 1)
    assert await place(order={"id": "o2", "sku": "pear", "total": 7}) == {"order": "o2"}
    assert runs == ["o2", "o2"]
    assert await tables.order_ids() == ["o2"]
    assert await tables.quantity("pear") == 0


@pytest.mark.server
@pytest.mark.asyncio
async def test_a_lock_taken_over_meanwhile_applies_nothing(tables: Tables) -> None:
    await tables.seed_stock("fig", 3)
    holder: dict[str, str] = {}

    @idempotent_function(data_keyword_argument="order", persistence_store=tables.store)
    async def place(*, order: dict[str, Any]) -> str:
        stage(Update(tables.stock, {"sku": "fig"}, update=Attr("qty").add(-1)))
        await tables.take_over(holder["key"])
        return "late"

    engine = vars(place)["idempotency_engine"]
    identity = engine.identify({"id": "o3"})
    holder["key"] = identity.key

    with pytest.raises(IdempotencyLeaseLostError) as caught:
        await place(order={"id": "o3"})

    assert caught.value.result == "late"
    assert caught.value.current_record is not None
    assert caught.value.current_record.owner_token == "someone-else"
    assert await tables.quantity("fig") == 3


@pytest.mark.server
@pytest.mark.asyncio
async def test_every_write_kind_applies(tables: Tables) -> None:
    await tables.seed_stock("kiwi", 4)
    await tables.store.complete_with_writes(None, [Put(tables.orders, {"pk": "old"})])  # type: ignore[attr-defined]  # both stores under test have it

    rework = staging(
        tables.store,
        Delete(tables.orders, {"pk": "old"}, condition=Attr("pk").exists()),
        Put(tables.orders, {"pk": "new", "lines": [1, 2], "tags": {"a"}, "gift": None}),
        ConditionCheck(tables.stock, {"sku": "kiwi"}, Attr("qty").between(1, 10)),
    )

    assert await rework(n=1) == 1
    (new,) = await tables.items(tables.orders)
    assert new == {
        "pk": {"S": "new"},
        "lines": {"L": [{"N": "1"}, {"N": "2"}]},
        "tags": {"SS": ["a"]},
        "gift": {"NULL": True},
    }
    assert await tables.quantity("kiwi") == 4


@pytest.mark.asyncio
async def test_two_writes_to_one_item_are_refused_before_sending(tables: Tables) -> None:
    await tables.seed_stock("lime", 5)
    log = await request_log(tables.store)

    @idempotent_function(data_keyword_argument="n", persistence_store=tables.store)
    async def twice(*, n: int) -> int:
        stage(Update(tables.stock, {"sku": "lime"}, update=Attr("qty").add(-1)))
        stage(Update(tables.stock, {"sku": "lime"}, update=Attr("qty").add(-1)))
        return n

    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        await twice(n=1)
    assert caught.value.limit == "same_item"
    assert caught.value.index == 1
    assert log.operations == ["PutItem", "DeleteItem"]  # raised in the function: released
    assert await tables.quantity("lime") == 5


@pytest.mark.server
@pytest.mark.asyncio
async def test_the_size_limit_counts_the_completion_and_releases_the_lock(
    tables: Tables,
) -> None:
    log = await request_log(tables.store)

    @idempotent_function(data_keyword_argument="n", persistence_store=tables.store)
    async def bulky(*, n: int) -> str:
        # 11 items of 380 KB fit the transaction's 4 MB; with the 20 KB result they do not.
        stage(*(Put(tables.orders, {"pk": f"p{i}", "blob": b"x" * 380_000}) for i in range(11)))
        return "r" * 20_000

    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        await bulky(n=1)
    assert caught.value.limit == "bytes"
    assert log.operations == ["PutItem", "DeleteItem"]  # never sent; the lock released
    assert await tables.order_ids() == []


@pytest.mark.server
@pytest.mark.asyncio
async def test_a_write_to_a_missing_table_is_refused_typed_and_releases_the_lock(
    tables: Tables,
) -> None:
    lost = staging(
        tables.store, Put(tables.orders, {"pk": "kept-out"}), Put("no-such-table", {"pk": "x"})
    )

    with pytest.raises(IdempotencyPersistenceLayerError, match="no-such-table"):
        await lost(n=1)
    assert await tables.order_ids() == []
    log = await request_log(tables.store)
    with pytest.raises(IdempotencyPersistenceLayerError):
        await lost(n=1)
    assert log.operations[0] == "PutItem"  # the key was free: the function ran again
    assert log.operations[1] == "TransactWriteItems"


@pytest.mark.server
@pytest.mark.asyncio
async def test_two_puts_to_one_item_are_refused_by_the_store_and_release_the_lock(
    tables: Tables,
) -> None:
    # No other write names the table's key, so only the store can tell.
    doubled = staging(
        tables.store, Put(tables.orders, {"pk": "same", "v": 1}), Put(tables.orders, {"pk": "same"})
    )

    log = await request_log(tables.store)
    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        await doubled(n=1)
    assert caught.value.limit == "same_item"
    assert log.operations == ["PutItem", "TransactWriteItems", "DeleteItem"]
    assert await tables.order_ids() == []


@pytest.mark.asyncio
async def test_the_idempotency_record_itself_cannot_be_staged(tables: Tables) -> None:
    store = tables.store
    assert isinstance(store, InMemoryStore)

    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def sneaky(*, n: int) -> int:
        key = vars(sneaky)["idempotency_engine"].identify(n).key
        stage(Delete(store.table_name, {store.schema.key_attr: key}))
        return n

    with pytest.raises(IdempotencyTransactionLimitError) as caught:
        await sneaky(n=1)
    assert caught.value.limit == "own_record"
    assert store.items() == {}


@pytest.mark.asyncio
async def test_a_nested_idempotent_call_stages_its_own_writes(tables: Tables) -> None:
    await tables.seed_stock("plum", 5)
    store = tables.store
    log = await request_log(store)

    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def inner(*, n: int) -> int:
        stage(Put(tables.orders, {"pk": f"inner-{n}"}))
        return n

    @idempotent_function(data_keyword_argument="n", persistence_store=store)
    async def outer(*, n: int) -> int:
        stage(Update(tables.stock, {"sku": "plum"}, update=Attr("qty").add(-1)))
        await inner(n=n + 1)
        stage(Put(tables.orders, {"pk": f"outer-{n}"}))
        return n

    assert await outer(n=1) == 1
    assert log.operations == [
        "PutItem",
        "PutItem",
        "TransactWriteItems",  # inner: its own put only
        "TransactWriteItems",  # outer: the update and its put
    ]
    assert await tables.order_ids() == ["inner-2", "outer-1"]
    assert await tables.quantity("plum") == 4


@pytest.mark.asyncio
async def test_writes_staged_by_concurrent_subtasks_commit_and_late_ones_are_refused(
    tables: Tables,
) -> None:
    late: list[asyncio.Task[None]] = []
    resume = asyncio.Event()

    async def stage_order(pk: str) -> None:
        stage(Put(tables.orders, {"pk": pk}))

    async def stage_late() -> None:
        await resume.wait()
        stage(Put(tables.orders, {"pk": "late"}))

    @idempotent_function(data_keyword_argument="n", persistence_store=tables.store)
    async def fan_out(*, n: int) -> int:
        await asyncio.gather(stage_order("a"), stage_order("b"))  # subtasks share the call's list
        late.append(asyncio.create_task(stage_late()))
        return n

    assert await fan_out(n=1) == 1
    assert await tables.order_ids() == ["a", "b"]
    resume.set()
    with pytest.raises(IdempotencyStagingError, match="after its idempotent call returned"):
        await late[0]
    assert await tables.order_ids() == ["a", "b"]


@pytest.mark.asyncio
async def test_stage_outside_an_idempotent_call_is_refused() -> None:
    with pytest.raises(IdempotencyStagingError, match="outside an idempotent call"):
        stage(Put("orders", {"pk": "x"}))


class PlainStore(DelegatingStore):
    """A store that keeps the record contract but cannot commit transactions: it forwards
    the record operations only."""


@pytest.mark.asyncio
async def test_a_store_without_transactions_refuses_at_stage_time() -> None:
    inner = InMemoryStore()

    staged = staging(PlainStore(inner), Put("orders", {"pk": "x"}))

    with pytest.raises(IdempotencyStagingError, match="PlainStore cannot commit"):
        await staged(n=1)
    assert inner.items() == {}  # released


@pytest.mark.asyncio
async def test_an_unstored_result_applies_no_staged_writes(
    tables: Tables, caplog: pytest.LogCaptureFixture
) -> None:
    @idempotent_function(data_keyword_argument="n", persistence_store=tables.store)
    async def declined(*, n: int) -> Any:
        stage(Put(tables.orders, {"pk": "never"}))
        return Unstored(n, "declined")

    with caplog.at_level(logging.WARNING, logger="idemstore"):
        assert await declined(n=1) == 1
    assert await tables.order_ids() == []
    assert "staged writes are not applied" in caplog.text


@pytest.mark.asyncio
async def test_a_call_without_a_key_still_commits_its_writes_together(tables: Tables) -> None:
    log = await request_log(tables.store)

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=tables.store,
        config=IdempotencyConfig(event_key_jmespath="id"),
    )
    async def keyless(*, order: dict[str, Any]) -> str:
        stage(Put(tables.orders, {"pk": "walk-in"}))
        return "ok"

    with pytest.warns(UserWarning, match="No idempotency key"):
        assert await keyless(order={"note": "no id"}) == "ok"
    assert log.operations == ["TransactWriteItems"]
    assert await tables.order_ids() == ["walk-in"]
