"""Runs at the real API's latency, on an account that limits requests in flight.

    python -m benchmarks.latency                       # 100 and 250 ms, 3,000 users
    python -m benchmarks.latency --users 3000,20000    # and the 20,000-user account
    python -m benchmarks.latency --quick               # two small cases (a smoke run)

Each case starts the emulator with a latency added to every request and Twilio's account-wide
limit on concurrent requests (`--account-concurrency`, 429/20429 at once beyond it, optionally
with part of it taken by the customer's other traffic), then runs side by side:

* **floor**: `benchmarks.floor --pipelined --fetch-only`, which fetches each user's
  conversations as soon as the listing page naming the user is read, with at most C requests in
  flight in all, C being what the account leaves free (min(workers, limit - other traffic));
* **dlt minimum**: `benchmarks.dlt_minimum`, a one-row dlt pipeline into DuckDB: what any
  dlt-based connector pays before its first request and after its last, whatever the data;
* **ours**: `twilio-conversations run` into DuckDB with `max_workers` = workers.

ideal(C) = max(listing pages x latency, all requests x latency / C): the user listing is a chain
of page tokens, everything else can overlap it. The table gives each contender's wall time over
the ideal, floor + dlt minimum over the ideal (the least a dlt pipeline could take: the
floor's fetching plus dlt's fixed cost), and the share of ours' requests that the account
throttled (429). The users are the emulator's mix (none, a few and more than a page of
conversations), so lists of one and of several pages both occur.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .harness import (
    PYTHON,
    REPO,
    BenchmarkError,
    EmulatorProcess,
    Workload,
    check_rows,
    contender_env,
    fresh_dir,
    last_json,
    parse_summary,
    run_child,
    run_dlt_minimum,
)
from .run import OURS_CLI, OURS_TABLE, RESULTS, machine
from .scale import code_of

MAX_CONVERSATIONS = 70  # the mix: up to two pages of 50 per user


@dataclass(frozen=True)
class Case:
    latency_ms: int
    users: int
    workers: int
    account_limit: int
    other_traffic: int = 0

    @property
    def free(self) -> int:
        """Requests in flight the account leaves to us."""
        return min(self.workers, self.account_limit - self.other_traffic)

    @property
    def label(self) -> str:
        other = f", other traffic {self.other_traffic}" if self.other_traffic else ""
        return (
            f"{self.latency_ms} ms, {self.users:,} users, {self.workers} workers, "
            f"limit {self.account_limit}{other}"
        )


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cases(latencies: Sequence[int], users: Sequence[int], workers: Sequence[int]) -> list[Case]:
    out = [Case(lat, n, w, 100) for lat in latencies for n in users for w in workers]
    # The shared account: room for 40 of 64 (the customer's own app holds 60 of 100).
    out += [Case(lat, n, 64, 100, other_traffic=60) for lat in latencies for n in users]
    return out


def run_case(case: Case, work: Path, log_dir: Path, compare: Path | None = None) -> dict[str, Any]:
    workload = Workload(
        f"lat{case.latency_ms}-{case.users}", case.users, None, latency_ms=case.latency_ms
    )
    extra = [
        "--max-conversations",
        str(MAX_CONVERSATIONS),
        "--account-concurrency",
        str(case.account_limit),
        "--other-traffic",
        str(case.other_traffic),
    ]
    with EmulatorProcess(workload, log_dir, extra) as emu:
        cwd = fresh_dir(work / "floor")
        floor_cmd = [PYTHON, "-m", "benchmarks.floor", "--base-url", emu.base_url]
        floor_cmd += ["--workers", str(case.free), "--pipelined", "--fetch-only"]
        floor = run_child("floor", floor_cmd, contender_env(emu, cwd), cwd, emu)
        floor.extra = last_json(floor.stdout)
        rows = int(floor.extra["rows"])  # every row the account has: ours must load as many

        minimum = run_dlt_minimum(emu, work / "dlt_minimum")

        def load(name: str, cmd: list[str], **env: str) -> Any:
            """The connector's first load (`cmd`) into a DuckDB file of its own; every row."""
            cwd = fresh_dir(work / name)
            database = cwd / "ours.duckdb"
            env = {
                "DESTINATION__DUCKDB__CREDENTIALS": str(database),
                "SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS": str(case.workers),
                **env,
            }
            args = ["run", "--destination", "duckdb", "--progress", "none"]
            done = run_child(name, [*cmd, *args], contender_env(emu, cwd, **env), cwd, emu)
            check_rows(name, database, OURS_TABLE, rows)
            return done

        ours = load("ours", [OURS_CLI])
        ours.extra = parse_summary(ours.stdout)
        # The same run with another commit's code, on the same account.
        other = None
        if compare is not None:
            cli = [PYTHON, "-m", "twilio_conversations.cli"]
            other = load("compare", cli, PYTHONPATH=str(compare))

    requests = int(floor.extra["requests"])  # the minimum: no retries
    listing = 1 + math.ceil(case.users / 50)  # /v1/Services, then the chain of user pages
    seconds = case.latency_ms / 1000
    ideal = max(listing * seconds, requests * seconds / case.free)
    throttled = ours.extra["retries"] / max(1, ours.extra["requests"])
    result = {
        "case": asdict(case),
        "label": case.label,
        "rows": rows,
        "requests": requests,
        "ideal_s": ideal,
        "floor_s": floor.wall_s,
        "dlt_minimum_s": minimum.wall_s,
        "ours_s": ours.wall_s,
        "ours_requests": ours.extra["requests"],
        "ours_retries": ours.extra["retries"],
        "ours_cpu_s": ours.user_s + ours.sys_s,
        "emulator_cpu_s": ours.emulator_cpu_s,
        "floor_ratio": floor.wall_s / ideal,
        "least_dlt_ratio": (floor.wall_s + minimum.wall_s) / ideal,
        "ours_ratio": ours.wall_s / ideal,
        "throttled": throttled,
        "compare_s": other.wall_s if other else None,
    }
    _log(
        f"{case.label}: ideal {ideal:.1f} s, floor {floor.wall_s:.1f} s "
        f"({floor.wall_s / ideal:.2f}), dlt minimum {minimum.wall_s:.1f} s, "
        f"ours {ours.wall_s:.1f} s ({ours.wall_s / ideal:.2f}), "
        f"{throttled:.1%} throttled"
        + (f"; compare {other.wall_s:.1f} s ({other.wall_s / ideal:.2f})" if other else "")
    )
    return result


