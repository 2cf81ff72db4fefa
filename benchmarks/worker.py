"""One contender's measurements, in a process of its own.

Run by the harness: ``python -m benchmarks.worker PLAN.json OUT.json``. The plan
names the contender, the endpoints (latency in ms -> URL), the sizes and the
workloads; the result is JSON rows, one per workload and latency.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from benchmarks import workloads
from benchmarks.contenders import TABLE_NAME, make_contender
from benchmarks.measure import peak_rss_bytes
from benchmarks.workloads import Sizes

MEMORY_WARMUP_CALLS = 5


@dataclass(frozen=True)
class Plan:
    contenders: list[str]
    """One, except in ``sequential`` mode, where they take turns in this one process."""
    modes: list[str]
    """``sequential``: sequential calls (latency, CPU per call); ``timing``: concurrent
    calls (throughput) and request paths; ``memory``: RSS per call held in flight."""
    endpoints: dict[str, str]
    """Latency in ms (as text, JSON keys) -> the URL that adds it."""
    paths_endpoint: str
    paths_backend: str
    sizes: Sizes
    sequential_latencies: list[float] = field(default_factory=lambda: [0.0])
    concurrent_latencies: list[float] = field(default_factory=lambda: [0.0])

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "sizes": self.sizes.__dict__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(**{**data, "sizes": Sizes(**data["sizes"])})


async def run_sequential(plan: Plan, tag: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for latency in plan.sequential_latencies:
        url = plan.endpoints[f"{latency:g}"]
        contenders = [make_contender(name) for name in plan.contenders]
        try:
            for contender in contenders:
                await contender.open(url)
                await workloads.warm_up(
                    contender, f"{tag}-{contender.name}", plan.sizes.warmup_calls
                )
            rows += await workloads.sequential(contenders, url, plan.sizes, tag, latency)
        finally:
            for contender in contenders:
                await contender.close()
    return rows


async def run_timing(plan: Plan, tag: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    (name,) = plan.contenders
    for latency in plan.concurrent_latencies:
        latency_text = f"{latency:g}"
        url = plan.endpoints[latency_text]
        contender = make_contender(name)
        await contender.open(url)
        try:
            run_tag = f"{tag}-{latency_text}"
            await workloads.warm_up(contender, run_tag, plan.sizes.warmup_calls)
            rows.append(
                await workloads.concurrent_fresh(contender, url, plan.sizes, run_tag, latency)
            )
            if contender.supports_waiting:
                rows.append(
                    await workloads.concurrent_duplicates(
                        contender, url, plan.sizes, run_tag, latency
                    )
                )
        finally:
            await contender.close()
    return rows


async def run_paths(plan: Plan, tag: str) -> dict[str, Any]:
    if plan.paths_backend == "moto":
        await create_table(plan.paths_endpoint)
    (name,) = plan.contenders
    contender = make_contender(name)
    await contender.open(plan.paths_endpoint)
    try:
        return {
            "backend": plan.paths_backend,
            "paths": await workloads.request_paths(contender, plan.paths_endpoint, tag),
        }
    finally:
        await contender.close()


async def create_table(endpoint_url: str) -> None:
    from idemstore.loopback import DUMMY_REGION, isolated_session
    from idemstore.tables import create_table as create

    async with isolated_session().create_client(
        "dynamodb", region_name=DUMMY_REGION, endpoint_url=endpoint_url
    ) as client:
        await create(client, TABLE_NAME)


async def run_memory(plan: Plan, tag: str) -> list[dict[str, Any]]:
    (name,) = plan.contenders
    contender = make_contender(name)
    url = plan.endpoints["0"] if "0" in plan.endpoints else next(iter(plan.endpoints.values()))
    await contender.open(url)
    try:
        # A short warm-up: memory its calls freed would be reused by the first calls held.
        await workloads.warm_up(contender, tag, min(plan.sizes.warmup_calls, MEMORY_WARMUP_CALLS))
        return [await workloads.memory_in_flight(contender, tag, plan.sizes.memory_in_flight)]
    finally:
        await contender.close()


async def run(plan: Plan) -> dict[str, Any]:
    tag = f"{uuid.uuid4().hex[:8]}-{'-'.join(plan.contenders)}"
    result: dict[str, Any] = {"contenders": plan.contenders, "modes": plan.modes, "rows": []}
    unknown = set(plan.modes) - {"sequential", "timing", "memory"}
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}")
    if "sequential" in plan.modes:
        result["rows"] += await run_sequential(plan, tag)
    if "timing" in plan.modes:
        result["rows"] += await run_timing(plan, tag)
        result["paths"] = await run_paths(plan, tag)
    if "memory" in plan.modes:
        result["rows"] += await run_memory(plan, tag)
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def main() -> None:
    # Outside Lambda the Powertools utility warns on every call that it has no
    # context; the warning says nothing about the benchmark.
    warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")
    plan_path, out_path = sys.argv[1], sys.argv[2]
    with open(plan_path) as plan_file:
        plan = Plan.from_json(json.load(plan_file))
    result = asyncio.run(run(plan))
    with open(out_path, "w") as out_file:
        json.dump(result, out_file, indent=2)


if __name__ == "__main__":
    main()
