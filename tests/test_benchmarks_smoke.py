"""A smoke run of the benchmark harness on tiny data: every contender runs and loads the right
rows (the harness fails loudly otherwise). Timings are not asserted: they live in benchmarks/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` from the repository root; fails the test on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.mark.slow
def test_benchmark_harness_quick_run() -> None:
    result = run_benchmark("benchmarks.run", "--quick", "--output", "smoke")
    assert "BENCHMARK FAILED" not in result.stdout
    for contender in ("floor", "dlt minimum", "baseline", "ours, first load"):
        assert contender in result.stdout
    assert "| (floor + dlt minimum) / floor: the least a dlt pipeline takes |" in result.stdout


def test_timeline_reports_the_phases_of_a_run() -> None:
    """The diagnostic behind docs/performance.md's phase figures runs and counts what the
    emulator serves: 1 services page, 3 listing pages for 120 users (50 a page), and gives the
    span of each of dlt's steps (one part: one extract, normalize and load)."""
    result = run_benchmark("benchmarks.timeline", "--users", "120", "--latency", "0")
    assert "user listing: 3 pages" in result.stdout
    assert "start-up before the first request" in result.stdout
    steps = re.findall(r"^  (extract|normalize|load) +[\d.]+ -> +[\d.]+ s$", result.stdout, re.M)
    assert steps == ["extract", "normalize", "load"], result.stdout


@pytest.mark.slow
def test_latency_benchmark_reports_ours_and_the_floor_against_the_ideal() -> None:
    """benchmarks.latency --quick: a case on an account with room to spare and one that the
    other traffic leaves room for 10 of 16 workers; each row gives the ratios (the least a dlt
    pipeline could take among them), the share throttled and both processes' CPU (the harness
    checks the rows loaded, the one-row dlt pipeline's too)."""
    result = run_benchmark("benchmarks.latency", "--quick", "--output", "smoke-latency")
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if "| 50 ms" in line]
    assert [cells[0].strip() for cells in rows] == [
        "50 ms, 200 users, 8 workers, limit 100",
        "50 ms, 200 users, 16 workers, limit 100, other traffic 90",
    ]
    for cells in rows:
        assert len(cells) == 13
        ideal, floor, minimum = float(cells[2]), float(cells[3]), float(cells[5])
        assert minimum > 0
        # (floor + dlt minimum) / ideal, from the rounded figures of the same row
        assert abs((floor + minimum) / ideal - float(cells[6])) < 0.06 * (1 + floor / ideal)
        ours, beyond = float(cells[7]), float(cells[9])
        assert abs(ours - floor - beyond) < 0.15  # ours - floor, each rounded to 0.1 s
        float(cells[11]), float(cells[12])  # CPU seconds of ours and of the emulator


@pytest.mark.slow
def test_scale_benchmark_reports_each_run_and_the_bookkeeping_it_wrote() -> None:
    """benchmarks.scale on a tiny account: the first load writes every row (the harness checks
    them against the emulator), the unchanged re-run nothing, the 1 % change its users."""
    result = run_benchmark("benchmarks.scale", "--cases", "200x2", "--output", "smoke-scale")
    rows = {
        cells[3]: cells
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("|")]) and len(cells) > 9
        and cells[2] == "ours"
    }  # fmt: skip
    assert rows["first"][7] == "400"  # rows written: 200 users x 2
    assert rows["rerun"][7] == "0" and rows["rerun"][9] == "0"  # no data, no bookkeeping
    assert rows["changed"][7] == "4"  # 2 users changed (1 %), each rewrites its 2 rows
    assert int(rows["changed"][9].replace(",", "")) > 0
    assert "fingerprints read in" in result.stdout


