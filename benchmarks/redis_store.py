"""The Redis store against Powertools' Redis layer, on one local server.

Run with ``python -m benchmarks.redis_store`` (``--quick`` for a smoke run);
not part of the test suite. It starts a ``valkey-server``/``redis-server``
process (``idemstore.loopback.start_redis_server``) and makes the same
idempotent call with two contenders:

- ``idemstore``: ``AsyncRedisStore`` on a ``redis.asyncio`` client, calls as
  concurrent tasks;
- ``powertools``: ``idempotent_function`` with ``RedisCachePersistenceLayer``
  on redis-py's sync client, calls on a thread pool of the same size.

For fresh calls (a new key each) and duplicates (a completed key) it reports
client requests per call (the commands the client sends, counted by wrapping
its ``execute_command``), server commands per call (the server's count, which
includes the commands a script runs and each new connection's handshake), and
the client process's CPU time per call (the server is another process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import redis
import redis.asyncio

from idemstore import AsyncRedisStore, idempotent_function
from idemstore.loopback import RedisServer, start_redis_server

CONTENDERS = ("idemstore", "powertools")
WORKLOADS = ("fresh", "duplicate")


@dataclass(frozen=True)
class Row:
    contender: str
    workload: str
    calls: int
    client_requests_per_call: float
    server_commands_per_call: float
    cpu_us_per_call: float
    wall_s: float


class RequestCounter:
    """Counts the requests a client sends: each command through ``execute_command``."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        original = client.execute_command
        if asyncio.iscoroutinefunction(original):

            async def counted_async(*args: Any, **options: Any) -> Any:
                self.count += 1
                return await original(*args, **options)

            client.execute_command = counted_async
        else:

            def counted(*args: Any, **options: Any) -> Any:
                self.count += 1
                return original(*args, **options)

            client.execute_command = counted


def server_commands(server: RedisServer) -> int:
    """Commands the server has processed, not counting this question."""
    with redis.Redis(host=server.host, port=server.port) as probe:
        stats: dict[str, Any] = probe.info("stats")
        return int(stats["total_commands_processed"])


def flush(server: RedisServer) -> None:
    with redis.Redis(host=server.host, port=server.port) as probe:
        probe.flushdb()


async def measure(
    server: RedisServer,
    contender: str,
    workload: str,
    counter: RequestCounter,
    run_all: Callable[[list[dict[str, Any]]], Awaitable[None]],
    calls: int,
) -> Row:
    orders = [{"order_id": f"{workload}-{i}", "amount": i} for i in range(calls)]
    if workload == "duplicate":
        await run_all(orders)  # complete every key first; the measured calls replay
    counter.count = 0
    commands_before = server_commands(server)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await run_all(orders)
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    # Each server_commands() call is itself one command: subtract the one before.
    commands = server_commands(server) - commands_before - 1
    return Row(
        contender=contender,
        workload=workload,
        calls=calls,
        client_requests_per_call=counter.count / calls,
        server_commands_per_call=commands / calls,
        cpu_us_per_call=cpu / calls * 1e6,
        wall_s=wall,
    )


async def run_idemstore(server: RedisServer, calls: int, concurrency: int) -> list[Row]:
    client = redis.asyncio.Redis(host=server.host, port=server.port)
    store = AsyncRedisStore(client)
    counter = RequestCounter(client)

    @idempotent_function(data_keyword_argument="order", persistence_store=store)
    async def charge(order: dict[str, Any]) -> dict[str, Any]:
        return {"charged": order["amount"]}

    limit = asyncio.Semaphore(concurrency)

    async def one(order: dict[str, Any]) -> None:
        async with limit:
            await charge(order=order)

    async def run_all(orders: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(one(order) for order in orders))

    try:
        await run_all([{"order_id": f"warm-{i}", "amount": i} for i in range(20)])
        rows = []
        for workload in WORKLOADS:
            flush(server)
            rows.append(await measure(server, "idemstore", workload, counter, run_all, calls))
        return rows
    finally:
        await client.aclose()


async def run_powertools(server: RedisServer, calls: int, concurrency: int) -> list[Row]:
    from aws_lambda_powertools.utilities.idempotency import (
        IdempotencyConfig,
    )
    from aws_lambda_powertools.utilities.idempotency import (
        idempotent_function as powertools_idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.redis import (
        RedisCachePersistenceLayer,
    )

    # Powertools' client protocol is narrower than redis-py's own signatures: Any.
    client: Any = redis.Redis(
        host=server.host, port=server.port, decode_responses=True, max_connections=concurrency
    )
    counter = RequestCounter(client)
    with warnings.catch_warnings():
        # Marked deprecated in favour of CachePersistenceLayer, the same class.
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = RedisCachePersistenceLayer(client=client)

    def charge(order: dict[str, Any]) -> dict[str, Any]:
        return {"charged": order["amount"]}

    # A Lambda context, so Powertools' locks get an in-progress expiry like idemstore's.
    config = IdempotencyConfig()
    context: Any = _LambdaContext()  # duck-typed: only the remaining time is read
    config.register_lambda_context(context)
    decorated = powertools_idempotent_function(
        charge,
        data_keyword_argument="order",
        persistence_store=layer,
        config=config,
    )
    pool = ThreadPoolExecutor(max_workers=concurrency)
    loop = asyncio.get_running_loop()

    async def run_all(orders: list[dict[str, Any]]) -> None:
        await asyncio.gather(
            *(loop.run_in_executor(pool, partial(decorated, order=order)) for order in orders)
        )

    try:
        await run_all([{"order_id": f"warm-{i}", "amount": i} for i in range(20)])
        rows = []
        for workload in WORKLOADS:
            flush(server)
            rows.append(await measure(server, "powertools", workload, counter, run_all, calls))
        return rows
    finally:
        pool.shutdown()
        client.close()


class _LambdaContext:
    """What Powertools reads from a Lambda context: the time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def report(rows: list[Row], settings: dict[str, Any]) -> str:
    lines = [
        "# idemstore Redis store benchmark",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; settings: {json.dumps(settings)}",
        "",
        "| contender | workload | calls | client requests/call | server commands/call "
        "| CPU µs/call | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.contender} | {row.workload} | {row.calls} "
            f"| {row.client_requests_per_call:.2f} | {row.server_commands_per_call:.2f} "
            f"| {row.cpu_us_per_call:.0f} | {row.wall_s:.2f} |"
        )
    by_key = {(row.contender, row.workload): row for row in rows}
    lines.append("")
    for workload in WORKLOADS:
        ours, theirs = by_key[("idemstore", workload)], by_key[("powertools", workload)]
        ratio = ours.cpu_us_per_call / theirs.cpu_us_per_call
        lines.append(f"- {workload}: idemstore CPU per call = {ratio:.2f}x Powertools'")
    return "\n".join(lines)


async def main_async(calls: int, concurrency: int) -> list[Row]:
    server = start_redis_server()
    try:
        rows = await run_idemstore(server, calls, concurrency)
        rows += await run_powertools(server, calls, concurrency)
        return rows
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per workload")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks / threads in flight")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 calls")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    options = parser.parse_args(argv)
    calls = 50 if options.quick else options.calls
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "bench")
    rows = asyncio.run(main_async(calls, options.concurrency))
    settings = {"calls": calls, "concurrency": options.concurrency, "quick": options.quick}
    print(report(rows, settings))
    if options.json:
        with open(options.json, "w") as out:
            json.dump({"settings": settings, "rows": [asdict(r) for r in rows]}, out, indent=2)


if __name__ == "__main__":
    main()
