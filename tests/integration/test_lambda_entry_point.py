"""``lambda_entry_point(open_stores=...)``: store clients opened at INIT, on the entry loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from moto_tables import new_table

from idemstore import (
    AsyncDynamoStore,
    IdempotencyConfigurationError,
    idempotent,
    lambda_entry_point,
)
from idemstore.testing import MotoEndpoint


class FakeLambdaContext:
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 5_000


class RecordingStore:
    """Records the loop each open and close ran on; fails to open when asked to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.opened_on: list[asyncio.AbstractEventLoop] = []
        self.closed_on: list[asyncio.AbstractEventLoop] = []

    async def open(self) -> None:
        self.opened_on.append(asyncio.get_running_loop())
        if self.fail:
            raise IdempotencyConfigurationError("no region")

    async def aclose(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())


async def echo(event: Any, context: Any) -> Any:
    return event


def test_stores_open_once_each_on_the_loop_later_invocations_run_on() -> None:
    stores = [RecordingStore(), RecordingStore()]

    entry = lambda_entry_point(echo, open_stores=stores)
    try:
        loop = entry.loop
        assert [s.opened_on for s in stores] == [[loop], [loop]]
        assert entry({"n": 1}, None) == {"n": 1}
        assert entry.loop is loop
        assert [len(s.opened_on) for s in stores] == [1, 1]
        assert [s.closed_on for s in stores] == [[], []]
    finally:
        entry.close()


def test_a_store_that_cannot_open_fails_init_and_closes_what_was_opened() -> None:
    opened, failing, never = RecordingStore(), RecordingStore(fail=True), RecordingStore()

    with pytest.raises(IdempotencyConfigurationError, match="no region"):
        lambda_entry_point(echo, open_stores=[opened, failing, never])

    (loop,) = opened.opened_on
    assert opened.closed_on == [loop]
    assert failing.closed_on == [loop]
    assert never.opened_on == []
    assert loop.is_closed()


@pytest.fixture
def table_name(moto_server: MotoEndpoint) -> str:
    return new_table(moto_server, "idemstore-init")


def test_the_client_opened_at_init_serves_the_invocations_which_send_only_their_requests(
    moto_server: MotoEndpoint, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = moto_server.session()
    clients: list[Any] = []
    sent: list[str] = []
    create_client = session.create_client

    def counting_create_client(*args: Any, **kwargs: Any) -> Any:
        clients.append(object())
        return create_client(*args, **kwargs)

    monkeypatch.setattr(session, "create_client", counting_create_client)
    # Registered on the session, so requests of every client it makes are counted.
    session.register("before-send.dynamodb", lambda event_name, **_: sent.append(event_name))
    store = AsyncDynamoStore(
        table_name,
        endpoint_url=moto_server.url,
        region_name=moto_server.region_name,
        session=session,
    )
    used: list[Any] = []

    @idempotent(persistence_store=store)
    async def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        used.append(await store.client())
        return {"id": event["id"]}

    entry = lambda_entry_point(handle, open_stores=[store])
    try:
        assert (len(clients), sent) == (1, [])  # INIT: the client, and no request
        opened: Any = entry.loop.run_until_complete(store.client())
        # aiobotocore's HTTP session (TLS context, connection pool) is made at INIT too.
        http_sessions = dict(opened._endpoint.http_session._sessions)
        assert len(http_sessions) == 1

        assert entry({"id": 1}, FakeLambdaContext()) == {"id": 1}
        assert [name.rsplit(".", 1)[-1] for name in sent] == ["PutItem", "UpdateItem"]
        assert entry({"id": 1}, FakeLambdaContext()) == {"id": 1}  # replayed: one request
        assert len(sent) == 3
        assert len(clients) == 1
        assert used == [opened]
        assert opened._endpoint.http_session._sessions == http_sessions
    finally:
        entry.loop.run_until_complete(store.aclose())
        entry.close()


def test_a_store_without_a_region_fails_init_with_a_configuration_error(
    moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    store = AsyncDynamoStore("orders", endpoint_url=moto_server.url, session=moto_server.session())

    with pytest.raises(IdempotencyConfigurationError, match="no AWS region"):
        lambda_entry_point(echo, open_stores=[store])
