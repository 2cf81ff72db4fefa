"""The benchmark harness runs end to end in its quick mode against the fake endpoint.

Asserts the report's structure and the requests each call sent, never a timing:
benchmarks are measured by ``nox -s bench``, not by the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import run_captured

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = ("idemstore", "raw-aiobotocore", "powertools-to-thread", "powertools-16-threads")
QUICK_CALLS = 10
COLD_START_CONTENDERS = ("idemstore", "idemstore-lazy-client", "raw-aiobotocore", "powertools")
COLD_START_SAMPLES = 2


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    result = run_captured(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--in-flight",
            "50",
            "--cold-samples",
            str(COLD_START_SAMPLES),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    markdown = (out / "latest.md").read_text()
    assert markdown.startswith("# idemstore benchmark")
    assert "## Cold start" in markdown
    loaded: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return loaded


def _row(report: dict[str, Any], contender: str, workload: str) -> dict[str, Any]:
    rows = [r for r in report["rows"] if r["contender"] == contender and r["workload"] == workload]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def test_report_has_machine_info_settings_and_every_section(report: dict[str, Any]) -> None:
    assert set(report) == {
        "machine",
        "settings",
        "rows",
        "request_paths",
        "ratios",
        "cold_start",
        "targets",
    }
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["packages"]["aiobotocore"]
    assert report["settings"]["quick"] is True
    assert report["settings"]["contenders"] == list(CONTENDERS)
    assert {r["contender"] for r in report["rows"]} == set(CONTENDERS)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_fresh_calls_send_two_requests_and_duplicates_one(
    report: dict[str, Any], contender: str
) -> None:
    fresh = _row(report, contender, "sequential_fresh")
    duplicate = _row(report, contender, "sequential_duplicate")
    concurrent = _row(report, contender, "concurrent_fresh")

    assert fresh["requests_per_call"] == 2
    assert fresh["requests_by_operation"] == {"PutItem": QUICK_CALLS, "UpdateItem": QUICK_CALLS}
    assert fresh["body_runs"] == QUICK_CALLS
    assert duplicate["requests_per_call"] == 1
    assert duplicate["requests_by_operation"] == {"PutItem": QUICK_CALLS}
    assert duplicate["body_runs"] == 0
    assert concurrent["requests_per_call"] == 2
    for row in (fresh, duplicate, concurrent):
        assert row["errors"] == {}
        assert row["calls_per_round"] == QUICK_CALLS
        assert row["cpu_us_per_call"] > 0
        assert row["latency_median_ms"] <= row["latency_p99_ms"]
        assert row["peak_rss_bytes"] > 0


def test_duplicates_of_one_key_with_waiting_run_the_body_once(report: dict[str, Any]) -> None:
    row = _row(report, "idemstore", "concurrent_duplicates_waiting")

    assert row["body_runs_per_round"] == 1
    assert row["distinct_results_per_round"] == 1
    assert row["requests_per_round"] == 2
    assert row["errors"] == {}


def test_every_path_of_idemstore_is_within_the_request_budget(report: dict[str, Any]) -> None:
    paths = report["request_paths"]["idemstore"]["paths"]

    assert {name: outcome["requests"] for name, outcome in paths.items()} == {
        "fresh": 2,
        "duplicate_completed": 1,
        "duplicate_local_cache": 0,
        "duplicate_in_progress": 1,
        "function_raises": 2,
        "duplicate_attached_waiting": 0,
    }
    assert paths["duplicate_in_progress"]["errors"] == {"IdempotencyAlreadyInProgressError": 1}
    assert paths["function_raises"]["errors"] == {"BodyFailedError": 1}


def test_powertools_paths_are_counted_the_same_way(report: dict[str, Any]) -> None:
    paths = report["request_paths"]["powertools-to-thread"]["paths"]

    assert paths["fresh"]["requests"] == 2
    assert paths["duplicate_completed"]["requests"] == 1
    assert paths["duplicate_local_cache"]["requests"] == 0
    assert "duplicate_attached_waiting" not in paths


def test_memory_is_measured_per_in_flight_call(report: dict[str, Any]) -> None:
    idemstore = _row(report, "idemstore", "memory_in_flight")
    threaded = _row(report, "powertools-16-threads", "memory_in_flight")

    assert idemstore["in_flight"] == 50
    assert threaded["in_flight"] == 16  # a thread pool holds at most its thread count
    assert idemstore["errors"] == {}
    assert idemstore["rss_in_flight_bytes"] > 0


def test_ratios_compare_idemstore_with_every_baseline(report: dict[str, Any]) -> None:
    (entry,) = [
        e for e in report["ratios"] if e["workload"] == "sequential_fresh" and e["latency_ms"] == 0
    ]

    assert entry["cpu_vs_raw-aiobotocore"] > 0
    assert entry["throughput_vs_powertools-to-thread"] > 0
    assert entry["throughput_vs_powertools-16-threads"] > 0
    targets = {t["target"] for t in report["targets"]}
    assert "client CPU per call <= 1.0x raw aiobotocore (sequential_fresh, 0 ms)" in targets


def test_cold_starts_are_measured_per_phase_for_every_contender(report: dict[str, Any]) -> None:
    cold = report["cold_start"]

    assert cold["samples"] == COLD_START_SAMPLES
    assert [row["contender"] for row in cold["rows"]] == list(COLD_START_CONTENDERS)
    for row in cold["rows"]:
        assert row["samples"] == COLD_START_SAMPLES
        assert set(row["phases"]) == {
            "import",
            "init",
            "first_invocation",
            "second_invocation",
            "cold_start",
        }
        for phase in row["phases"].values():
            assert phase["cpu_ms"]["samples"] == COLD_START_SAMPLES
            assert phase["cpu_ms"]["min"] <= phase["cpu_ms"]["median"] <= phase["cpu_ms"]["max"]
        # Two fresh invocations per sample, each a lock and a completion.
        assert row["requests_by_operation"] == {
            "PutItem": 2 * COLD_START_SAMPLES,
            "UpdateItem": 2 * COLD_START_SAMPLES,
        }


def test_cold_start_ratios_and_targets_are_reported(report: dict[str, Any]) -> None:
    ratios = report["cold_start"]["ratios"]
    targets = {t["target"]: t for t in report["targets"]}

    assert ratios["cold_start_vs_raw-aiobotocore"] > 0
    assert ratios["first_invocation_vs_powertools"] > 0
    assert "cold start (import + INIT + first invocation, CPU) <= 1.1x raw aiobotocore" in targets
    assert "first invocation after INIT (CPU) <= Powertools' first invocation" in targets
    for contender in COLD_START_CONTENDERS:
        assert targets[f"cold start of {contender}: 2 requests per invocation"]["met"] is True
