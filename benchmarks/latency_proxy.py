"""A loopback proxy that delays every request by a fixed time, and counts requests.

It stands for the network between a client and DynamoDB: each request is
forwarded to the upstream server (the fake endpoint or moto) ``delay_ms``
after it fully arrived; responses come straight back. Each client connection
gets one upstream connection of its own, so keep-alive and connection pool
sizes behave as they would against the real service. Counting happens here,
outside the client, so counting costs the measured client nothing.

Run: ``python -m benchmarks.latency_proxy --upstream URL [--delay-ms 25]``;
prints ``LISTENING <url>`` and serves until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from urllib.parse import urlsplit

from benchmarks.http_wire import STATS_PATH, json_response, split_request
from benchmarks.processes import serve_until_stdin_closes


class _Upstream(asyncio.Protocol):
    """Responses from the upstream server, passed back unchanged."""

    def __init__(self, downstream: asyncio.Transport) -> None:
        self.downstream = downstream

    def data_received(self, data: bytes) -> None:
        self.downstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.downstream.close()


class DelayingProxy(asyncio.Protocol):
    """One client connection: requests delayed, then forwarded on its upstream connection."""

    def __init__(self, host: str, port: int, delay_s: float, requests: Counter[str]) -> None:
        self.host, self.port, self.delay_s = host, port, delay_s
        self.requests = requests
        self.buffer = bytearray()
        self.pending: list[bytes] = []
        self.downstream: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.downstream = transport
        asyncio.get_running_loop().create_task(self._connect(transport))

    async def _connect(self, downstream: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: _Upstream(downstream), self.host, self.port
            )
        except OSError:
            downstream.close()
            return
        self.upstream = transport
        for raw in self.pending:
            transport.write(raw)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (framed := split_request(self.buffer)) is not None:
            request, raw = framed
            if request.path == STATS_PATH:
                assert self.downstream is not None
                self.downstream.write(json_response(200, dict(self.requests)))
                continue
            self.requests[request.operation] += 1
            if self.delay_s > 0:
                asyncio.get_running_loop().call_later(self.delay_s, self._forward, raw)
            else:
                self._forward(raw)

    def _forward(self, raw: bytes) -> None:
        if self.upstream is None:
            self.pending.append(raw)
        elif not self.upstream.is_closing():
            self.upstream.write(raw)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def start(upstream_url: str, delay_ms: float, port: int = 0) -> asyncio.Server:
    upstream = urlsplit(upstream_url)
    host, upstream_port = upstream.hostname or "127.0.0.1", upstream.port or 80
    requests: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: DelayingProxy(host, upstream_port, delay_ms / 1000, requests),
        "127.0.0.1",
        port,
        backlog=2048,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve_until_stdin_closes(start(args.upstream, args.delay_ms, args.port))


if __name__ == "__main__":
    main()
