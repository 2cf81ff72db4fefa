"""What one measured round records: wall time, per-call latency, client CPU, requests."""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.http_wire import STATS_PATH


def request_counts(endpoint_url: str) -> Counter[str]:
    """Requests the endpoint (fake server or proxy) has seen, by operation."""
    with urllib.request.urlopen(endpoint_url + STATS_PATH.decode(), timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
    return Counter(counts)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Round:
    """One round of calls."""

    calls: int
    wall_s: float
    cpu_s: float
    latencies_s: list[float]
    requests: Counter[str]
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def throughput_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0


class Timer:
    """Wraps calls to record each one's latency and failures."""

    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.errors: Counter[str] = Counter()

    async def timed(self, call: Callable[[], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        try:
            return await call()
        except Exception as exc:  # recorded, not raised: one failure must not stop a round
            self.errors[type(exc).__name__] += 1
            return exc
        finally:
            self.latencies_s.append(time.perf_counter() - start)


async def measure(endpoint_url: str, calls: int, run: Callable[[Timer], Awaitable[None]]) -> Round:
    """Run ``run`` once, measuring wall time, process CPU time and requests sent."""
    timer = Timer()
    before = request_counts(endpoint_url)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    await run(timer)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    requests = request_counts(endpoint_url) - before
    return Round(calls, wall, cpu, timer.latencies_s, requests, timer.errors)


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Medians across rounds (robust to a noisy neighbour), latencies over all calls."""
    latencies = [s for r in rounds for s in r.latencies_s]
    calls = sum(r.calls for r in rounds)
    requests: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in rounds:
        requests.update(r.requests)
        errors.update(r.errors)
    return {
        "rounds": len(rounds),
        "calls_per_round": rounds[0].calls,
        "throughput_per_s": statistics.median(r.throughput_per_s for r in rounds),
        "throughput_per_s_rounds": [r.throughput_per_s for r in rounds],
        "latency_median_ms": statistics.median(latencies) * 1000 if latencies else None,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None,
        "cpu_us_per_call": statistics.median(r.cpu_s / r.calls * 1e6 for r in rounds),
        "cpu_us_per_call_rounds": [r.cpu_s / r.calls * 1e6 for r in rounds],
        "requests_per_call": sum(requests.values()) / calls if calls else None,
        "requests_by_operation": dict(requests),
        "errors": dict(errors),
    }
