"""Run the benchmarks side by side and print one markdown table.

    python -m benchmarks.run                 # W1 (x5), re-run, 5 % changed, latency sweep
    python -m benchmarks.run --quick         # tiny smoke run (< 60 s), checks every contender
    python -m benchmarks.run --only W1,LAT --repeats 5
    python -m benchmarks.run --scale         # adds SCALE: 20,000 users x 50 (1,000,000 rows)

Every contender is its own child process against the same emulator (a separate process on
loopback); wall time, user+sys CPU and peak RSS come from ``wait4`` on the child, spawned by
launch.py so that its peak RSS is its own. The table goes to stdout and to
benchmarks/results/latest.md (raw figures: latest.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .harness import (
    PYTHON,
    REPO,
    BenchmarkError,
    ChildResult,
    EmulatorProcess,
    Workload,
    check_levels,
    check_rows,
    contender_env,
    fresh_dir,
    last_json,
    parse_summary,
    run_child,
    run_dlt_minimum,
)

RESULTS = REPO / "benchmarks" / "results"
OURS_CLI = str(Path(sys.executable).with_name("twilio-conversations"))
OURS_TABLE = "twilio.user_conversations"
BASELINE_TABLE = "rest_api_data.user_conversations"
FLOOR_TABLE = "user_conversations"
ALL = ("W1", "W1R", "W1C", "LAT", "EMU")
CHANGE_SHARE = 0.05


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- contenders --------------------------------------------------------------------------------


def run_floor(
    emu: EmulatorProcess,
    work: Path,
    *,
    fetch_only: bool = False,
    workers: int = 8,
    expected: int | None = None,
) -> ChildResult:
    name = "floor-fetch" if fetch_only else "floor"
    cwd = fresh_dir(work)
    db = cwd / "floor.duckdb"
    cmd = [PYTHON, "-m", "benchmarks.floor", "--base-url", emu.base_url, "--workers", str(workers)]
    cmd += ["--fetch-only"] if fetch_only else ["--db", str(db)]
    result = run_child(name, cmd, contender_env(emu, cwd), cwd, emu)
    result.extra = last_json(result.stdout)
    rows = emu.workload.rows if expected is None else expected
    if result.extra["rows"] != rows:
        raise BenchmarkError(f"{name} fetched {result.extra['rows']:,} rows, expected {rows:,}")
    if not fetch_only:
        result.extra["db_rows"] = check_rows(name, db, FLOOR_TABLE, rows)
    return result


def run_baseline(emu: EmulatorProcess, work: Path) -> ChildResult:
    cwd = fresh_dir(work)
    db = cwd / "baseline.duckdb"
    cmd = [PYTHON, "-m", "benchmarks.baseline", "--base-url", emu.base_url, "--db", str(db)]
    result = run_child("baseline", cmd, contender_env(emu, cwd), cwd, emu)
    result.extra = last_json(result.stdout)
    result.extra["db_rows"] = check_rows("baseline", db, BASELINE_TABLE, emu.workload.rows)
    return result


def run_ours(
    emu: EmulatorProcess,
    cwd: Path,
    name: str = "ours",
    *,
    fresh: bool = True,
    workers: int | None = None,
    code: Path | None = None,
) -> ChildResult:
    """``twilio-conversations run`` the way a scheduled job runs it; state lives in ``cwd``.
    `code`: the `pipelines/` of another commit to run instead (`--compare`)."""
    if fresh:
        fresh_dir(cwd)
    extra = {"DESTINATION__DUCKDB__CREDENTIALS": str(cwd / "ours.duckdb")}
    if code is not None:
        extra["PYTHONPATH"] = os.pathsep.join([str(code), str(REPO)])
    if workers is not None:
        extra["SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS"] = str(workers)
    cmd = [OURS_CLI, "run", "--destination", "duckdb", "--progress", "none"]
    result = run_child(name, cmd, contender_env(emu, cwd, **extra), cwd, emu)
    result.extra = parse_summary(result.stdout)
    result.extra["db_rows"] = check_rows(name, cwd / "ours.duckdb", OURS_TABLE, emu.workload.rows)
    return result


# -- workloads ---------------------------------------------------------------------------------


def bench_w1(
    w1: Workload,
    repeats: int,
    selected: set[str],
    work: Path,
    log_dir: Path,
    compare: Path | None = None,
) -> dict[str, Any]:
    """W1 first loads side by side, then (same emulator) ours re-run and ours after 5 % change.
    `compare`: another commit's code, whose first load and re-run go beside ours, each repeat
    in the other order."""
    runs: list[dict[str, Any]] = []
    with EmulatorProcess(w1, log_dir) as emu:
        for i in range(repeats):
            _log(f"W1 repeat {i + 1}/{repeats}")
            one: dict[str, Any] = {}
            ours_dir = work / f"ours-{i}"
            if "W1" in selected:
                one["floor"] = run_floor(emu, work / "floor")
                _log(f"  floor {one['floor'].wall_s:.1f} s")
                one["dlt-minimum"] = run_dlt_minimum(emu, work / "dlt-minimum")
                _log(f"  dlt minimum {one['dlt-minimum'].wall_s:.1f} s")
                one["baseline"] = run_baseline(emu, work / "baseline")
                _log(f"  baseline {one['baseline'].wall_s:.1f} s")
            if compare is not None and i % 2:
                _compare(emu, one, work, compare)
            one["ours"] = run_ours(emu, ours_dir)
            _log(f"  ours {one['ours'].wall_s:.1f} s")
            if one["ours"].extra["rows_written"] != w1.rows:
                raise BenchmarkError(f"ours wrote {one['ours'].extra['rows_written']} rows")
            if "W1R" in selected or "W1C" in selected:
                one["floor-fetch"] = run_floor(emu, work / "floor-fetch", fetch_only=True)
                _log(f"  floor-fetch {one['floor-fetch'].wall_s:.1f} s")
            if "W1R" in selected:
                one["ours-rerun"] = run_ours(emu, ours_dir, "ours-rerun", fresh=False)
                _log(
                    f"  ours re-run {one['ours-rerun'].wall_s:.1f} s, "
                    f"{one['ours-rerun'].extra['rows_written']} rows"
                )
            if compare is not None and not i % 2:
                _compare(emu, one, work, compare)
            if "W1C" in selected:
                changed = emu.change_users(CHANGE_SHARE)
                one["ours-changed"] = run_ours(emu, ours_dir, "ours-changed", fresh=False)
                check_levels(ours_dir / "ours.duckdb", OURS_TABLE, changed)
                one["ours-changed"].extra["users_mutated"] = len(changed)
                _log(
                    f"  ours changed {one['ours-changed'].wall_s:.1f} s, "
                    f"{one['ours-changed'].extra['rows_written']} rows"
                )
            runs.append(one)
    return {"workload": w1, "runs": runs}


def _compare(emu: EmulatorProcess, one: dict[str, Any], work: Path, code: Path) -> None:
    """The other commit's first load and unchanged re-run, into `one`."""
    cwd = work / "compare"
    one["compare"] = run_ours(emu, cwd, "compare", code=code)
    one["compare-rerun"] = run_ours(emu, cwd, "compare-rerun", fresh=False, code=code)
    _log(f"  compare {one['compare'].wall_s:.1f} s, re-run {one['compare-rerun'].wall_s:.1f} s")


