"""A smoke run of the benchmark harness on tiny data: every contender runs and loads the right
rows (the harness fails loudly otherwise). Timings are not asserted: they live in benchmarks/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_benchmark_harness_quick_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "BENCHMARK FAILED" not in result.stdout
    for contender in ("floor", "baseline", "ours, first load"):
        assert contender in result.stdout


def test_timeline_reports_the_phases_of_a_run() -> None:
    """The diagnostic behind docs/performance.md's phase figures runs and counts what the
    emulator serves: 1 services page, 3 listing pages for 120 users (50 a page)."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.timeline", "--users", "120", "--latency", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "user listing: 3 pages" in result.stdout
    assert "start-up before the first request" in result.stdout
