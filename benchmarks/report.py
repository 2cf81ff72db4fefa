"""The run's report: JSON with everything, and a markdown summary with the ratios.

Ratios compare contenders measured in the same run, on the same machine, so
they hold even where absolute numbers vary from machine to machine.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from benchmarks import cold_start as cold_start_workload
from benchmarks.processes import ROOT

BASELINE_CPU = "raw-aiobotocore"
THREAD_BASELINES = ("powertools-to-thread", "powertools-16-threads")
SUBJECT = "idemstore"
PACKAGES = (
    "idemstore",
    "aiobotocore",
    "botocore",
    "aiohttp",
    "pydantic",
    "boto3",
    "aws-lambda-powertools",
    "moto",
)
MEMORY_GROWTH_LIMIT = 1.25
"""Bytes per in-flight call at the most calls over those at the fewest: flat enough."""
THROUGHPUT_TARGETS = {"powertools-to-thread": 5.0, "powertools-16-threads": 2.0}
"""At the highest latency measured (25 ms in a full run): idemstore's throughput over each."""


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "packages": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "work_tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Any]]:
    return {(r["contender"], r["workload"], r["latency_ms"]): r for r in rows}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """idemstore against the baselines, for every workload and latency both ran."""
    index = _index(rows)
    found = []
    for (contender, workload, latency), row in sorted(index.items()):
        if contender != SUBJECT or workload == "memory_in_flight":
            continue
        entry: dict[str, Any] = {"workload": workload, "latency_ms": latency}
        raw = index.get((BASELINE_CPU, workload, latency))
        if raw is not None:
            entry[f"cpu_vs_{BASELINE_CPU}"] = _ratio(row["cpu_us_per_call"], raw["cpu_us_per_call"])
            entry[f"throughput_vs_{BASELINE_CPU}"] = _ratio(
                row["throughput_per_s"], raw["throughput_per_s"]
            )
        for baseline in THREAD_BASELINES:
            other = index.get((baseline, workload, latency))
            if other is not None:
                entry[f"throughput_vs_{baseline}"] = _ratio(
                    row["throughput_per_s"], other["throughput_per_s"]
                )
                entry[f"cpu_vs_{baseline}"] = _ratio(
                    row["cpu_us_per_call"], other["cpu_us_per_call"]
                )
        if len(entry) > 2:
            found.append(entry)
    return found


