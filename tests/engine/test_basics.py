"""The decorators' everyday behaviour: round trips, validation, kill switch, decoration errors."""

import asyncio
from typing import Any

import pytest

from engine.conftest import order_function, request_log
from idemstore import (
    DataRecord,
    IdempotencyConfig,
    IdempotencyValidationError,
    IdempotencyWarning,
    InMemoryStore,
    RecordStore,
    idempotent,
    idempotent_function,
)
from idemstore.engine import DISABLED_NOTICE

# --- round trips (the DESIGN.md budget) ----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.server
async def test_first_call_takes_two_requests_and_a_duplicate_one(
    store: RecordStore,
) -> None:
    log = await request_log(store)
    runs: list[dict[str, Any]] = []

    @order_function(store)
    async def process(order: dict[str, Any]) -> dict[str, Any]:
        runs.append(order)
        return {"receipt": order["order_id"].upper()}

    assert await process(order={"order_id": "o-1"}) == {"receipt": "O-1"}
    assert log.operations == ["PutItem", "UpdateItem"]

    log.clear()
    assert await process(order={"order_id": "o-1"}) == {"receipt": "O-1"}
    assert log.operations == ["PutItem"]  # the old item comes back with the failed put
    assert len(runs) == 1


@pytest.mark.asyncio
async def test_warm_local_cache_replays_with_no_request(store: RecordStore) -> None:
    log = await request_log(store)
    runs: list[dict[str, Any]] = []

    @order_function(store, IdempotencyConfig(use_local_cache=True))
    async def process(order: dict[str, Any]) -> int:
        runs.append(order)
        return len(runs)

    assert await process(order={"order_id": "o-1"}) == 1
    log.clear()
    for _ in range(3):
        assert await process(order={"order_id": "o-1"}) == 1
    assert log.operations == []
    assert len(runs) == 1


@pytest.mark.asyncio
async def test_duplicate_warms_the_local_cache(store: RecordStore) -> None:
    log = await request_log(store)
    config = IdempotencyConfig(use_local_cache=True)

    @order_function(store)
    async def first(order: dict[str, Any]) -> str:
        return "first"

    @order_function(
        store,
        config,
        key_prefix=first.idempotency_engine.key_prefix,  # type: ignore[attr-defined]  # set by the decorator
    )
    async def second(order: dict[str, Any]) -> str:
        raise AssertionError("must replay, not run")

    await first(order={"id": 1})
    log.clear()
    assert await second(order={"id": 1}) == "first"
    assert await second(order={"id": 1}) == "first"
    assert log.operations == ["PutItem"]


@pytest.mark.asyncio
@pytest.mark.server
async def test_function_raising_takes_two_requests(store: RecordStore) -> None:
    log = await request_log(store)

    @order_function(store)
    async def process(order: dict[str, Any]) -> None:
        raise LookupError("no such order")

    with pytest.raises(LookupError, match="no such order"):
        await process(order={"order_id": "o-1"})
    assert log.operations == ["PutItem", "DeleteItem"]


@pytest.mark.asyncio
@pytest.mark.server
async def test_lambda_handler_round_trips(store: RecordStore) -> None:
    log = await request_log(store)
    runs: list[Any] = []

    @idempotent(
        persistence_store=store,
        config=IdempotencyConfig(event_key_jmespath="body.order_id"),
    )
    async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        runs.append(event)
        return {"statusCode": 200, "body": event["body"]["order_id"]}

    event = {"body": {"order_id": "o-7"}, "headers": {"x": "1"}}
    assert await handler(event, None) == {"statusCode": 200, "body": "o-7"}
    retry = {"body": {"order_id": "o-7"}, "headers": {"x": "2"}}
    assert await handler(retry, None) == {"statusCode": 200, "body": "o-7"}
    assert log.operations == ["PutItem", "UpdateItem", "PutItem"]
    assert runs == [event]


# --- payload validation ----------------------------------------------------------------


def validating_config(**extra: Any) -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath="order_id", payload_validation_jmespath="amount", **extra
    )


@pytest.mark.asyncio
@pytest.mark.server
async def test_differing_validated_payload_fails_on_the_returned_old_item(
    store: RecordStore,
) -> None:
    log = await request_log(store)

    @order_function(store, validating_config())
    async def charge(order: dict[str, Any]) -> str:
        return f"charged {order['amount']}"

    assert await charge(order={"order_id": "o-1", "amount": 10}) == "charged 10"
    log.clear()
    with pytest.raises(IdempotencyValidationError, match="Payload does not match") as caught:
        await charge(order={"order_id": "o-1", "amount": 20})
    assert caught.value.idempotency_key is not None
    assert log.operations == ["PutItem"]  # decided on ALL_OLD: no GetItem

    # Fields outside the validated part may differ; an identical retry replays.
    assert await charge(order={"order_id": "o-1", "amount": 10, "note": "retry"}) == "charged 10"


@pytest.mark.asyncio
async def test_differing_validated_payload_fails_on_the_cache_path(
    store: RecordStore,
) -> None:
    log = await request_log(store)

    @order_function(store, validating_config(use_local_cache=True))
    async def charge(order: dict[str, Any]) -> str:
        return f"charged {order['amount']}"

    assert await charge(order={"order_id": "o-1", "amount": 10}) == "charged 10"
    log.clear()
    with pytest.raises(IdempotencyValidationError):
        await charge(order={"order_id": "o-1", "amount": 20})
    assert await charge(order={"order_id": "o-1", "amount": 10}) == "charged 10"
    assert log.operations == []


