"""`twilio-conversations` command line: `run` (the scheduled job), `demo` and `emulator`.

Exit codes: 0 success, 1 the run failed (one line on stderr says why), 2 bad usage or
configuration. Nothing here prompts, so cron, CI and orchestrators can run it unattended.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from dlt.common.configuration.exceptions import ConfigurationException
from dlt.pipeline.exceptions import PipelineStepFailed

from . import SETTING_KEYS, twilio_conversations
from .errors import ConfigurationError, TwilioConnectorError
from .runner import (
    DATASET_NAME,
    DEMO_DUCKDB_FILE,
    RunOutcome,
    make_demo_pipeline,
    make_pipeline,
    run,
)
from .views import EXAMPLE_QUERIES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def console_main() -> None:
    """The `twilio-conversations` executable: `main` in a process of its own.

    The objects made by importing dlt, pyarrow and duckdb live until the process ends. Frozen
    (moved out of the collector's generations), the cyclic garbage collector stops re-scanning
    them on every full collection of the run and tearing them down one by one at exit
    (docs/performance.md, "Where the time goes", 9). Only here, never in `main`, because a process
    that imports the package and keeps running should keep collecting its garbage.
    """
    gc.freeze()
    code = main()
    gc.freeze()  # what the run imported lazily (normalize, load, the destination's driver)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # The emulator parses its own flags, so the scheduled `run` never imports it.
        return _emulator_main(argv[1:])
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dlt").addFilter(_ExpectedDltWarnings())
    try:
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one clear line for the scheduler, never a traceback wall
        cause = _root_cause(exc)
        print(f"error: {_one_line(cause)}", file=sys.stderr)
        if os.environ.get("TWILIO_CONVERSATIONS_DEBUG"):
            raise
        usage = isinstance(cause, ConfigurationError | ConfigurationException)
        return EXIT_USAGE if usage else EXIT_FAILED


class _ExpectedDltWarnings(logging.Filter):
    """Hide two dlt warnings about intended behaviour, so scheduler logs show real problems:
    our `json` hint overrides the arrow `string` type of `attributes_json` (arrow has no JSON
    type), and the first load, a plain append, has no use for the hard-delete flag."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "user_conversations" not in message:
            return True
        return not (
            "when merging arrow schema with dlt schema" in message
            or ('"hard_delete" column hint' in message and 'disposition "append"' in message)
        )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twilio-conversations",
        description="Load Twilio Conversations user conversations with dlt.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run_parser = commands.add_parser(
        "run",
        help="run the pipeline once (the scheduled job)",
        description="Extract services, users and user conversations and load what changed. "
        "Settings not given here come from .dlt/config.toml, .dlt/secrets.toml and the "
        "environment (SOURCES__TWILIO_CONVERSATIONS__..., TWILIO_ACCOUNT_SID, ...).",
    )
    _add_run_arguments(run_parser)
    run_parser.set_defaults(handler=_run_command)

    demo_parser = commands.add_parser(
        "demo",
        help=f"start the local emulator and load its demo data into ./{DEMO_DUCKDB_FILE}",
        description=f"Load the emulator's demo data into ./{DEMO_DUCKDB_FILE} (pipeline "
        "twilio_conversations_demo), apart from the real pipeline's file and state.",
    )
    demo_parser.add_argument("--seed", type=int, default=7, help="demo data seed (default 7)")
    demo_parser.add_argument(
        "--progress", default=None, help="dlt progress collector (default: log)"
    )
    demo_parser.set_defaults(handler=_demo_command)

    # Listed for --help; main() hands `emulator ...` to the emulator's own parser.
    commands.add_parser("emulator", help="serve the local Twilio Conversations API emulator")
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--destination", default="duckdb", help="any dlt destination name (default duckdb)"
    )
    parser.add_argument("--dataset", default=DATASET_NAME, help="dataset / schema name")
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop this source's tables and state first, then load everything",
    )
    parser.add_argument(
        "--progress",
        default=None,
        choices=["log", "tqdm", "enlighten", "alive_progress", "none"],
        help="progress output (default: tqdm on a terminal, log lines otherwise)",
    )
    parser.add_argument("--base-url", help="API origin (default https://conversations.twilio.com)")
    parser.add_argument(
        "--service-sid", action="append", dest="service_sids", help="scan only this service"
    )
    parser.add_argument(
        "--user-sid",
        action="append",
        dest="user_sids",
        help="scan only this user (SID or identity)",
    )
    parser.add_argument("--page-size", type=int, help="records per page to ask for (1-1000)")
    parser.add_argument("--max-workers", type=int, help="users fetched in parallel")
    parser.add_argument("--start-date", help="keep rows with date_updated >= this (ISO 8601)")
    parser.add_argument("--end-date", help="keep rows with date_updated < this (ISO 8601)")
    parser.add_argument(
        "--lookback-days", type=float, help="keep rows updated in the last N days (rolling start)"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        default=None,
        help="also keep every version of each user conversation (user_conversations_history)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        help="seconds to wait for a DuckDB file another process holds open (default 600)",
    )