def targets(
    rows: list[dict[str, Any]], paths: dict[str, Any], ratio_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets, each with the value achieved and whether it is met."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: Any, met: bool | None) -> None:
        checks.append({"target": name, "value": value, "met": met})

    for entry in ratio_rows:
        cpu = entry.get(f"cpu_vs_{BASELINE_CPU}")
        if cpu is not None and entry["latency_ms"] == 0:
            check(
                f"client CPU per call <= 1.0x raw aiobotocore ({entry['workload']}, 0 ms)",
                round(cpu, 3),
                cpu <= 1.0,
            )
    concurrent = [e for e in ratio_rows if e["workload"] == "concurrent_fresh"]
    if concurrent:
        top = max(e["latency_ms"] for e in concurrent)
        for entry in concurrent:
            for baseline, factor in THROUGHPUT_TARGETS.items():
                value = entry.get(f"throughput_vs_{baseline}")
                if value is None:
                    continue
                if entry["latency_ms"] == top and top > 0:
                    wanted = factor
                elif entry["latency_ms"] == 0:
                    wanted = 1.0
                else:
                    continue
                check(
                    f"throughput >= {wanted:g}x {baseline} "
                    f"(concurrent fresh, {entry['latency_ms']:g} ms)",
                    round(value, 2),
                    value >= wanted,
                )
    for row in rows:
        if row["contender"] == SUBJECT and row["workload"] == "concurrent_duplicates_waiting":
            check(
                f"duplicates of one key, waiting on: body runs once per round "
                f"({row['latency_ms']:g} ms)",
                row["body_runs_per_round"],
                row["body_runs_per_round"] == 1,
            )
            check(
                f"duplicates of one key, waiting on: requests per round <= 2 "
                f"({row['latency_ms']:g} ms)",
                row["requests_per_round"],
                row["requests_per_round"] <= 2,
            )
    memory = sorted(
        (r for r in rows if r["contender"] == SUBJECT and r["workload"] == "memory_in_flight"),
        key=lambda r: r["in_flight"],
    )
    if len(memory) >= 2 and memory[0]["bytes_per_in_flight_call"] > 0:
        growth = memory[-1]["bytes_per_in_flight_call"] / memory[0]["bytes_per_in_flight_call"]
        check(
            f"memory per in-flight call flat from {memory[0]['in_flight']} to "
            f"{memory[-1]['in_flight']} calls (ratio <= {MEMORY_GROWTH_LIMIT})",
            round(growth, 2),
            growth <= MEMORY_GROWTH_LIMIT,
        )
    for contender, found in paths.items():
        for path, outcome in found["paths"].items():
            if contender == SUBJECT:
                check(
                    f"{path}: requests <= {outcome['budget']}",
                    outcome["requests"],
                    outcome["within_budget"],
                )
    return checks


def build(
    results: list[dict[str, Any]],
    settings: dict[str, Any],
    machine: dict[str, Any],
    cold_start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # Peak RSS is the process's: a contender's own timing process for its calls (sequential
    # rows come from a process all contenders share), the memory process for held calls.
    timing_peaks = {
        r["contenders"][0]: r["peak_rss_bytes"] for r in results if "timing" in r["modes"]
    }
    rows = []
    for result in results:
        for row in result["rows"]:
            peak = result["peak_rss_bytes"]
            if "sequential" in result["modes"]:
                peak = timing_peaks.get(row["contender"])
            rows.append({**row, "peak_rss_bytes": peak})
    paths = {r["contenders"][0]: r["paths"] for r in results if "paths" in r}
    ratio_rows = ratios(rows)
    return {
        "machine": machine,
        "settings": settings,
        "rows": rows,
        "request_paths": paths,
        "ratios": ratio_rows,
        "cold_start": cold_start,
        "targets": targets(rows, paths, ratio_rows) + cold_start_workload.targets(cold_start),
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# idemstore benchmark",
        "",
        f"{machine['when']} · Python {machine['python']} · {machine['cpu']} x "
        f"{machine['cpu_count']} · load {', '.join(f'{x:.2f}' for x in machine['load_average'])}"
        f" · commit {machine['commit']}{' (dirty)' if machine['work_tree_dirty'] else ''}",
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v),
    ]
    timing = [r for r in report["rows"] if r["workload"] != "memory_in_flight"]
    per_contender = [
        "",
        "## Per contender",
        "",
        "Latency is added per request by a loopback proxy in front of a fake endpoint that "
        "answers at once. CPU µs/call is the client process's CPU time (all its threads) per "
        "call; the servers run in other processes. Sequential rows take turns in one process, "
        "round by round; each contender's concurrent rows run in a process of its own. "
        "Throughput and CPU are medians over rounds; latencies are over all calls.",
        "",
        "| workload | latency | contender | median ms | p99 ms | calls/s | CPU µs/call "
        "| requests/call | peak RSS MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += per_contender if timing else []  # none with --only cold_start
    for row in sorted(timing, key=lambda r: (r["workload"], r["latency_ms"], r["contender"])):
        rss = row.get("peak_rss_bytes")
        lines.append(
            f"| {row['workload']} | {row['latency_ms']:g} ms | {row['contender']} "
            f"| {_fmt(row['latency_median_ms'], 2)} | {_fmt(row['latency_p99_ms'], 2)} "
            f"| {_fmt(row['throughput_per_s'], 0)} | {_fmt(row['cpu_us_per_call'], 0)} "
            f"| {_fmt(row['requests_per_call'], 2)} "
            f"| {_fmt(rss / 2**20 if rss else None)} |"
            + (f" errors: {row['errors']}" if row["errors"] else "")
        )
    memory = list(
        {
            (r["contender"], r["in_flight"]): r
            for r in report["rows"]
            if r["workload"] == "memory_in_flight"
        }.values()
    )  # a thread pool holds the same number in flight at either size: shown once
    if memory:
        lines += [
            "",
            "## Memory: calls held in flight",
            "",
            "| contender | in flight | RSS before MiB | RSS in flight MiB "
            "| bytes per in-flight call |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in memory:
            lines.append(
                f"| {row['contender']} | {row['in_flight']} "
                f"| {_fmt(row['rss_baseline_bytes'] / 2**20)} "
                f"| {_fmt(row['rss_in_flight_bytes'] / 2**20)} "
                f"| {_fmt(row['bytes_per_in_flight_call'], 0)} |"
            )
    if report["ratios"]:
        lines += [
            "",
            "## Ratios (idemstore / baseline, same run)",
            "",
            "| workload | latency | CPU vs raw aiobotocore | throughput vs raw aiobotocore "
            "| throughput vs Powertools to_thread | throughput vs Powertools 16 threads |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for entry in report["ratios"]:
            lines.append(
                f"| {entry['workload']} | {entry['latency_ms']:g} ms "
                f"| {_fmt(entry.get('cpu_vs_raw-aiobotocore'), 2)} "
                f"| {_fmt(entry.get('throughput_vs_raw-aiobotocore'), 2)} "
                f"| {_fmt(entry.get('throughput_vs_powertools-to-thread'), 2)} "
                f"| {_fmt(entry.get('throughput_vs_powertools-16-threads'), 2)} |"
            )
    if report["request_paths"]:
        names = sorted({p for found in report["request_paths"].values() for p in found["paths"]})
        contenders = list(report["request_paths"])
        backend = next(iter(report["request_paths"].values()))["backend"]
        lines += [
            "",
            f"## Requests per path ({backend}; budget from DESIGN.md)",
            "",
            "| path | budget | " + " | ".join(contenders) + " |",
            "|---|---:|" + "---:|" * len(contenders),
        ]
        for name in names:
            cells = []
            budget = None
            for contender in contenders:
                outcome = report["request_paths"][contender]["paths"].get(name)
                budget = outcome["budget"] if outcome else budget
                cells.append(str(outcome["requests"]) if outcome else "n/a")
            lines.append(f"| {name} | {budget} | " + " | ".join(cells) + " |")
    lines += cold_start_workload.markdown(report.get("cold_start"))
    if report["targets"]:
        lines += ["", "## Targets", "", "| target | achieved | met |", "|---|---:|:---:|"]
        for target in report["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[target["met"]]
            lines.append(f"| {target['target']} | {target['value']} | {met} |")
    return "\n".join(lines) + "\n"
