"""The workloads, each run against one contender on one endpoint.

- sequential fresh calls, then the same payloads again (duplicates of completed records);
- N concurrent calls with distinct keys (throughput, latency under load);
- N concurrent duplicates of one key with waiting on (the body must run once);
- N calls held in flight at once (memory per in-flight call);
- the request count of every path in DESIGN.md's round-trip budget.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.contenders import Contender, order
from benchmarks.measure import Round, Timer, current_rss_bytes, measure, summarize

REQUEST_BUDGET = {
    "fresh": 2,
    "duplicate_completed": 1,
    "duplicate_local_cache": 0,
    "duplicate_in_progress": 1,
    "function_raises": 2,
    "duplicate_attached_waiting": 0,
}
"""DESIGN.md's round-trip budget: requests per call on each path."""


SEQUENTIAL_WORKLOADS = ("sequential_fresh", "sequential_duplicate")


@dataclass(frozen=True)
class Sizes:
    sequential_calls: int = 300
    sequential_rounds: int = 10
    """Many short rounds: the CPU ratios come from their medians."""
    concurrent_calls: int = 500
    rounds: int = 5
    memory_in_flight: int = 10_000
    warmup_calls: int = 50


FULL = Sizes()
QUICK = Sizes(
    sequential_calls=10,
    sequential_rounds=1,
    concurrent_calls=10,
    rounds=1,
    memory_in_flight=100,
    warmup_calls=3,
)


def _row(
    contender: Contender, workload: str, latency_ms: float, rounds: list[Round], runs: int
) -> dict[str, Any]:
    return {
        "contender": contender.name,
        "workload": workload,
        "latency_ms": latency_ms,
        "body_runs": runs,
        **summarize(rounds),
    }


async def warm_up(contender: Contender, tag: str, calls: int) -> None:
    """Open connections and fill caches before anything is measured."""
    for i in range(calls):
        await contender.call(order(f"{tag}-warm-seq-{i}"))
    await asyncio.gather(*(contender.call(order(f"{tag}-warm-conc-{i}")) for i in range(calls)))


async def sequential(
    contenders: list[Contender], url: str, sizes: Sizes, tag: str, latency_ms: float
) -> list[dict[str, Any]]:
    """Fresh calls one after another, then each payload again (duplicates).

    The contenders take turns round by round in one process, so that a change
    in the machine's load during the run weighs on each of them alike.
    """
    measured: dict[tuple[str, str], list[Round]] = {}
    runs: Counter[tuple[str, str]] = Counter()
    for r in range(sizes.sequential_rounds):
        for contender in contenders:
            batch = [
                order(f"{tag}-{contender.name}-seq-{r}-{i}") for i in range(sizes.sequential_calls)
            ]
            for workload in SEQUENTIAL_WORKLOADS:
                runs_before = contender.body.runs

                async def run(
                    timer: Timer, batch: list[dict[str, Any]] = batch, c: Contender = contender
                ) -> None:
                    for payload in batch:
                        await timer.timed(functools.partial(c.call, payload))

                result = await measure(url, len(batch), run)
                measured.setdefault((contender.name, workload), []).append(result)
                runs[(contender.name, workload)] += contender.body.runs - runs_before
    return [
        _row(contender, workload, latency_ms, measured[(contender.name, workload)], runs[key])
        for contender in contenders
        for workload in SEQUENTIAL_WORKLOADS
        for key in [(contender.name, workload)]
    ]


async def concurrent_fresh(
    contender: Contender, url: str, sizes: Sizes, tag: str, latency_ms: float
) -> dict[str, Any]:
    """N calls with distinct keys, all started at once."""
    runs_before = contender.body.runs
    rounds = []
    for r in range(sizes.rounds):
        batch = [order(f"{tag}-conc-{r}-{i}") for i in range(sizes.concurrent_calls)]

        async def run(timer: Timer, batch: list[dict[str, Any]] = batch) -> None:
            await asyncio.gather(
                *(timer.timed(functools.partial(contender.call, payload)) for payload in batch)
            )

        rounds.append(await measure(url, len(batch), run))
    return _row(
        contender, "concurrent_fresh", latency_ms, rounds, contender.body.runs - runs_before
    )


