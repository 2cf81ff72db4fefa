"""The batch benchmark runs end to end in its quick mode.

Asserts what each contender sent and ran, never a timing: the benchmark is
measured by running ``python -m benchmarks.batch``, not by the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-batch")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch", "--quick", "--delay-ms", "0", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "batch.md").read_text().startswith("# Redelivered SQS batch of 100")
    loaded: dict[str, Any] = json.loads((out / "batch.json").read_text())
    return loaded


def test_every_contender_replays_the_batch_without_running_a_record(
    report: dict[str, Any],
) -> None:
    assert report["records_stored_by_first_delivery"] == 100
    rows = {row["contender"]: row for row in report["rows"]}
    assert set(rows) == {"idemstore", "idemstore-no-precheck", "powertools"}
    for row in rows.values():
        assert row["rounds"] == 3
        assert row["handler_runs"] == 0
        assert 0 < row["latency_median_ms"] <= row["latency_p99_ms"]


def test_the_batch_read_answers_a_hundred_records_in_one_request(report: dict[str, Any]) -> None:
    requests = {row["contender"]: row["requests_per_batch"] for row in report["rows"]}

    assert requests == {"idemstore": 1, "idemstore-no-precheck": 100, "powertools": 100}