@pytest.mark.slow
def test_scale_comparison_runs_each_code_first_in_every_other_case() -> None:
    """`--compare REV` over two cases: ours then REV in the first, REV then ours in the second
    (the order in which the runs were logged), and the table lists ours first in both."""
    result = run_benchmark(
        "benchmarks.scale", "--cases", "60x1,60x1", "--runs", "first", "--compare", "HEAD",
        "--output", "smoke-order",
    )  # fmt: skip
    ran = re.findall(r"^  (ours|HEAD): first ", result.stderr, re.M)
    assert ran == ["ours", "HEAD", "HEAD", "ours"], result.stderr
    table = [c.strip() for line in result.stdout.splitlines() for c in line.split("|")[2:3]]
    assert [name for name in table if name in ("ours", "HEAD")] == ["ours", "HEAD"] * 2


@pytest.mark.slow
def test_scale_benchmark_runs_only_the_runs_asked_for() -> None:
    """`--runs first,changed` (an account too big to spend hours on the re-run and its floor):
    no re-run row, no floor row, no ratio to it; the changed run still writes its user's rows."""
    result = run_benchmark(
        "benchmarks.scale", "--cases", "100x2", "--runs", "first,changed", "--output", "smoke-runs"
    )
    rows = [[c.strip() for c in line.split("|")] for line in result.stdout.splitlines()]
    ours = {cells[3]: cells for cells in rows if len(cells) > 9 and cells[2] == "ours"}
    assert list(ours) == ["first", "changed"]
    assert ours["changed"][5] == "–" and ours["changed"][7] == "2"  # 1 user of 100, 2 rows
    assert not [cells for cells in rows if len(cells) > 2 and cells[2] == "floor-fetch"]
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--runs", "first,rerun,chnaged"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--runs: unknown chnaged" in bad.stderr


def test_scale_benchmark_measures_the_start_up_of_a_synthetic_account() -> None:
    result = run_benchmark("benchmarks.scale", "--startup", "1000", "--output", "smoke-scale")
    assert "Start-up, 1,000 users (synthetic `_fingerprints`, 2,000 rows)" in result.stdout
    assert "| ours |" in result.stdout


@pytest.mark.slow
def test_scale_benchmark_sweeps_users_per_load() -> None:
    """`--parts`: one first load per users_per_load (the harness checks every row arrived); 200
    users in parts of 50 are 4 load packages and the one that finishes the first load's claim
    (200 is a multiple of 50: the last part ended before the scan did), 0 is one."""
    result = run_benchmark(
        "benchmarks.scale", "--cases", "200x1", "--parts", "50,0", "--output", "smoke-parts"
    )
    runs = {
        cells[1]: cells
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("|")]) and len(cells) > 6
        and cells[2].isdigit()
    }  # fmt: skip
    assert {n: cells[2] for n, cells in runs.items()} == {"50": "5", "one package": "1"}
    # every package's bytes count: four small files hold no fewer bytes than one big one
    data = {n: int(cells[6].replace(",", "")) for n, cells in runs.items()}
    assert data["50"] >= data["one package"] > 0, result.stdout


def test_a_contenders_peak_rss_is_its_own_not_the_harness_s() -> None:
    """Linux folds the spawning process's RSS into a child's ru_maxrss; the harness, holding
    400 MB here, must still report a small child as small and a 150 MB child as ~150 MB."""
    script = """
import json, sys
from pathlib import Path
from benchmarks.harness import run_child

class Emulator:
    def cpu_seconds(self):
        return 0.0

held = bytearray(400 * 2**20)
held[:: 4096] = b"x" * len(held[:: 4096])
work = Path(sys.argv[1])
small = run_child("small", [sys.executable, "-c", "pass"], {}, work / "small", Emulator())
big = run_child(
    "big",
    [sys.executable, "-c", "b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
    {},
    work / "big",
    Emulator(),
)
print(json.dumps({"small": small.max_rss_mb, "big": big.max_rss_mb}))
"""
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(
            [sys.executable, "-c", script, work], cwd=ROOT, capture_output=True, text=True
        )
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.splitlines()[-1])
    assert peaks["small"] < 100, peaks
    assert 150 <= peaks["big"] < 250, peaks
