"""A fault-injecting HTTP proxy between the DynamoDB client and the local server.

The store's ``endpoint_url`` points at the proxy; the proxy forwards each
request to the server unless a fault armed for that operation says otherwise::

    proxy.inject(FaultKind.DROP_RESPONSE, operation="PutItem")   # the next PutItem
    proxy.inject(FaultKind.THROTTLING, operation="UpdateItem", times=2)

Faults are matched by operation (the ``X-Amz-Target`` header) and consumed by
count; ``times=None`` arms a fault for every matching request. Every request is
recorded with its decoded body and the fault it met, so tests can assert what
the client really sent.

HTTP/1.1 keep-alive works on both sides. Requests carry a Content-Length body
(the client always sends one); responses are read with Content-Length, chunked
encoding, or to the end of the connection, and passed on with a Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Self
from urllib.parse import urlsplit

TARGET_HEADER = b"x-amz-target"
HEAD_END = b"\r\n\r\n"


class FaultKind(Enum):
    LATENCY = "latency"
    """Wait ``delay`` seconds, then forward."""
    DROP_REQUEST = "drop_request"
    """Close the connection without forwarding: the write is not applied."""
    DROP_RESPONSE = "drop_response"
    """Forward, then close without answering: applied, and the client never hears."""
    STALL = "stall"
    """Hold the request unanswered until the client gives up (its read timeout)."""
    INTERNAL_ERROR = "internal_error"
    """Answer HTTP 500 InternalServerError."""
    SERVICE_UNAVAILABLE = "service_unavailable"
    """Answer HTTP 503 ServiceUnavailable."""
    THROUGHPUT_EXCEEDED = "throughput_exceeded"
    """Answer HTTP 400 ProvisionedThroughputExceededException."""
    THROTTLING = "throttling"
    """Answer HTTP 400 ThrottlingException."""
    NO_OLD_ITEM = "no_old_item"
    """Forward, but strip the old item from a failed condition's answer, as a server
    that ignores ``ReturnValuesOnConditionCheckFailure`` would."""


ERROR_ANSWERS: dict[FaultKind, tuple[int, str, str]] = {
    FaultKind.INTERNAL_ERROR: (
        500,
        "Internal Server Error",
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
    ),
    FaultKind.SERVICE_UNAVAILABLE: (
        503,
        "Service Unavailable",
        "com.amazonaws.dynamodb.v20120810#ServiceUnavailableException",
    ),
    FaultKind.THROUGHPUT_EXCEEDED: (
        400,
        "Bad Request",
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    ),
    FaultKind.THROTTLING: (
        400,
        "Bad Request",
        "com.amazon.coral.availability#ThrottlingException",
    ),
}


@dataclass
class Fault:
    """One armed fault. ``forward=True`` applies the request upstream first
    (for STALL and the error answers: the write happens, the client hears otherwise)."""

    kind: FaultKind
    operation: str | None = None
    times: int | None = 1
    delay: float = 0.0
    forward: bool = False
    hits: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a request has met the fault (for STALL: once the stall has begun)."""

    def matches(self, operation: str) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        return self.times is None or self.hits < self.times


@dataclass(frozen=True)
class SeenRequest:
    """A request the proxy received, and the fault it met (None: forwarded as is)."""

    operation: str
    body: dict[str, Any]
    fault: FaultKind | None


@dataclass
class HttpMessage:
    head: bytes
    """Start line and headers, without the final blank line."""
    body: bytes
    headers: dict[bytes, bytes] = field(default_factory=dict)

    @classmethod
    def parse_head(cls, head: bytes) -> HttpMessage:
        lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return cls(head=head, body=b"", headers=headers)

    @property
    def start_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]