@pytest.mark.asyncio
async def test_validation_stores_the_payload_hash(store: RecordStore) -> None:
    @order_function(store, validating_config())
    async def charge(order: dict[str, Any]) -> None:
        return None

    order = {"order_id": "o-1", "amount": 10}
    await charge(order=order)
    identity = charge.idempotency_engine.identify(order)  # type: ignore[attr-defined]  # set by the decorator
    record = await store.get_record(identity.key)
    assert record.payload_hash is not None
    assert record.payload_hash == identity.payload_hash


# --- response hook ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_response_hook_sees_replays_only(store: RecordStore) -> None:
    seen: list[tuple[Any, DataRecord]] = []

    def hook(response: Any, record: DataRecord) -> Any:
        seen.append((response, record))
        return {**response, "replayed": True}

    @order_function(store, IdempotencyConfig(response_hook=hook))
    async def process(order: dict[str, Any]) -> dict[str, Any]:
        return {"id": order["id"]}

    assert await process(order={"id": 1}) == {"id": 1}
    assert seen == []
    assert await process(order={"id": 1}) == {"id": 1, "replayed": True}
    assert [response for response, _ in seen] == [{"id": 1}]
    assert seen[0][1].response_data == '{"id": 1}'


# --- kill switch ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_kill_switch_runs_directly_with_one_warning_per_process(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEMSTORE_DISABLED", "1")
    DISABLED_NOTICE.reset()
    log = await request_log(store)
    runs: list[Any] = []

    @order_function(
        store, IdempotencyConfig(raise_on_no_idempotency_key=True, use_local_cache=True)
    )
    async def process(order: dict[str, Any]) -> int:
        runs.append(order)
        return len(runs)

    @idempotent(persistence_store=store)
    async def handler(event: dict[str, Any], context: Any) -> int:
        runs.append(event)
        return len(runs)

    with pytest.warns(IdempotencyWarning, match="IDEMSTORE_DISABLED"):
        assert await process(order={"id": 1}) == 1
    # Once per process, whichever entry point meets the switch: the suite's
    # filterwarnings = error turns any further warning into a failure here.
    assert await process(order={"id": 1}) == 2
    assert await handler({"id": 1}, None) == 3
    assert log.operations == []


# --- decoration ------------------------------------------------------------------------


def test_decorating_a_sync_function_fails_at_decoration() -> None:
    store = InMemoryStore()
    with pytest.raises(TypeError, match="needs an async function"):

        @idempotent_function(data_keyword_argument="order", persistence_store=store)  # type: ignore[arg-type]  # a sync function, on purpose
        def process(order: dict[str, Any]) -> None:
            return None

    with pytest.raises(TypeError, match="async def"):

        @idempotent(persistence_store=store)  # type: ignore[type-var]  # a sync function, on purpose
        def handler(event: dict[str, Any], context: Any) -> None:
            return None


def test_unknown_data_keyword_argument_fails_at_decoration() -> None:
    with pytest.raises(TypeError, match="has no parameter 'payload'"):

        @idempotent_function(data_keyword_argument="payload", persistence_store=InMemoryStore())
        async def process(order: dict[str, Any]) -> None:
            return None


@pytest.mark.asyncio
async def test_payload_may_be_passed_positionally(store: RecordStore) -> None:
    runs: list[Any] = []

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def process(customer: str, order: dict[str, Any]) -> str:
        runs.append((customer, order))
        return customer

    assert await process("c-1", {"id": 1}) == "c-1"
    assert await process("c-2", order={"id": 1}) == "c-1"  # only the payload is the key
    assert runs == [("c-1", {"id": 1})]


@pytest.mark.asyncio
async def test_decorated_function_keeps_its_identity(store: RecordStore) -> None:
    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def process(order: dict[str, Any]) -> None:
        """Process an order."""

    assert process.__name__ == "process"
    assert process.__doc__ == "Process an order."
    assert asyncio.iscoroutinefunction(process)


# --- one store, one config, many functions ------------------------------------------------


@pytest.mark.asyncio
async def test_shared_store_and_config_have_no_cross_talk(store: RecordStore) -> None:
    config = IdempotencyConfig(event_key_jmespath="id", payload_validation_jmespath="amount")
    runs: list[tuple[str, int]] = []

    @order_function(store, config)
    async def bill(order: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        runs.append(("bill", order["id"]))
        return {"bill": order["id"], "amount": order["amount"]}

    @order_function(store, config)
    async def ship(order: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        runs.append(("ship", order["id"]))
        return {"ship": order["id"], "amount": order["amount"]}

    orders = [{"id": n, "amount": n * 10} for n in range(8)]
    first = await asyncio.gather(*(bill(order=o) for o in orders), *(ship(order=o) for o in orders))
    assert first == [{"bill": o["id"], "amount": o["amount"]} for o in orders] + [
        {"ship": o["id"], "amount": o["amount"]} for o in orders
    ]
    replayed = await asyncio.gather(
        *(ship(order=o) for o in orders), *(bill(order=o) for o in orders)
    )
    assert replayed == first[8:] + first[:8]
    assert sorted(runs) == sorted([("bill", n) for n in range(8)] + [("ship", n) for n in range(8)])
    # Each function validates against its own records only.
    with pytest.raises(IdempotencyValidationError):
        await bill(order={"id": 0, "amount": 999})