def _progress(choice: str | None) -> Any:
    from dlt.common.runtime.collector import LogCollector

    if choice == "none":
        return None
    if choice is None:
        choice = "tqdm" if sys.stderr.isatty() else "log"
    if choice == "log":
        # Plain lines every 10 s on stdout, beside the summary: readable in log collectors, no
        # terminal control codes, and stderr stays free for the one-line error.
        return LogCollector(log_period=10.0, logger=sys.stdout, dump_system_stats=False)
    return choice


def _run_command(args: argparse.Namespace) -> int:
    # The settings given as flags; the others come from config the dlt way.
    source_kwargs = {
        name: value
        for name in SETTING_KEYS
        if name != "lock_timeout" and (value := getattr(args, name, None)) is not None
    }
    pipeline = make_pipeline(args.destination, args.dataset, _progress(args.progress))
    outcome = run(
        pipeline,
        full_refresh=args.full_refresh,
        source_kwargs=source_kwargs,
        lock_timeout=args.lock_timeout,
    )
    print(format_summary(outcome))
    return EXIT_OK


def _emulator_main(argv: list[str]) -> int:
    from twilio_emulator import cli as emulator_cli  # the CLI joins source and emulator

    parser = argparse.ArgumentParser(
        prog="twilio-conversations emulator",
        description="Serve a local emulator of the Twilio Conversations v1 API.",
    )
    emulator_cli.add_arguments(parser)
    return emulator_cli.run(parser.parse_args(argv))


def _demo_command(args: argparse.Namespace) -> int:
    from twilio_emulator import DataSpec, EmulatorConfig, run_emulator

    from .credentials import TwilioCredentials

    # Several services, a mix of users with none, a few and more than 50 conversations (paging).
    config = EmulatorConfig(data=DataSpec(seed=args.seed, services=3, users=60))
    with run_emulator(config) as emulator:
        print(f"emulator serving demo data at {emulator.base_url}")
        credentials = TwilioCredentials()
        credentials.account_sid = emulator.account_sid
        credentials.auth_token = emulator.auth_token
        pipeline = make_demo_pipeline(_progress(args.progress))
        # A fresh start each time: the demo's data is the emulator's, not a real account's.
        # Every setting is given, so nothing configured for the real account applies.
        outcome = run(
            pipeline,
            full_refresh=True,
            source_kwargs={
                **DEMO_SETTINGS,
                "credentials": credentials,
                "base_url": emulator.base_url,
            },
        )
    print(format_summary(outcome))
    print(_example_queries(pipeline))
    return EXIT_OK


# The source's defaults, given explicitly: dlt would fill an omitted argument from the real
# pipeline's `[sources.twilio_conversations]` config (an explicit value, None included, is not
# looked up).
DEMO_SETTINGS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(twilio_conversations).parameters.items()
    if name not in ("credentials", "base_url", "run_report")
}


def format_summary(outcome: RunOutcome) -> str:
    """One screen a scheduler log can keep: what was written, scanned, skipped and retried."""
    report = outcome.report
    rows = " · ".join(f"{table} {count:,}" for table, count in outcome.rows_written.items())
    lines = [
        f"twilio_conversations: loaded into {outcome.destination} dataset {outcome.dataset} "
        f"in {outcome.elapsed_s:.1f} s",
        f"  rows written   {rows}",
        f"  services       {report.services_scanned} scanned",
        f"  users          {report.users_scanned:,} scanned · {report.users_changed:,} changed · "
        f"{report.users_removed:,} removed · {len(report.skipped):,} skipped",
        f"  conversations  {report.conversation_rows_fetched:,} rows read",
        f"  requests       {report.requests.requests:,} ({report.requests.retries:,} retries)",
    ]
    limit = report.concurrency
    if limit is not None and limit.lowest < limit.ceiling:
        lines.append(
            f"  throttled      429s cut parallel requests from {limit.ceiling} to {limit.lowest}"
            f" (now {limit.limit})"
        )
    if outcome.waited_for_lock:
        lines.append(
            f"  waited         for {outcome.waited_for_lock}, which held the DuckDB file open"
        )
    if outcome.recovered_packages:
        lines.append(
            f"  recovered      {outcome.recovered_packages} load package(s) left by an earlier"
            " run were loaded first"
        )
    for skipped in report.skipped[:10]:
        lines.append(f"  skipped        {skipped.service_sid}/{skipped.user}: {skipped.reason}")
    if len(report.skipped) > 10:
        lines.append(f"  skipped        ... and {len(report.skipped) - 10} more")
    for ref in report.unresolved_users:
        lines.append(f"  not found      user {ref!r} is in no scanned service")
    return "\n".join(lines)


def _example_queries(pipeline: Any) -> str:
    out = []
    with pipeline.sql_client() as client:
        for title, sql in EXAMPLE_QUERIES.items():  # over the views the runner refreshed
            with client.execute_query(sql) as cursor:
                columns = [c[0] for c in cursor.description]
                rows = cursor.fetchall()
            out.append(f"\n-- {title}\n" + _format_table(columns, rows))
    return "\n".join(out)


def _format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, columns))] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _root_cause(exc: BaseException) -> BaseException:
    """The connector's own error inside dlt's wrappers, else the innermost cause."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if isinstance(current, TwilioConnectorError):
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    if isinstance(exc, PipelineStepFailed) and seen:
        return seen[-1]
    return exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    console_main()