def render(results: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "### Latency and the account's limit (1 service, the emulator's mix of users)",
        "",
        machine,
        "",
        "| case | requests | ideal s | floor s | floor/ideal | dlt min s "
        "| (floor + dlt min)/ideal | ours s | ours/ideal "
        "| ours - floor s | throttled | ours CPU s | emulator CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['requests']:,} | {r['ideal_s']:.1f} | {r['floor_s']:.1f} | "
            f"{r['floor_ratio']:.2f} | {r['dlt_minimum_s']:.2f} | {r['least_dlt_ratio']:.2f} | "
            f"{r['ours_s']:.1f} | **{r['ours_ratio']:.2f}** | "
            f"{r['ours_s'] - r['floor_s']:.1f} | "
            f"{r['throttled']:.1%} ({r['ours_retries']:,} of {r['ours_requests']:,}) "
            f"| {r['ours_cpu_s']:.1f} | {r['emulator_cpu_s']:.1f} |"
        )
    lines += [
        "",
        "ideal(C) = max(listing pages x latency, requests x latency / C), C = min(workers, "
        "limit - other traffic); requests are the floor's (no retries). dlt min: a one-row dlt "
        "pipeline into DuckDB (its import and steps), so (floor + dlt min)/ideal is the least a "
        "dlt pipeline could take. ours - floor: what ours spends beyond a fetch that writes "
        "nothing (start-up, dlt's steps, the load's tail). "
        "CPU: ours' user + sys, and the emulator's during ours' run; the two share the machine's "
        "cores.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--latency", default="100,250", help="ms added per request")
    parser.add_argument("--users", default="3000", help="users of the one service")
    parser.add_argument("--workers", default="8,32,64,128", help="max_workers values")
    parser.add_argument("--quick", action="store_true", help="two small cases")
    parser.add_argument("--output", default="latency", help="results/OUTPUT.md and .json")
    parser.add_argument("--compare", default=None, help="also run the code of this git commit")
    args = parser.parse_args(argv)
    if args.quick:
        selected = [Case(50, 200, 8, 100), Case(50, 200, 16, 100, other_traffic=90)]
    else:
        selected = cases(
            [int(v) for v in args.latency.split(",")],
            [int(v) for v in args.users.split(",")],
            [int(v) for v in args.workers.split(",")],
        )
    work = fresh_dir(RESULTS / f"work-{args.output}")
    log_dir = fresh_dir(work / "logs")
    compare = code_of(args.compare, work / "compare-code") if args.compare else None
    os.chdir(REPO)
    started = time.perf_counter()
    results = []
    try:
        for case in selected:
            results.append(run_case(case, work, log_dir, compare))
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    env = machine()
    line = (
        f"Machine: {env['cpus']} CPUs ({env['cpu']}), Python {env['python']}, dlt {env['dlt']}, "
        f"duckdb {env['duckdb']}; venv {env['venv']}; {env['date']}; load average at the end "
        f"{env['load']}; connector at {env['commit']}."
    )
    table = (
        render(results, line) + f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.\n"
    )
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.output}.md").write_text(table)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
