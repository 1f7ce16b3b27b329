"""Where one run's time goes at the real API's latency: a timeline of its requests.

    python -m benchmarks.timeline --workers 64                   # 100 ms, 3,000 users, limit 100
    python -m benchmarks.timeline --workers 64 --other-traffic 60 --latency 250

Starts the emulator (as `benchmarks.latency` does), runs ours in this process through the same
runner as the CLI, and records every HTTP request the client sends (start, end, kind, status)
by wrapping `ApiSession.send`, and the span of each of dlt's steps (`extract`, `normalize`,
`load`, one of each per part of the run) by wrapping the pipeline's methods. It prints the
phases: start-up before the first request, the user listing's chain (pages and the idle gaps
between them), the steps, the tail from the last request to the end of the run (normalize and
load), the requests in flight second by second, and request durations (above the added latency:
CPU contention on the machine). A diagnostic, not a
benchmark: the wrapper and the in-process run cost a little; compare phases, not totals.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import EmulatorProcess, Workload, fresh_dir
from .latency import MAX_CONVERSATIONS
from .run import RESULTS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__)
    parser.add_argument("--latency", type=int, default=100, help="ms added per request")
    parser.add_argument("--users", type=int, default=3000, help="users of the one service")
    parser.add_argument("--workers", type=int, default=32, help="max_workers")
    parser.add_argument("--limit", type=int, default=100, help="the account's requests in flight")
    parser.add_argument("--other-traffic", type=int, default=0, help="of them, held by others")
    args = parser.parse_args(argv)

    work = fresh_dir(RESULTS / "work-timeline")
    workload = Workload("timeline", args.users, None, latency_ms=args.latency)
    extra = ["--max-conversations", str(MAX_CONVERSATIONS), "--account-concurrency"]
    extra += [str(args.limit), "--other-traffic", str(args.other_traffic)]
    with EmulatorProcess(workload, work, extra) as emu:
        requests_log, steps, seconds = _run_ours(emu.base_url, work, args.workers)
    print(_report(args, requests_log, steps, seconds))
    return 0


Span = tuple[float, float, str]  # start and end (seconds from the run's start), what


def _run_ours(
    base_url: str, work: Path, workers: int
) -> tuple[list[tuple[Any, ...]], list[Span], float]:
    from twilio_emulator import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN

    os.chdir(work)
    os.environ.update(
        {
            "DLT_DATA_DIR": str(work / "dlt"),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": base_url,
            "SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS": str(workers),
            "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
        }
    )
    import dlt
    from twilio_conversations import transport
    from twilio_conversations.runner import make_pipeline, run

    log: list[tuple[Any, ...]] = []
    lock = threading.Lock()
    send = transport.ApiSession.send

    def recording(self: Any, request: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        status = 0
        try:
            response = send(self, request, **kwargs)
            status = response.status_code
            return response
        finally:
            kind = request.url.split("?")[0].rsplit("/", 1)[-1]
            with lock:
                log.append((started - t0, time.perf_counter() - t0, kind, status))

    transport.ApiSession.send = recording  # type: ignore[method-assign]
    destination = dlt.destinations.duckdb(str(work / "ours.duckdb"))
    pipeline = make_pipeline(destination, progress=None, pipelines_dir=str(work / "pipelines"))
    steps: list[Span] = []

    def timed(name: str, step: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter() - t0
            try:
                return step(*args, **kwargs)
            finally:
                steps.append((started, time.perf_counter() - t0, name))

        return wrapper

    for name in ("extract", "normalize", "load"):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
    t0 = time.perf_counter()
    run(pipeline)
    return sorted(log), steps, time.perf_counter() - t0


def _report(
    args: argparse.Namespace, log: list[tuple[Any, ...]], steps: list[Span], seconds: float
) -> str:
    listing = [r for r in log if r[2] == "Users"]
    last_end = max(r[1] for r in log)
    gaps = [b[0] - a[1] for a, b in zip(listing, listing[1:], strict=False)]
    per_second = [0.0] * (int(last_end) + 1)
    for start, end, *_ in log:
        t = start
        while t < end:
            step = min(end, int(t) + 1)
            per_second[int(t)] += step - t
            t = step
    durations = sorted((end - start) * 1000 for start, end, *_ in log)
    throttled = sum(1 for r in log if r[3] == 429)
    return "\n".join(
        [
            f"{args.latency} ms, {args.users:,} users, {args.workers} workers, limit "
            f"{args.limit}, other traffic {args.other_traffic}: run {seconds:.2f} s, "
            f"{len(log):,} requests, {throttled} throttled (429)",
            f"  start-up before the first request  {log[0][0]:6.2f} s",
            f"  user listing: {len(listing)} pages done at {max(r[1] for r in listing):6.2f} s, "
            f"idle gaps between pages {sum(gaps):.2f} s (longest {max(gaps, default=0):.2f} s)",
            *(f"  {name:<35}{start:6.2f} -> {end:6.2f} s" for start, end, name in steps),
            f"  last request done at               {last_end:6.2f} s",
            f"  tail (normalize, load, views)      {seconds - last_end:6.2f} s",
            "  in flight, second by second: " + " ".join(f"{n:.0f}" for n in per_second),
            f"  request durations: median {statistics.median(durations):.0f} ms, "
            f"p90 {durations[int(len(durations) * 0.9)]:.0f} ms",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