class FaultProxy:
    """A proxy on 127.0.0.1 (a free port) in front of ``upstream_url``.

    ``async with FaultProxy(url) as proxy:`` starts it and always stops it.
    """

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream URL needs a host and a port: {upstream_url!r}")
        self._upstream = (parts.hostname, parts.port)
        self._server: asyncio.Server | None = None
        self._faults: list[Fault] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.seen: list[SeenRequest] = []
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening and end every connection still open (stalled ones included)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- control ---------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind,
        *,
        operation: str | None = None,
        times: int | None = 1,
        delay: float = 0.0,
        forward: bool = False,
    ) -> Fault:
        """Arm a fault for the next ``times`` requests of ``operation`` (None: any)."""
        fault = Fault(kind, operation, times, delay, forward)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def requests(self, operation: str | None = None) -> list[SeenRequest]:
        return [r for r in self.seen if operation is None or r.operation == operation]

    @property
    def operations(self) -> list[str]:
        return [r.operation for r in self.seen]

    def _take_fault(self, operation: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(operation):
                fault.hits += 1
                return fault
        return None

    # --- serving -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection handler always runs in a task
        self._handlers.add(task)
        upstream = _Upstream(*self._upstream)
        try:
            while await self._serve_one(reader, writer, upstream):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            await upstream.close()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _serve_one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
    ) -> bool:
        """Handle one request; False when the client connection must end."""
        request = await _read_request(reader)
        if request is None:
            return False
        target = request.headers.get(TARGET_HEADER, b"").decode()
        operation = target.rsplit(".", 1)[-1]
        fault = self._take_fault(operation)
        self.seen.append(
            SeenRequest(operation, _json_body(request.body), fault.kind if fault else None)
        )
        if fault is None:
            await _answer(writer, await upstream.exchange(request))
            return True
        if fault.kind is not FaultKind.STALL:
            fault.reached.set()
        if fault.kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.delay)
            await _answer(writer, await upstream.exchange(request))
            return True
        if fault.kind is FaultKind.DROP_REQUEST:
            return False
        if fault.kind is FaultKind.DROP_RESPONSE:
            await upstream.exchange(request)
            return False
        if fault.kind is FaultKind.NO_OLD_ITEM:
            await _answer(writer, _without_old_item(await upstream.exchange(request)))
            return True
        if fault.forward:
            await upstream.exchange(request)
        if fault.kind is FaultKind.STALL:
            fault.reached.set()
            await _until_client_leaves(reader)
            return False
        await _answer(writer, _error_answer(fault.kind))
        return True


class _Upstream:
    """One keep-alive connection to the server, reopened when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: HttpMessage) -> HttpMessage:
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        writer.write(request.head + HEAD_END + request.body)
        await writer.drain()
        response = await _read_response(reader)
        if response.headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return response

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(ConnectionError):
                await streams[1].wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> HttpMessage | None:
    try:
        head = await reader.readuntil(HEAD_END)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None  # the client closed an idle keep-alive connection
    request = HttpMessage.parse_head(head[: -len(HEAD_END)])
    length = int(request.headers.get(b"content-length", b"0"))
    request.body = await reader.readexactly(length)
    return request


async def _read_response(reader: asyncio.StreamReader) -> HttpMessage:
    head = await reader.readuntil(HEAD_END)
    response = HttpMessage.parse_head(head[: -len(HEAD_END)])
    if b"content-length" in response.headers:
        response.body = await reader.readexactly(int(response.headers[b"content-length"]))
    elif response.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        response.body = await _read_chunked(reader)
    else:
        response.body = await reader.read()
        response.headers[b"connection"] = b"close"
    return response


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with a blank line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _answer(writer: asyncio.StreamWriter, response: HttpMessage) -> None:
    """Pass a response on with a Content-Length, keeping the client connection open."""
    skipped = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
    lines = [response.start_line]
    lines += [
        name + b": " + value for name, value in response.headers.items() if name not in skipped
    ]
    lines.append(b"Content-Length: " + str(len(response.body)).encode())
    writer.write(b"\r\n".join(lines) + HEAD_END + response.body)
    await writer.drain()


def _error_answer(kind: FaultKind) -> HttpMessage:
    status, reason, error_type = ERROR_ANSWERS[kind]
    body = json.dumps({"__type": error_type, "message": f"injected {kind.value}"}).encode()
    response = HttpMessage(head=f"HTTP/1.1 {status} {reason}".encode(), body=body)
    response.headers = {
        b"content-type": b"application/x-amz-json-1.0",
        b"x-amzn-requestid": b"injected-fault",
    }
    return response


def _without_old_item(response: HttpMessage) -> HttpMessage:
    if not response.body:
        return response
    body = json.loads(response.body)
    if not str(body.get("__type", "")).endswith("ConditionalCheckFailedException"):
        return response
    body.pop("Item", None)
    response.body = json.dumps(body).encode()
    # The client checks DynamoDB's body checksum: a changed body needs a new one.
    response.headers[b"x-amz-crc32"] = str(zlib.crc32(response.body)).encode()
    return response


async def _until_client_leaves(reader: asyncio.StreamReader) -> None:
    """Wait until the client closes the connection (it timed out), or the proxy stops."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


def _json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    decoded: dict[str, Any] = json.loads(body)
    return decoded
