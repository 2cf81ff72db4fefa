"""A fast fake DynamoDB endpoint on loopback, for measuring client CPU per call.

Keep-alive HTTP/1.1 on a bare ``asyncio.Protocol``; each response is a small
constant or built from one dict look-up, so the server spends next to nothing
per request and runs in a process of its own (its CPU is not the client's).

Just enough state for the idempotency paths: items by key. PutItem applies the
take-over rule on the default attribute names (no record, an expired one, or a
stale INPROGRESS lock) and otherwise fails with the old item, as DynamoDB does
with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``. UpdateItem applies its
``SET``/``REMOVE`` actions and DeleteItem removes the item, both without
checking their conditions (the clients measured here only send fenced writes
that hold). GetItem returns the item. Expressions are never evaluated.

Run: ``python -m benchmarks.fake_dynamo [--port 0] [--delay-ms 0]``; prints
``LISTENING <url>`` and serves until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from typing import Any

from benchmarks.http_wire import STATS_PATH, Request, json_response, split_request
from benchmarks.processes import serve_until_stdin_closes

CONDITION_FAILED = "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"
_SET_ACTION = re.compile(r"(#\w+)\s*=\s*(:\w+)")
_REMOVE_CLAUSE = re.compile(r"REMOVE\s+([#\w,\s]+?)(?=\s+SET\s|$)")

Item = dict[str, dict[str, Any]]


class FakeTable:
    """Items by key, and the few rules the idempotency clients rely on."""

    def __init__(self, key_attrs: tuple[str, ...] = ("id",)) -> None:
        self.key_attrs = key_attrs
        self.items: dict[tuple[str, ...], Item] = {}
        self.requests: Counter[str] = Counter()

    def key_of(self, attributes: Item) -> tuple[str, ...]:
        return tuple(str(attributes[name]["S"]) for name in self.key_attrs)

    def handle(self, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.requests[operation] += 1
        if operation == "PutItem":
            return self.put_item(body)
        if operation == "UpdateItem":
            return self.update_item(body)
        if operation == "DeleteItem":
            self.items.pop(self.key_of(body["Key"]), None)
            return 200, {}
        if operation == "GetItem":
            item = self.items.get(self.key_of(body["Key"]))
            return 200, ({"Item": item} if item is not None else {})
        return 400, {"__type": "UnknownOperationException", "message": operation}

    def put_item(self, body: dict[str, Any]) -> tuple[int, Any]:
        item: Item = body["Item"]
        key = self.key_of(item)
        old = self.items.get(key)
        if old is not None and _live(old):
            error: dict[str, Any] = {"__type": CONDITION_FAILED, "message": "condition failed"}
            if body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                error["Item"] = old
            return 400, error
        self.items[key] = item
        return 200, {}

    def update_item(self, body: dict[str, Any]) -> tuple[int, Any]:
        key = self.key_of(body["Key"])
        item = self.items.setdefault(key, dict(body["Key"]))
        names: dict[str, str] = body.get("ExpressionAttributeNames", {})
        values: dict[str, Any] = body.get("ExpressionAttributeValues", {})
        expression: str = body.get("UpdateExpression", "")
        for name, value in _SET_ACTION.findall(expression):
            item[names.get(name, name)] = values[value]
        for clause in _REMOVE_CLAUSE.findall(expression):
            for name in clause.split(","):
                item.pop(names.get(name.strip(), name.strip()), None)
        return 200, {}


def _live(item: Item) -> bool:
    """Whether an acquire must fail on this item (the take-over rule, inverted)."""
    now = time.time()
    if "expiration" in item and int(item["expiration"]["N"]) < int(now):
        return False
    lock = item.get("in_progress_expiration")
    in_progress = item.get("status", {}).get("S") == "INPROGRESS"
    return not (in_progress and lock is not None and int(lock["N"]) < int(now * 1000))


class FakeDynamoProtocol(asyncio.Protocol):
    """One keep-alive connection to the fake endpoint."""

    def __init__(self, table: FakeTable, delay_s: float) -> None:
        self.table = table
        self.delay_s = delay_s
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (framed := split_request(self.buffer)) is not None:
            self.respond(framed[0])

    def respond(self, request: Request) -> None:
        if request.path == STATS_PATH:
            payload = json_response(200, dict(self.table.requests))
        else:
            status, data = self.table.handle(request.operation, json.loads(request.body))
            payload = json_response(status, data)
        transport = self.transport
        assert transport is not None
        if self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, _write, transport, payload)
        else:
            transport.write(payload)


def _write(transport: asyncio.Transport, payload: bytes) -> None:
    if not transport.is_closing():
        transport.write(payload)


async def start(port: int = 0, delay_ms: float = 0.0) -> asyncio.Server:
    table = FakeTable()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: FakeDynamoProtocol(table, delay_ms / 1000), "127.0.0.1", port, backlog=2048
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve_until_stdin_closes(start(args.port, args.delay_ms))


if __name__ == "__main__":
    main()
