"""What a run costs as the account grows: bookkeeping written, memory, start-up, re-run speed.

    python -m benchmarks.scale                           # 40,000 x 25 and 100,000 x 1
    python -m benchmarks.scale --cases 1000000x1         # a million users (about 2.7 hours)
    python -m benchmarks.scale --cases 1000000x1 --runs first,changed  # no re-run, no floor
    python -m benchmarks.scale --compare fcea4f2         # the same cases with an older commit
    python -m benchmarks.scale --ours HEAD --compare fcea4f2   # ours from git, not the tree
    python -m benchmarks.scale --startup 1000000 --compare 0e7cc9c  # start-up only, synthetic
    python -m benchmarks.scale --cases 20000x1 --parts 1000,10000,0 --output parts  # users_per_load

For each case (users x conversations per user, one service, loopback): a first load, an unchanged
re-run and a re-run after 1 % of the users changed (a read-state change, which does not move
`date_updated`), each `twilio-conversations run` in a process of its own, plus the fetch-only
floor (`benchmarks.floor`) for the re-runs' ratio. Per run: wall, peak RSS and the bytes each
table's load jobs held (the files dlt handed to the destination; compressed
`insert_values` for dlt's own tables), data (services, users, user_conversations) and
bookkeeping (`_fingerprints`, `_dlt_pipeline_state`) apart. With `--compare REV`, the code of
REV (from git) runs the same cases against the same emulator, side by side (every other case
REV first). Start-up: the time and peak memory of reading the fingerprints a re-run starts from
out of the DuckDB file, in a process of its own (`fingerprints.read_fingerprints`, as a run
reads them). `--startup USERS` measures only that, from a DuckDB file whose `_fingerprints`
table is written directly (one service, USERS users, both resources' rows), for account sizes
whose runs take too long here.
`--parts N,...` runs only first loads of the first case, one per `users_per_load` value (0: the
whole run in one load package), optionally at `--latency` ms a request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from .harness import (
    REPO,
    BenchmarkError,
    ChildResult,
    EmulatorProcess,
    Workload,
    check_levels,
    contender_env,
    count_rows,
    fresh_dir,
    launched,
    parse_summary,
    run_child,
)
from .run import OURS_CLI, OURS_TABLE, RESULTS, run_floor

DATA = ("services", "users", "user_conversations")
BOOKKEEPING = ("_fingerprints", "_dlt_pipeline_state")
CHANGE_SHARE = 0.01
RUNS = ("first", "rerun", "changed")
RUN_TIMEOUT = 4 * 3600  # seconds: a million users' first load took 50 minutes on a busy machine


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def code_of(rev: str, into: Path) -> Path:
    """`pipelines/` of commit `rev`, extracted from git into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "pipelines"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "pipelines"


def job_bytes(cwd: Path) -> dict[str, int]:
    """Bytes of the loaded packages' job files, per table (merge SQL left out): every package of
    the run, which loads in parts (`users_per_load`); `run_contender` leaves only this run's."""
    sizes: dict[str, int] = {}
    for package in packages(cwd):
        for job in (package / "completed_jobs").iterdir():
            if job.suffix != ".sql":
                table = job.name.split(".")[0]
                sizes[table] = sizes.get(table, 0) + job.stat().st_size
    return sizes


