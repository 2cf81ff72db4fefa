"""The cold-start workload: a Lambda execution environment's first moments, per contender.

Each sample is a fresh interpreter (``benchmarks.cold_child``) that imports the
library, builds its store and handler (Lambda's INIT phase: what a handler
module does at import), then invokes the handler twice with fresh payloads
(2 requests each). The contenders take turns sample by sample, so a change in
the machine's load weighs on each alike; one discarded sample per contender
first fills the bytecode and file caches.

- ``idemstore``: ``lambda_entry_point(handler, open_stores=[store])``, the client
  opened during INIT;
- ``idemstore-lazy-client``: the same without ``open_stores``: the first
  invocation opens the client;
- ``raw-aiobotocore``: the same two requests by hand on an aiobotocore client made
  at INIT: the floor for an aiobotocore library;
- ``powertools``: the Powertools ``idempotent`` handler with its
  ``DynamoDBPersistenceLayer``, which makes its boto3 client at INIT.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

from benchmarks.cold_child import CONTENDERS
from benchmarks.measure import request_counts
from benchmarks.processes import ROOT

PHASES = ("import", "init", "first_invocation", "second_invocation")
COLD_START_PHASES = ("import", "init", "first_invocation")
"""What a cold invocation costs: the total compared across contenders."""
SUBJECT, FLOOR, INCUMBENT = "idemstore", "raw-aiobotocore", "powertools"
COLD_START_TARGET = 1.10
"""idemstore's import + INIT + first invocation over the aiobotocore floor's, at most."""
REQUESTS_PER_SAMPLE = {"PutItem": 2, "UpdateItem": 2}
"""Two fresh idempotent calls: a lock and a completion each."""
SAMPLE_TIMEOUT_S = 120
LAMBDA_ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": "cold-start",
    "AWS_REGION": "us-east-1",
}
"""What Lambda sets and the libraries read (the key prefix, the region)."""


def sample(contender: str, environment: dict[str, str]) -> dict[str, Any]:
    """One cold start in a fresh interpreter: its phases, and the whole process's CPU."""
    order_id = f"cold-{uuid.uuid4().hex[:12]}"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cold_child", contender, order_id],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=SAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"cold start of {contender} failed:\n{err[-4000:]}")
    measured: dict[str, Any] = json.loads(out)
    return measured


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": len(values),
    }