def bench_latency(
    lat: Workload, workers_list: Sequence[int], work: Path, log_dir: Path
) -> dict[str, Any]:
    """Ours against requests x latency / workers; the zero-latency run gives the fixed cost."""
    zero = Workload(lat.name + "-0ms", lat.users, lat.conversations_per_user, lat.services)
    with EmulatorProcess(zero, log_dir) as emu:
        _log("LAT overhead at 0 ms")
        overhead = run_ours(emu, work / "lat-0ms")
        floor_overhead = run_floor(emu, work / "lat-floor-0ms", fetch_only=True)
    points = []
    with EmulatorProcess(lat, log_dir) as emu:
        for workers in workers_list:
            ours = run_ours(emu, work / f"lat-{workers}", workers=workers)
            floor = run_floor(emu, work / f"lat-floor-{workers}", fetch_only=True, workers=workers)
            _log(
                f"LAT {workers} workers: ours {ours.wall_s:.1f} s, floor-fetch {floor.wall_s:.1f} s"
            )
            points.append({"workers": workers, "ours": ours, "floor-fetch": floor})
    return {
        "workload": lat,
        "overhead": overhead,
        "floor_overhead": floor_overhead,
        "points": points,
    }


def bench_scale(scale: Workload, work: Path, log_dir: Path, baseline: bool) -> dict[str, Any]:
    _log(f"SCALE: generating {scale.rows:,} rows in the emulator")
    out: dict[str, Any] = {"workload": scale}
    with EmulatorProcess(scale, log_dir) as emu:
        out["floor"] = run_floor(emu, work / "scale-floor")
        _log(f"  floor {out['floor'].wall_s:.1f} s")
        out["ours"] = run_ours(emu, work / "scale-ours")
        _log(f"  ours {out['ours'].wall_s:.1f} s")
        out["ours-rerun"] = run_ours(emu, work / "scale-ours", "ours-rerun", fresh=False)
        _log(f"  ours re-run {out['ours-rerun'].wall_s:.1f} s")
        if baseline:
            out["baseline"] = run_baseline(emu, work / "scale-baseline")
            _log(f"  baseline {out['baseline'].wall_s:.1f} s")
    return out