READ_FINGERPRINTS = """
import resource, sys, time
import dlt
from twilio_conversations.fingerprints import read_fingerprints
pipeline = dlt.pipeline(
    "reader", destination=dlt.destinations.duckdb(sys.argv[1]), dataset_name="twilio",
    pipelines_dir=sys.argv[2],
)
started = time.perf_counter()
held = read_fingerprints(pipeline)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def read_fingerprints(db: Path, code: Path | None) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of reading a re-run's fingerprints from `db`."""
    env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    reader = [sys.executable, "-c", READ_FINGERPRINTS, str(db), str(db.parent / "reader")]
    done = subprocess.run(
        launched(reader, db.parent / "usage.json"),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    seconds, rss = done.stdout.split()
    return float(seconds), float(rss)


SYNTHETIC_FINGERPRINTS = """
CREATE SCHEMA twilio;
CREATE TABLE twilio._fingerprints AS
SELECT r.resource, 'IS' || md5('service') AS scope, 'US' || md5(i::VARCHAR) AS key,
    substr(md5(r.resource || i::VARCHAR), 1, 16) AS fingerprint, NULL::BOOLEAN AS _deleted,
    '1700000000.1' AS _dlt_load_id, 'id' || i::VARCHAR AS _dlt_id
FROM range({users}) AS t(i), (VALUES ('users'), ('user_conversations')) AS r(resource);
"""


def bench_startup(users: int, contenders: dict[str, Path | None], work: Path) -> str:
    """Start-up of a re-run over `users` users, read from a synthetic `_fingerprints`."""
    import duckdb

    db = fresh_dir(work / "startup") / "synthetic.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute(SYNTHETIC_FINGERPRINTS.format(users=users))
    lines = [
        f"Start-up, {users:,} users (synthetic `_fingerprints`, {2 * users:,} rows):",
        "",
        "| code | seconds | peak RSS MB |",
        "|---|---:|---:|",
    ]
    for name, code in contenders.items():
        seconds, rss = read_fingerprints(db, code)
        _log(f"  {name}: {seconds:.2f} s, {rss:.0f} MB")
        lines.append(f"| {name} | {seconds:.2f} | {rss:.0f} |")
    return "\n".join(lines) + "\n"


def run_contender(
    emu: EmulatorProcess,
    cwd: Path,
    name: str,
    code: Path | None,
    fresh: bool,
    settings: dict[str, str] | None = None,
) -> ChildResult:
    if fresh:
        fresh_dir(cwd)
    else:  # keep only this run's packages, so job_bytes reads this run's
        for package in packages(cwd):
            subprocess.run(["rm", "-rf", str(package)], check=True)
    extra = {
        "DESTINATION__DUCKDB__CREDENTIALS": str(cwd / "ours.duckdb"),
        # every package of the run stays, for job_bytes (code without the setting ignores it)
        "SOURCES__TWILIO_CONVERSATIONS__KEEP_LOADED_PACKAGES": "1000000",
        **(settings or {}),
    }
    env = contender_env(emu, cwd, **extra)
    if code is not None:
        env["PYTHONPATH"] = f"{code}:{env['PYTHONPATH']}"
    cmd = [OURS_CLI, "run", "--destination", "duckdb", "--progress", "none"]
    result = run_child(name, cmd, env, cwd, emu, timeout=RUN_TIMEOUT)
    result.extra = parse_summary(result.stdout)
    sizes = job_bytes(cwd)
    result.extra["data_bytes"] = sum(sizes.get(t, 0) for t in DATA)
    result.extra["bookkeeping_bytes"] = sum(sizes.get(t, 0) for t in BOOKKEEPING)
    result.extra["packages"] = len(packages(cwd))
    return result


def packages(cwd: Path) -> list[Path]:
    """The load packages the pipeline in `cwd` has loaded, oldest first."""
    loaded = cwd / "dlt_data" / "pipelines" / "twilio_conversations" / "load" / "loaded"
    return sorted(loaded.iterdir()) if loaded.is_dir() else []


def bench_parts(
    users: int, per_user: int, parts: Sequence[int], latency_ms: float, work: Path, log_dir: Path
) -> str:
    """First loads of one account in load packages of each `users_per_load` (0: one package):
    what committing every N users costs against what a crash then keeps."""
    workload = Workload(
        f"PARTS-{users}x{per_user}",
        users=users,
        conversations_per_user=per_user,
        latency_ms=latency_ms,
    )
    rows = []
    with EmulatorProcess(workload, log_dir) as emu:
        for n in parts:
            cwd = work / f"{workload.name}-{n}"
            settings = {"SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD": str(n)}
            result = run_contender(emu, cwd, f"parts-{n}", None, fresh=True, settings=settings)
            loaded = count_rows(cwd / "ours.duckdb", OURS_TABLE)
            if loaded != workload.rows:
                raise BenchmarkError(f"users_per_load {n}: {loaded:,} rows, not {workload.rows:,}")
            _log(
                f"  users_per_load {n}: {result.wall_s:.1f} s, {result.extra['packages']} packages"
            )
            rows.append((n, result))
    one = next((r.wall_s for n, r in rows if n == 0), None)
    lines = [
        f"First load, {users:,} users x {per_user}, {latency_ms:g} ms latency, by users_per_load:",
        "",
        "| users_per_load | load packages | wall s | × one package | peak RSS MB | data bytes |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows:
        ratio = f"{r.wall_s / one:.2f}" if one else ""
        lines.append(
            f"| {n or 'one package'} | {r.extra['packages']} | {r.wall_s:.1f} | {ratio} "
            f"| {r.max_rss_mb:.0f} | {r.extra['data_bytes']:,} |"
        )
    return "\n".join(lines) + "\n"


def bench_case(
    users: int,
    per_user: int,
    contenders: dict[str, Path | None],
    work: Path,
    log_dir: Path,
    runs: Sequence[str] = RUNS,
    case_index: int = 0,
) -> dict[str, Any]:
    """The `runs` of each contender on one account (a first load always comes first); the
    fetch-only floor only when the unchanged re-run, whose target it is, is among them.

    Every other case runs the contenders in reverse order: the first of a pair was often the
    slower on this machine (docs/performance.md, "The least a dlt pipeline could take"), so a
    comparison repeated over several cases has each code first as often."""
    workload = Workload(f"SCALE-{users}x{per_user}", users=users, conversations_per_user=per_user)
    out: dict[str, Any] = {"users": users, "per_user": per_user, "floor": None}
    out["runs"] = {name: {} for name in contenders}  # the table's order, whatever ran first
    order = list(contenders.items())
    if case_index % 2:
        order.reverse()
    with EmulatorProcess(workload, log_dir) as emu:
        if "rerun" in runs:
            out["floor"] = run_floor(emu, work / "floor", fetch_only=True, workers=16)
            _log(f"{workload.name}: floor-fetch {out['floor'].wall_s:.1f} s")
        for name, code in order:
            cwd = work / f"{workload.name}-{name}"
            done = out["runs"][name]
            done["first"] = run_contender(emu, cwd, f"{name}-first", code, fresh=True)
            _log(f"  {name}: first {done['first'].wall_s:.1f} s")
            if "rerun" in runs:
                done["rerun"] = run_contender(emu, cwd, f"{name}-rerun", code, fresh=False)
                _log(f"  {name}: rerun {done['rerun'].wall_s:.1f} s")
            if name == "ours":
                out["startup"] = read_fingerprints(cwd / "ours.duckdb", code)
        if "changed" in runs:
            # One change for every contender: each re-reads the same changed account.
            changed = emu.change_users(CHANGE_SHARE)
            for name, code in order:
                cwd = work / f"{workload.name}-{name}"
                run = run_contender(emu, cwd, f"{name}-changed", code, fresh=False)
                check_levels(cwd / "ours.duckdb", OURS_TABLE, changed)
                run.extra["users_mutated"] = len(changed)
                out["runs"][name]["changed"] = run
                _log(f"  {name}: 1 % changed {run.wall_s:.1f} s")
    return out


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | code | run | wall s | × floor-fetch | peak RSS MB | rows written "
        "| data bytes | bookkeeping bytes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in results:
        floor = case["floor"]
        for name, runs in case["runs"].items():
            for kind, r in runs.items():
                ratio = f"{r.wall_s / floor.wall_s:.2f}" if floor else "–"
                lines.append(
                    f"| {case['users']:,} × {case['per_user']} | {name} | {kind} "
                    f"| {r.wall_s:.1f} | {ratio} | {r.max_rss_mb:.0f} "
                    f"| {r.extra.get('rows_written', 0):,} "
                    f"| {r.extra['data_bytes']:,} | {r.extra['bookkeeping_bytes']:,} |"
                )
        if floor:
            lines.append(
                f"| | floor-fetch | | {floor.wall_s:.1f} | 1.00 | {floor.max_rss_mb:.0f} |"
            )
    lines.append("")
    for case in results:
        seconds, rss = case["startup"]
        lines.append(
            f"Start-up, {case['users']:,} users: fingerprints read in {seconds:.2f} s, "
            f"peak RSS {rss:.0f} MB."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", default="40000x25,100000x1", help="USERSxCONVERSATIONS,...")
    parser.add_argument("--compare", default=None, help="also run the code of this git commit")
    parser.add_argument(
        "--ours", default=None, help="run ours from this git commit (default: the working tree)"
    )
    parser.add_argument("--output", default="scale", help="results/OUTPUT.md (default scale)")
    parser.add_argument(
        "--runs",
        default=",".join(RUNS),
        help="which runs of each case: first (always), rerun (with the floor), changed",
    )
    parser.add_argument(
        "--startup", type=int, default=None, help="only the start-up of this many users"
    )
    parser.add_argument(
        "--parts",
        default=None,
        help="only first loads of the first case with each users_per_load, e.g. 1000,10000,0",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="ms added to each request (with --parts)"
    )
    args = parser.parse_args(argv)
    runs = [run for run in args.runs.split(",") if run]
    if unknown := set(runs) - set(RUNS):
        parser.error(f"--runs: unknown {', '.join(sorted(unknown))} (choose from {RUNS})")
    cases = [tuple(int(n) for n in case.split("x")) for case in args.cases.split(",")]
    work = fresh_dir(RESULTS / f"work-{args.output}")
    log_dir = fresh_dir(work / "logs")
    contenders: dict[str, Path | None] = {
        "ours": code_of(args.ours, work / "ours") if args.ours else None
    }
    if args.compare:
        contenders[args.compare] = code_of(args.compare, work / "compare")
    if args.startup:
        table = bench_startup(args.startup, contenders, work)
        print(table)
        (RESULTS / f"{args.output}-startup.md").write_text(table)
        return 0
    if args.parts:
        (users, per_user), parts = cases[0], [int(n) for n in args.parts.split(",")]
        table = bench_parts(users, per_user, parts, args.latency, work, log_dir)
        print(table)
        (RESULTS / f"{args.output}-parts.md").write_text(table)
        return 0
    try:
        results = [
            bench_case(u, c, contenders, work, log_dir, runs, case_index=i)
            for i, (u, c) in enumerate(cases)
        ]
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    table = render(results)
    print(table)
    (RESULTS / f"{args.output}.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