def summarize(
    contender: str, samples: list[dict[str, Any]], requests: Counter[str]
) -> dict[str, Any]:
    """Medians and spread of each phase's CPU and wall time, and of the cold-start total."""
    phases: dict[str, Any] = {}
    for phase in PHASES:
        phases[phase] = {
            unit: _spread([s["phases"][phase][unit] for s in samples])
            for unit in ("cpu_ms", "wall_ms")
        }
    phases["cold_start"] = {
        unit: _spread([sum(s["phases"][p][unit] for p in COLD_START_PHASES) for s in samples])
        for unit in ("cpu_ms", "wall_ms")
    }
    return {
        "contender": contender,
        "samples": len(samples),
        "phases": phases,
        "modules_loaded": statistics.median(s["modules"] for s in samples),
        "requests_by_operation": dict(requests),
        "requests_per_sample": sum(requests.values()) / len(samples),
    }


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Ratios of medians, between contenders of the same run."""
    by_name = {row["contender"]: row for row in rows}

    def median(contender: str, phase: str) -> float | None:
        row = by_name.get(contender)
        return None if row is None else float(row["phases"][phase]["cpu_ms"]["median"])

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    return {
        "cold_start_vs_raw-aiobotocore": ratio(
            median(SUBJECT, "cold_start"), median(FLOOR, "cold_start")
        ),
        "import_vs_raw-aiobotocore": ratio(median(SUBJECT, "import"), median(FLOOR, "import")),
        "first_invocation_vs_powertools": ratio(
            median(SUBJECT, "first_invocation"), median(INCUMBENT, "first_invocation")
        ),
        "cold_start_vs_powertools": ratio(
            median(SUBJECT, "cold_start"), median(INCUMBENT, "cold_start")
        ),
    }


def run(endpoint_url: str, samples: int, base_environment: dict[str, str]) -> dict[str, Any]:
    """``samples`` cold starts of every contender against ``endpoint_url``, taking turns."""
    environment = {
        **base_environment,
        **LAMBDA_ENVIRONMENT,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        "PYTHONPATH": str(ROOT),
    }
    for contender in CONTENDERS:
        sample(contender, environment)  # discarded: compiles bytecode, fills the file cache
    measured: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    requests: dict[str, Counter[str]] = {c: Counter() for c in CONTENDERS}
    for _ in range(samples):
        for contender in CONTENDERS:
            before = request_counts(endpoint_url)
            measured[contender].append(sample(contender, environment))
            requests[contender] += request_counts(endpoint_url) - before
    rows = [summarize(c, measured[c], requests[c]) for c in CONTENDERS]
    return {
        "samples": samples,
        "environment": {**LAMBDA_ENVIRONMENT, "AWS_ENDPOINT_URL_DYNAMODB": "the fake endpoint"},
        "rows": rows,
        "ratios": ratios(rows),
    }


def targets(cold_start: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not cold_start:
        return []
    found = cold_start["ratios"]
    checks = []
    total = found.get(f"cold_start_vs_{FLOOR}")
    if total is not None:
        checks.append(
            {
                "target": f"cold start (import + INIT + first invocation, CPU) <= "
                f"{COLD_START_TARGET:g}x raw aiobotocore",
                "value": round(total, 3),
                "met": total <= COLD_START_TARGET,
            }
        )
    first = found.get(f"first_invocation_vs_{INCUMBENT}")
    if first is not None:
        checks.append(
            {
                "target": "first invocation after INIT (CPU) <= Powertools' first invocation",
                "value": round(first, 3),
                "met": first <= 1.0,
            }
        )
    for row in cold_start["rows"]:
        expected = {op: n * row["samples"] for op, n in REQUESTS_PER_SAMPLE.items()}
        checks.append(
            {
                "target": f"cold start of {row['contender']}: 2 requests per invocation",
                "value": row["requests_per_sample"],
                "met": row["requests_by_operation"] == expected,
            }
        )
    return checks


def _cell(spread: dict[str, float]) -> str:
    return f"{spread['median']:.0f} ({spread['min']:.0f}-{spread['max']:.0f})"


def markdown(cold_start: dict[str, Any] | None) -> list[str]:
    if not cold_start:
        return []
    lines = [
        "",
        "## Cold start (a fresh interpreter per sample)",
        "",
        f"CPU ms (`time.process_time()`, all threads), median (min-max) of "
        f"{cold_start['samples']} samples. *import*: the library's imports; *INIT*: "
        "building the store and handler at module level; *first*/*second*: invocations "
        "with fresh payloads, 2 requests each. *cold start* = import + INIT + first. "
        "Environment variables as in Lambda; the endpoint answers at once.",
        "",
        "| contender | import | INIT | first invocation | cold start | second invocation "
        "| cold start wall ms | modules |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in cold_start["rows"]:
        p = row["phases"]
        lines.append(
            f"| {row['contender']} | {_cell(p['import']['cpu_ms'])} | {_cell(p['init']['cpu_ms'])} "
            f"| {_cell(p['first_invocation']['cpu_ms'])} | {_cell(p['cold_start']['cpu_ms'])} "
            f"| {_cell(p['second_invocation']['cpu_ms'])} | {_cell(p['cold_start']['wall_ms'])} "
            f"| {row['modules_loaded']:.0f} |"
        )
    found = cold_start["ratios"]
    lines += ["", "| ratio (medians, idemstore / other) | value |", "|---|---:|"]
    for name, value in found.items():
        lines.append(f"| {name} | {'-' if value is None else f'{value:.2f}'} |")
    return lines
