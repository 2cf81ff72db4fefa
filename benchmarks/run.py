"""The harness: start the servers, run every contender in its own process, write the report.

    python -m benchmarks                      # the full run (several minutes)
    python -m benchmarks --quick              # a handful of calls, to check the harness works
    python -m benchmarks --only cold_start    # some workloads only (comma-separated)

Results go to ``benchmarks/results/`` (``bench-<time>.json`` and ``.md``, and
``latest.*``); the markdown is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cold_start, report
from benchmarks.contenders import CONTENDER_NAMES
from benchmarks.processes import ROOT, ServerProcess
from benchmarks.worker import Plan
from benchmarks.workloads import FULL, QUICK

RESULTS_DIR = ROOT / "benchmarks" / "results"
WORKER_TIMEOUT_S = 1800

# Isolate every AWS SDK in the workers from the user's configuration and the network.
WORKER_ENVIRONMENT = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
CLEARED_ENVIRONMENT = ("AWS_PROFILE", "AWS_LAMBDA_FUNCTION_NAME", "AWS_SESSION_TOKEN")
WORKLOAD_GROUPS = ("sequential", "timing", "memory", "cold_start")
"""What ``--only`` selects: the worker modes, and the cold starts."""
COLD_START_SAMPLES = {"full": 9, "quick": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a handful of calls, fake only")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDER_NAMES), help="comma-separated names"
    )
    parser.add_argument("--latencies", help="ms per request, comma-separated (default 0,5,25)")
    parser.add_argument("--sequential-latencies", default="0", help="ms, comma-separated")
    parser.add_argument("--paths-backend", choices=("moto", "fake"))
    parser.add_argument("--calls", type=int, help="calls per sequential round")
    parser.add_argument("--concurrency", type=int, help="calls per concurrent round (N)")
    parser.add_argument("--rounds", type=int, help="rounds per concurrent workload")
    parser.add_argument("--sequential-rounds", type=int, help="rounds per sequential workload")
    parser.add_argument("--in-flight", type=int, help="calls held in flight for memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory workload")
    parser.add_argument(
        "--only",
        default=",".join(WORKLOAD_GROUPS),
        help=f"comma-separated, among {', '.join(WORKLOAD_GROUPS)} (default: all)",
    )
    parser.add_argument("--cold-samples", type=int, help="fresh interpreters per contender")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    return parser.parse_args(argv)


def _latencies(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _key(latency: float) -> str:
    return f"{latency:g}"


def worker_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENVIRONMENT}
    env.update(WORKER_ENVIRONMENT, PYTHONPATH=str(ROOT))
    return env


def run_worker(plan: Plan) -> dict[str, Any]:
    env = worker_environment()
    with tempfile.TemporaryDirectory(prefix="idemstore-bench-") as scratch:
        plan_path, out_path = Path(scratch, "plan.json"), Path(scratch, "out.json")
        plan_path.write_text(json.dumps(plan.to_json()))
        subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", str(plan_path), str(out_path)],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=WORKER_TIMEOUT_S,
        )
        result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        "sequential_calls": args.calls,
        "concurrent_calls": args.concurrency,
        "rounds": args.rounds,
        "sequential_rounds": args.sequential_rounds,
        "memory_in_flight": args.in_flight,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    latencies = _latencies(args.latencies or ("0" if args.quick else "0,5,25"))
    paths_backend = args.paths_backend or ("fake" if args.quick else "moto")
    contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = set(contenders) - set(CONTENDER_NAMES)
    if unknown:
        raise SystemExit(f"unknown contenders: {sorted(unknown)}; known: {CONTENDER_NAMES}")
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(WORKLOAD_GROUPS)
    if unknown or not only:
        raise SystemExit(f"unknown workloads: {sorted(unknown)}; known: {WORKLOAD_GROUPS}")
    if args.no_memory:
        only = [name for name in only if name != "memory"]
    cold_samples = args.cold_samples or COLD_START_SAMPLES["quick" if args.quick else "full"]
    settings: dict[str, Any] = {
        "quick": args.quick,
        "contenders": contenders,
        "latencies_ms": latencies,
        "sequential_latencies_ms": _latencies(args.sequential_latencies),
        "paths_backend": paths_backend,
        "sizes": dataclasses.asdict(sizes),
        "memory": "memory" in only,
        "workloads": only,
        "cold_start_samples": cold_samples if "cold_start" in only else 0,
    }
    machine = report.machine_info()
    started = time.perf_counter()
    results = []
    cold: dict[str, Any] | None = None
    with contextlib.ExitStack() as servers:
        fake = servers.enter_context(ServerProcess("benchmarks.fake_dynamo"))
        if "cold_start" in only:
            print("[bench] cold start", file=sys.stderr, flush=True)
            cold = cold_start.run(fake.url, cold_samples, worker_environment())
        endpoints = {}
        needed: set[float] = set()
        if "sequential" in only:
            needed |= set(settings["sequential_latencies_ms"])
        if {"timing", "memory"} & set(only):
            needed |= set(latencies)
        for latency in sorted(needed):
            if latency == 0:
                endpoints[_key(latency)] = fake.url
            else:
                proxy = servers.enter_context(
                    ServerProcess(
                        "benchmarks.latency_proxy",
                        "--upstream",
                        fake.url,
                        "--delay-ms",
                        str(latency),
                    )
                )
                endpoints[_key(latency)] = proxy.url
        paths_endpoint = fake.url
        if paths_backend == "moto" and "timing" in only:
            moto = servers.enter_context(ServerProcess("benchmarks.moto_endpoint"))
            counter = servers.enter_context(
                ServerProcess("benchmarks.latency_proxy", "--upstream", moto.url)
            )
            paths_endpoint = counter.url
        modes = [mode for mode in ("timing", "memory") if mode in only]
        # A full run measures memory in processes of its own, so that their peak RSS
        # is the in-flight calls' alone, at a tenth of the calls and at all of them
        # (to show the cost per call stays flat); a quick run saves the process starts.
        batches: list[tuple[list[str], int]] = (
            [(modes, sizes.memory_in_flight)]
            if args.quick
            else [([mode], sizes.memory_in_flight) for mode in modes if mode == "timing"]
            + [(["memory"], n) for n in _memory_sizes(sizes.memory_in_flight, "memory" not in only)]
        )
        # Sequential calls first, all contenders taking turns in one process; then each
        # contender alone in its processes.
        sequential = [(contenders, ["sequential"], sizes.memory_in_flight)]
        jobs = (sequential if "sequential" in only else []) + [
            ([contender], batch, in_flight)
            for contender in contenders
            for batch, in_flight in batches
            if batch
        ]
        for job_contenders, batch, in_flight in jobs:
            name = ",".join(job_contenders)
            print(f"[bench] {name}: {'+'.join(batch)}", file=sys.stderr, flush=True)
            began = time.perf_counter()
            plan = Plan(
                contenders=job_contenders,
                modes=batch,
                endpoints=endpoints,
                paths_endpoint=paths_endpoint,
                paths_backend=paths_backend,
                sizes=dataclasses.replace(sizes, memory_in_flight=in_flight),
                sequential_latencies=settings["sequential_latencies_ms"],
                concurrent_latencies=latencies,
            )
            results.append(run_worker(plan))
            print(
                f"[bench] {name}: {'+'.join(batch)} took {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    settings["duration_s"] = round(time.perf_counter() - started, 1)
    built = report.build(results, settings, machine, cold)
    text = report.markdown(built)
    write(args.out, built, text)
    print(text)
    return 0


def _memory_sizes(in_flight: int, skip: bool) -> list[int]:
    if skip:
        return []
    return sorted({max(1, in_flight // 10), in_flight})


def write(directory: Path, built: dict[str, Any], text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"bench-{stamp}", "latest"):
        (directory / f"{name}.json").write_text(json.dumps(built, indent=2) + "\n")
        (directory / f"{name}.md").write_text(text)