async def concurrent_duplicates(
    contender: Contender, url: str, sizes: Sizes, tag: str, latency_ms: float
) -> dict[str, Any]:
    """N duplicates of one key at once, waiting on: one body run, the rest replay."""
    runs_before = contender.body.runs
    rounds = []
    distinct_results = 0
    for r in range(sizes.rounds):
        payload = order(f"{tag}-dup-{r}")
        results: list[Any] = []

        async def run(
            timer: Timer, payload: dict[str, Any] = payload, results: list[Any] = results
        ) -> None:
            results.extend(
                await asyncio.gather(
                    *(
                        timer.timed(lambda: contender.call(payload, waiting=True))
                        for _ in range(sizes.concurrent_calls)
                    )
                )
            )

        rounds.append(await measure(url, sizes.concurrent_calls, run))
        distinct_results += len({repr(result) for result in results})
    row = _row(
        contender,
        "concurrent_duplicates_waiting",
        latency_ms,
        rounds,
        contender.body.runs - runs_before,
    )
    row["body_runs_per_round"] = row["body_runs"] / len(rounds)
    row["distinct_results_per_round"] = distinct_results / len(rounds)
    row["requests_per_round"] = sum(row["requests_by_operation"].values()) / len(rounds)
    return row


async def wait_until(condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the workload did not reach the expected state")
        await asyncio.sleep(0.01)


MEMORY_WAVE = 500
"""Calls the memory workload starts at once."""


async def memory_in_flight(contender: Contender, tag: str, calls: int) -> dict[str, Any]:
    """Hold ``calls`` calls inside the body at once; resident memory per in-flight call.

    A thread-pool contender can hold at most its thread count in flight: it is
    measured at that count.
    """
    in_flight = min(calls, contender.max_in_flight or calls)
    contender.body.hold()
    gc.collect()
    baseline = current_rss_bytes()
    tasks: list[asyncio.Future[Any]] = []

    def held(count: int) -> Callable[[], bool]:
        return lambda: contender.body.in_flight >= count

    # Started a wave at a time: ten thousand calls started at once keep the loop busy
    # for seconds preparing requests, so their connections time out before it gets
    # back to them. What is measured is the memory of calls held, not that burst.
    for start in range(0, in_flight, MEMORY_WAVE):
        tasks += [
            asyncio.ensure_future(contender.call(order(f"{tag}-mem-{i}", hold=True)))
            for i in range(start, min(start + MEMORY_WAVE, in_flight))
        ]
        await wait_until(held(len(tasks)))
    peak = current_rss_bytes()
    contender.body.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "contender": contender.name,
        "workload": "memory_in_flight",
        "latency_ms": 0.0,
        "in_flight": in_flight,
        "rss_baseline_bytes": baseline,
        "rss_in_flight_bytes": peak,
        "bytes_per_in_flight_call": (peak - baseline) / in_flight,
        "errors": dict(Counter(type(e).__name__ for e in errors)),
    }


async def request_paths(contender: Contender, url: str, tag: str) -> dict[str, Any]:
    """Requests sent on each path of the round-trip budget, one call each."""

    async def requests_of(call: Callable[[], Any]) -> tuple[int, dict[str, int]]:
        async def run(timer: Timer) -> None:
            await timer.timed(call)

        result = await measure(url, 1, run)
        return sum(result.requests.values()), dict(result.errors)

    paths: dict[str, Any] = {}
    fresh = order(f"{tag}-path-fresh")
    paths["fresh"] = await requests_of(lambda: contender.call(fresh))
    paths["duplicate_completed"] = await requests_of(lambda: contender.call(fresh))
    paths["function_raises"] = await requests_of(
        lambda: contender.call(order(f"{tag}-path-raise", fail=True))
    )

    held = order(f"{tag}-path-held", hold=True)
    contender.body.hold()
    first = asyncio.ensure_future(contender.call(held))
    await wait_until(lambda: contender.body.in_flight >= 1)
    paths["duplicate_in_progress"] = await requests_of(lambda: contender.call(held))
    contender.body.release()
    await first

    if contender.supports_local_cache:
        cached = order(f"{tag}-path-cached")
        await contender.call_cached(cached)
        paths["duplicate_local_cache"] = await requests_of(lambda: contender.call_cached(cached))

    if contender.supports_waiting:
        attached = order(f"{tag}-path-attached", hold=True)
        contender.body.hold()

        async def leader_and_duplicate() -> None:
            leader = asyncio.ensure_future(contender.call(attached, waiting=True))
            await wait_until(lambda: contender.body.in_flight >= 1)
            duplicate = asyncio.ensure_future(contender.call(attached, waiting=True))
            await asyncio.sleep(0.05)
            contender.body.release()
            await asyncio.gather(leader, duplicate)

        both, errors = await requests_of(leader_and_duplicate)
        paths["duplicate_attached_waiting"] = (both - REQUEST_BUDGET["fresh"], errors)

    return {
        name: {
            "requests": requests,
            "budget": REQUEST_BUDGET[name],
            "within_budget": requests <= REQUEST_BUDGET[name],
            "errors": errors,
        }
        for name, (requests, errors) in paths.items()
    }
