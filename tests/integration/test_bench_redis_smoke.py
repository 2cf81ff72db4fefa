"""The Redis benchmark runs end to end in its quick mode against a real server.

Asserts the report's structure and the requests each call sent, never a timing:
the benchmark is measured by running it, not by the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import run_captured

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "redis.json"
    result = run_captured(
        [sys.executable, "-m", "benchmarks.redis_store", "--quick", "--json", str(out)],
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("# idemstore Redis store benchmark")
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["settings"]["quick"] is True
    return {(row["contender"], row["workload"]): row for row in report["rows"]}


def test_every_contender_and_workload_is_measured(
    rows: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert set(rows) == {
        (contender, workload)
        for contender in ("idemstore", "powertools")
        for workload in ("fresh", "duplicate")
    }
    assert all(row["calls"] == 50 and row["cpu_us_per_call"] > 0 for row in rows.values())


def test_requests_per_call(rows: dict[tuple[str, str], dict[str, Any]]) -> None:
    # idemstore: a script to lock and one to complete; a duplicate is one script.
    assert rows[("idemstore", "fresh")]["client_requests_per_call"] == 2
    assert rows[("idemstore", "duplicate")]["client_requests_per_call"] == 1
    # Powertools: SET NX and SET; a duplicate is SET NX, a GET for its client-side
    # check, and a second GET, since the error it raises carries no record.
    assert rows[("powertools", "fresh")]["client_requests_per_call"] == 2
    assert rows[("powertools", "duplicate")]["client_requests_per_call"] == 3