# -- report ------------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _col(runs: list[dict[str, Any]], name: str, attr: str) -> list[float]:
    return [float(getattr(r[name], attr)) for r in runs if name in r]


def machine() -> dict[str, str]:
    import dlt
    import duckdb
    import pyarrow

    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kb = int(info.readline().split()[1])
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "pipelines"):
        commit += " (pipelines/ has uncommitted changes)"
    return {
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "dlt": dlt.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "venv": f"{Path(sys.prefix).name} (pandas "
        f"{'installed' if importlib.util.find_spec('pandas') else 'not installed'})",
    }


def render(results: dict[str, Any], env: dict[str, str]) -> str:
    out = [
        f"Machine: {env['cpus']} CPUs ({env['cpu']}), {env['memory']} RAM; Python {env['python']}, "
        f"dlt {env['dlt']}, duckdb {env['duckdb']}, pyarrow {env['pyarrow']}; venv {env['venv']}; "
        f"{env['date']}; "
        f"load average at the end {env['load']}; connector at commit {env['commit']}.",
        "",
    ]
    if "w1" in results:
        w1 = results["w1"]
        runs, wl = w1["runs"], w1["workload"]
        out += [
            f"### W1: {wl.services} service x {wl.users:,} users x {wl.conversations_per_user} "
            f"conversations = {wl.rows:,} rows (median of {len(runs)})",
            "",
            "| contender | wall s | CPU s (user+sys) | peak RSS MB | emulator CPU s "
            "| rows in DuckDB / written |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in (
            "floor",
            "dlt-minimum",
            "baseline",
            "ours",
            "floor-fetch",
            "ours-rerun",
            "ours-changed",
            "compare",
            "compare-rerun",
        ):
            if not any(name in r for r in runs):
                continue
            written = [
                r[name].extra.get(
                    "rows_written", r[name].extra.get("db_rows", r[name].extra.get("rows"))
                )
                for r in runs
                if name in r
            ]
            if isinstance(written[0], dict):
                written = [w.get("user_conversations", 0) for w in written]
            label = {
                "floor": "floor (threads + pyarrow + DuckDB CTAS)",
                "dlt-minimum": "dlt minimum (one row through a dlt pipeline)",
                "baseline": "baseline (dlt rest_api, defaults)",
                "ours": "ours, first load",
                "floor-fetch": "fetch-only (floor script, no arrow/DB)",
                "ours-rerun": "ours, re-run, nothing changed",
                "ours-changed": f"ours, {CHANGE_SHARE:.0%} of users changed",
                "compare": f"code of {results.get('compare')}, first load",
                "compare-rerun": f"code of {results.get('compare')}, re-run, nothing changed",
            }[name]
            out.append(
                f"| {label} | {_med(_col(runs, name, 'wall_s')):.2f} "
                f"| {_med(_col(runs, name, 'cpu_s')):.2f} "
                f"| {_med(_col(runs, name, 'max_rss_mb')):.0f} "
                f"| {_med(_col(runs, name, 'emulator_cpu_s')):.2f} "
                f"| {int(_med([float(w) for w in written])):,} |"
            )
        out += ["", "| ratio (median of per-repeat ratios) | value | target |", "|---|---:|---:|"]

        def ratio(a: str, b: str) -> float:
            return _med([r[a].wall_s / r[b].wall_s for r in runs if a in r and b in r])

        if any("floor" in r for r in runs):
            out.append(f"| ours / floor, first load | {ratio('ours', 'floor'):.2f} | <= 1.2 |")
            least = _med(
                [(r["floor"].wall_s + r["dlt-minimum"].wall_s) / r["floor"].wall_s for r in runs]
            )
            out.append(
                f"| (floor + dlt minimum) / floor: the least a dlt pipeline takes | {least:.2f} | |"
            )
            out.append(f"| baseline / ours, first load | {ratio('baseline', 'ours'):.2f} | |")
            out.append(f"| baseline / floor, first load | {ratio('baseline', 'floor'):.2f} | |")
        if any("ours-rerun" in r for r in runs):
            out.append(
                f"| ours re-run / fetch-only | {ratio('ours-rerun', 'floor-fetch'):.2f} | <= 1.1 |"
            )
            rows0 = _med([r["ours-rerun"].extra["rows_written"] for r in runs])
            out.append(f"| ours re-run: user_conversations rows written | {rows0:.0f} | 0 |")
        if any("ours-changed" in r for r in runs):
            ch = [r["ours-changed"].extra for r in runs]
            exp = _med([c["users_mutated"] for c in ch]) * wl.conversations_per_user
            out.append(
                f"| ours 5 % changed: rows written (users changed) | "
                f"{_med([c['rows_written'] for c in ch]):,.0f} "
                f"({_med([c['users_changed'] for c in ch]):.0f}) | {exp:,.0f} |"
            )
            out.append(
                f"| ours 5 % changed / fetch-only | {ratio('ours-changed', 'floor-fetch'):.2f} | |"
            )
        if any("compare" in r for r in runs):
            rev = results.get("compare")
            out.append(f"| ours / {rev}, first load | {ratio('ours', 'compare'):.3f} | <= 1.05 |")
            out.append(
                f"| ours / {rev}, re-run | {ratio('ours-rerun', 'compare-rerun'):.3f} | <= 1.05 |"
            )
        out.append("")
    if "lat" in results:
        lat = results["lat"]
        wl, oh, foh = lat["workload"], lat["overhead"], lat["floor_overhead"]
        out += [
            f"### Latency-bound: {wl.users} users x {wl.conversations_per_user}, "
            f"+{wl.latency_ms:.0f} ms per request",
            "",
            f"Fixed cost (same workload at 0 ms): ours {oh.wall_s:.2f} s, fetch-only floor "
            f"{foh.wall_s:.2f} s. Latency-attributable = wall - fixed cost; "
            "efficiency = ideal / latency-attributable.",
            "",
            "| workers | requests | ideal s (req x 50 ms / workers) | ours wall s | ours - fixed s "
            "| efficiency | floor-fetch wall s | floor - fixed s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in lat["points"]:
            req = p["ours"].extra["requests"]
            ideal = req * wl.latency_ms / 1000 / p["workers"]
            net = p["ours"].wall_s - oh.wall_s
            fnet = p["floor-fetch"].wall_s - foh.wall_s
            out.append(
                f"| {p['workers']} | {req:,} | {ideal:.2f} | {p['ours'].wall_s:.2f} | {net:.2f} "
                f"| {ideal / net if net > 0 else float('nan'):.0%} | {p['floor-fetch'].wall_s:.2f} "
                f"| {fnet:.2f} |"
            )
        out.append("")
    if "scale" in results:
        sc = results["scale"]
        wl = sc["workload"]
        out += [
            f"### Scale: {wl.services} service x {wl.users:,} users x {wl.conversations_per_user}"
            f" = {wl.rows:,} rows (1 run)",
            "",
            "| contender | wall s | CPU s | peak RSS MB | emulator CPU s | requests | rows |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("floor", "baseline", "ours", "ours-rerun"):
            if name not in sc:
                continue
            r = sc[name]
            req = r.extra.get("requests", "")
            rows = r.extra.get("rows_written", r.extra.get("db_rows"))
            if isinstance(rows, dict):
                rows = rows.get("user_conversations")
            out.append(
                f"| {name} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.max_rss_mb:.0f} "
                f"| {r.emulator_cpu_s:.1f} | {req:,} | {rows:,} |"
            )
        out.append(f"\nours / floor at scale: {sc['ours'].wall_s / sc['floor'].wall_s:.2f}\n")
    if "emu" in results:
        e = results["emu"]
        out += [
            "### Emulator's own cost per request (one keep-alive session, 50-row pages)",
            "",
            f"{e['requests']} sequential requests: {e['client_ms']:.2f} ms round trip as a client "
            f"sees it (JSON decode included), {e['server_ms']:.2f} ms inside the emulator's "
            "handler (Twilio-Request-Duration).",
            "",
        ]
    return "\n".join(out)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, ChildResult | Workload):
        return {k: _jsonable(v) for k, v in vars(obj).items() if k != "stdout"}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 60 s)")
    parser.add_argument(
        "--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)},SCALE"
    )
    parser.add_argument("--repeats", type=int, default=None, help="W1 repeats (default 5)")
    parser.add_argument("--scale", action="store_true", help="also run SCALE (1,000,000 rows)")
    parser.add_argument("--scale-baseline", action="store_true", help="SCALE with rest_api too")
    parser.add_argument("--workers", default="1,4,8,16,32", help="LAT worker counts")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch directory (default results/work-<output>)",
    )
    parser.add_argument(
        "--output", default=None, help="write results/OUTPUT.md and .json (default latest)"
    )
    parser.add_argument(
        "--compare", default=None, help="W1: also run the code of this git commit, side by side"
    )
    args = parser.parse_args(argv)

    selected = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    if args.scale:
        selected.add("SCALE")
    unknown = selected - set(ALL) - {"SCALE"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    repeats = args.repeats or (1 if args.quick else 5)
    if args.quick:
        w1 = Workload("W1-quick", users=100, conversations_per_user=25)
        lat = Workload("LAT-quick", users=20, conversations_per_user=25, latency_ms=50)
        workers = [1, 8]
        selected.discard("SCALE")
    else:
        w1 = Workload("W1", users=2000, conversations_per_user=25)
        lat = Workload("LAT", users=400, conversations_per_user=25, latency_ms=50)
        workers = [int(w) for w in args.workers.split(",")]
    scale = Workload("SCALE", users=20_000, conversations_per_user=50)

    name = args.output or ("quick" if args.quick else "latest")
    work = fresh_dir(args.workdir or RESULTS / f"work-{name}")
    log_dir = fresh_dir(work / "logs")
    os.chdir(REPO)  # `python -m benchmarks.floor` in the children resolves from here
    started = time.perf_counter()
    results: dict[str, Any] = {}
    compare = None
    if args.compare:
        from .scale import code_of

        compare = code_of(args.compare, work / "compare-code")
        results["compare"] = args.compare
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("emu", lambda: _probe(w1, log_dir)),
        ("w1", lambda: bench_w1(w1, repeats, selected, work, log_dir, compare)),
        ("lat", lambda: bench_latency(lat, workers, work, log_dir)),
        ("scale", lambda: bench_scale(scale, work, log_dir, args.scale_baseline)),
    ]
    wanted = {
        "emu": "EMU" in selected,
        "w1": bool(selected & {"W1", "W1R", "W1C"}),
        "lat": "LAT" in selected,
        "scale": "SCALE" in selected,
    }
    try:
        for key, step in steps:
            if wanted[key]:
                results[key] = step()
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    env = machine()
    table = render(results, env)
    table += f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(table)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"machine": env, "results": _jsonable(results)}, indent=1, default=str)
    )
    return 0


def _probe(w1: Workload, log_dir: Path) -> dict[str, float]:
    with EmulatorProcess(w1, log_dir) as emu:
        emu.probe(50)  # warm up
        return emu.probe(300)


if __name__ == "__main__":
    raise SystemExit(main())
