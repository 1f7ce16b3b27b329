"""`twilio-conversations` command line: `run` (the scheduled job), `demo`, `check` and `config`.

Exit codes: 0 success, 1 the run failed (one line on stderr says why), 2 bad usage or
configuration, 130 interrupted (Ctrl-C). With several accounts (`accounts.py`): 0 every account
loaded, 1 any account failed (one `error: account NAME: ...` line each; the others loaded), 2 a
configuration error before any account ran, or every account failed on its configuration.
Nothing here prompts, so cron, CI and orchestrators can run it unattended.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from types import FrameType
from typing import Any, TypeVar

from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.providers.toml import TomlProviderReadException
from dlt.common.destination.exceptions import UnknownDestinationModule
from dlt.common.exceptions import MissingDependencyException
from dlt.destinations.exceptions import DestinationConnectionError
from dlt.pipeline.exceptions import PipelineStepFailed

from . import SETTING_KEYS, twilio_conversations
from .accounts import AccountsPlan, plan_accounts
from .errors import ConfigurationError, NotFoundError, TwilioConnectorError, causes
from .progress import (
    RETRY_LOGGER,
    DltWarnings,
    Output,
    RetryAnnouncer,
    StepCounter,
    Ticker,
    dlt_warnings_captured,
    silence,
)
from .report import RunReport
from .runner import (
    DATASET_NAME,
    DEMO_DUCKDB_FILE,
    DEMO_PIPELINE_NAME,
    RESOURCES,
    AccountRun,
    RunOutcome,
    exclusive,
    make_demo_pipeline,
    make_pipeline,
    run,
    run_accounts,
)
from .views import EXAMPLE_QUERIES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a job ended by Ctrl-C
PROGRESS_CHOICES = ["log", "tqdm", "enlighten", "alive_progress", "none"]


def console_main() -> None:
    """The `twilio-conversations` executable: `main` in a process of its own.

    The objects made by importing dlt, pyarrow and duckdb live until the process ends. Frozen
    (moved out of the collector's generations), the cyclic garbage collector stops re-scanning
    them on every full collection of the run and tearing them down one by one at exit
    (docs/architecture.md, "Measurements behind the code"). Only here, never in `main`, because
    a process that imports the package and keeps running should keep collecting its garbage.
    """
    gc.freeze()
    code = main()
    gc.freeze()  # what the run imported lazily (normalize, load, the destination's driver)
    _flush_stdout()
    if code == EXIT_INTERRUPTED:
        # Now, not once the fetch threads' requests in flight have ended (up to
        # request_timeout): whatever they bring is dropped anyway.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    debug = bool(os.environ.get("TWILIO_CONVERSATIONS_DEBUG"))
    started = time.perf_counter()
    with ExitStack() as stack:
        # dlt's warnings in its raw format only when debugging; otherwise summary lines.
        captured = None if debug else stack.enter_context(dlt_warnings_captured())
        session = _Session(captured, as_json=getattr(args, "json", False))
        stack.enter_context(_noting_sigint(session))
        code, error = _handle(args, session, debug)
    if session.as_json:
        _say(json.dumps(_json_record(session, code, error, time.perf_counter() - started)))
    return code


def _handle(args: argparse.Namespace, session: _Session, debug: bool) -> tuple[int, str | None]:
    """Run the command: its exit code, and the line said on stderr if it failed."""
    try:
        code: int = args.handler(args, session)
        if session.interrupted:  # pressed, but the run went on to the end (see noted)
            return _interrupted(session)
        return code, session.error_lines[0] if session.error_lines else None
    except (KeyboardInterrupt, Exception) as exc:  # one clear line, never a traceback wall
        # stdout is block-buffered into a file: this run's lines go before its error line
        _flush_stdout()
        if session.interrupted or _find(exc, KeyboardInterrupt) is not None:
            return _interrupted(session)
        code, message = _explain(exc)
        print(f"error: {message}", file=sys.stderr)
        if debug:
            raise
        return code, message


def _interrupted(session: _Session) -> tuple[int, str]:
    """Say on stderr what the next run does after this interrupted one."""
    line = _interrupted_line(session.steps)
    print(line, file=sys.stderr)
    return EXIT_INTERRUPTED, line


class _Session:
    """What one command shares with `main`: the step dlt is in (for the Ctrl-C line), dlt's
    captured warnings, and the progress display while the run goes."""

    def __init__(self, dlt_warnings: DltWarnings | None, as_json: bool = False) -> None:
        self.dlt_warnings = dlt_warnings
        self.steps: StepCounter | None = None
        self.show_progress = False
        self.interrupted = False
        self.report: RunReport | None = None
        # `run --json`: stdout holds one JSON object, so progress lines go to stderr.
        self.as_json = as_json
        self.progress_stream = sys.stderr if as_json else sys.stdout
        self.outcome: RunOutcome | None = None
        self.accounts: tuple[AccountsPlan, list[AccountRun]] | None = None
        self.error_lines: list[str] = []  # what a multi-account run said on stderr

    def progress(self, choice: str | None) -> Any:
        """The collector for `make_pipeline`: ours (counting, shown by the ticker with `log`),
        or dlt's own display when one is asked for by name."""
        if choice is None:
            choice = "log" if _isatty(self.progress_stream) else "none"
        if choice not in ("log", "none"):
            return choice
        self.steps = StepCounter()
        self.show_progress = choice == "log"
        return self.steps

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Progress lines (and long retry waits) on stdout while the block runs, if shown."""
        with RunReport.watch(self._attach):
            if not self.show_progress:
                yield
                return
            output = Output(self.progress_stream)
            ticker = Ticker(lambda: self.report, self.steps, output)
            client_logger = logging.getLogger(RETRY_LOGGER)
            announcer = _ForwardingAnnouncer(output)
            saved = client_logger.level, client_logger.propagate
            client_logger.setLevel(logging.INFO)  # the retry line is logged at INFO
            client_logger.propagate = False  # INFO is ours to show; WARNING+ is forwarded
            client_logger.addHandler(announcer)
            ticker.start()
            try:
                yield
            finally:
                ticker.stop()
                client_logger.removeHandler(announcer)
                client_logger.setLevel(saved[0])
                client_logger.propagate = saved[1]

    def _attach(self, report: RunReport) -> None:
        self.report = report

    def notes(self, outcome: RunOutcome) -> list[str]:
        if self.dlt_warnings is None:
            return []
        return self.dlt_warnings.summary_lines(outcome.destination)


class _ForwardingAnnouncer(RetryAnnouncer):
    """The retry announcer on the client's logger, which then does not propagate: records of
    WARNING and above still go where they would have gone."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            logging.getLogger(RETRY_LOGGER.rsplit(".", 1)[0]).handle(record)
            return
        super().emit(record)


@contextmanager
def _noting_sigint(session: _Session) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also noted, so the run ends with the
    interrupt line even where the KeyboardInterrupt became another error (DuckDB's
    InterruptException) or was swallowed on the way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def noted(signum: int, frame: FrameType | None) -> None:
        session.interrupted = True
        if session.steps is not None:
            session.steps.interrupt_requested = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted_line(steps: StepCounter | None) -> str:
    """`interrupted: ...` and what the next run does, from the step the run was in."""
    if steps is None:
        return "interrupted: the next run loads whatever this run left pending, then reads the API"
    if steps.current == "" or (steps.current == "extract" and not steps.completed):
        if steps.parts_loaded:
            return (
                f"interrupted: {steps.parts_loaded} part(s) of this run are loaded; the next run "
                "loads the rest"
            )
        return (
            "interrupted: nothing of this run was loaded; the next run starts again from the "
            "last completed load"
        )
    if steps.current == "load" and steps.completed:
        return "interrupted after a load: what was loaded stays; the next run goes on from there"
    # After an interrupted first load dlt starts the next run over instead of finishing it.
    return "interrupted: the load did not complete; the next run loads what is missing"


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _say(text: str) -> None:
    """Print to stdout; a reader that went away (`| head`) ends the output, not the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence(sys.stdout)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence(sys.stdout)
    except ValueError:  # closed
        pass


def version_line() -> str:
    """`twilio-conversations 0.1.0 (dlt 1.31.0)`: the installed distributions' versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("twilio-conversations")
    except PackageNotFoundError:  # run from a checkout that was never installed
        ours = "(not installed)"
    return f"twilio-conversations {ours} (dlt {version('dlt')})"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twilio-conversations",
        description="Load Twilio Conversations user conversations with dlt.",
    )
    parser.add_argument("--version", action="version", version=version_line())
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
        "--progress",
        default=None,
        choices=PROGRESS_CHOICES,
        help="progress output (default: log lines on a terminal, none otherwise)",
    )
    demo_parser.set_defaults(handler=_demo_command)

    check_parser = commands.add_parser(
        "check",
        help="check the setup a run would use, loading nothing",
        description="Check what a run with these flags needs: its settings, the origin and "
        "region, the credentials, the services and users the configuration reaches, and the "
        "destination reachable and writable. A handful of API requests; nothing is loaded or "
        "written. Exit 0, or the code (and the error lines) a run would fail with.",
    )
    _add_target_arguments(check_parser)
    check_parser.set_defaults(handler=_check_command)

    config_parser = commands.add_parser(
        "config",
        help="print the configuration a run would use and where each value comes from",
        description="Print the Twilio credentials, the source's settings and the destination's "
        "credentials a run would use, each with where it comes from (an environment variable, "
        "a file and section, or the default). Secrets are masked.",
    )
    config_parser.add_argument(
        "--destination", default="duckdb", help="the destination to show (default duckdb)"
    )
    config_parser.set_defaults(handler=_config_command)
    return parser


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """What a run reads and where it writes: the flags `run` and `check` share."""
    parser.add_argument(
        "--destination", default="duckdb", help="any dlt destination name (default duckdb)"
    )
    parser.add_argument("--dataset", default=DATASET_NAME, help="dataset / schema name")
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
    parser.add_argument(
        "--lock-timeout",
        type=float,
        help="seconds to wait for a DuckDB file another process holds open (default 600)",
    )
    parser.add_argument(
        "--account",
        action="append",
        dest="account_names",
        metavar="NAME",
        help="with several accounts configured (accounts, or subaccounts = true): run only this "
        "one (repeatable; one orchestrator task per account)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_target_arguments(parser)
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop this source's tables and state first, then load everything",
    )
    parser.add_argument(
        "--progress",
        default=None,
        choices=PROGRESS_CHOICES,
        help="progress output: 'log' prints a line every 10 s on stdout (default: log on a "
        "terminal, none otherwise); tqdm, enlighten and alive_progress are dlt's displays",
    )
    parser.add_argument("--max-workers", type=int, help="users fetched in parallel")
    parser.add_argument("--start-date", help="keep rows with date_updated >= this (ISO 8601)")
    parser.add_argument("--end-date", help="keep rows with date_updated < this (ISO 8601)")
    parser.add_argument(
        "--lookback-days", type=float, help="keep rows updated in the last N days (rolling start)"
    )
    parser.add_argument(
        "--history",
        action="store_const",
        const=True,
        default=None,
        help="also keep every version of each user conversation (user_conversations_history); "
        "once the dataset has history, every run keeps it",
    )
    parser.add_argument(
        "--no-history",
        dest="history",
        action="store_const",
        const=False,
        help="stop keeping user_conversations_history current (turned off on purpose)",
    )
    parser.add_argument(
        "--resource",
        action="append",
        dest="resources",
        choices=list(RESOURCES),
        help="load only these resources (repeatable): services, user_conversations (which "
        "writes users and user_conversations, from one scan), conversations (not in the "
        "default set); the views are refreshed once the dataset has their tables",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout, also when the run fails "
        "(progress lines then go to stderr)",
    )


def _run_command(args: argparse.Namespace, session: _Session) -> int:
    # The settings given as flags; the others come from config the dlt way.
    source_kwargs = {
        name: value
        for name in SETTING_KEYS
        if name != "lock_timeout" and (value := getattr(args, name, None)) is not None
    }
    plan = plan_accounts(args.base_url)
    if plan is not None:
        return _run_accounts_command(args, session, plan, source_kwargs)
    if args.account_names:
        raise ConfigurationError(
            "--account needs several accounts configured: [[sources.twilio_conversations."
            'accounts]] or subaccounts = true (README, "Several accounts")'
        )
    # Locked before the pipeline is made: see `exclusive`.
    with exclusive():
        pipeline = _foreground(
            make_pipeline(args.destination, args.dataset, session.progress(args.progress))
        )
        with session.watching():
            outcome = run(
                pipeline,
                full_refresh=args.full_refresh,
                source_kwargs=source_kwargs,
                lock_timeout=args.lock_timeout,
                resources=args.resources,
            )
    session.outcome = outcome
    if not session.as_json:
        _say(format_summary(outcome, session.notes(outcome)))
    return EXIT_OK


def _run_accounts_command(
    args: argparse.Namespace,
    session: _Session,
    plan: AccountsPlan,
    source_kwargs: dict[str, Any],
) -> int:
    """Each account as its own pipeline and dataset; one block of the summary per account and
    one `error: account NAME: ...` line per failed account. Exit code: 0 when every account
    loaded; 1 when any failed (the others loaded); 2 when none loaded and every failure was
    its configuration."""
    plan = plan.narrowed(args.account_names, source_kwargs)
    shared = {
        k: v for k, v in source_kwargs.items() if k not in ("base_url", "service_sids", "user_sids")
    }
    # One collector for every account, made before the ticker starts, which reads it: progress
    # lines go on from one account to the next.
    collector = session.progress(args.progress)
    with session.watching():
        results = run_accounts(
            plan,
            args.destination,
            args.dataset,
            progress=lambda: collector,
            full_refresh=args.full_refresh,
            source_kwargs=shared,
            lock_timeout=args.lock_timeout,
            foreground=True,
            resources=args.resources,
        )
    session.accounts = plan, results
    if not session.as_json:
        _say(format_accounts_summary(plan, results, session.notes))
    failures = [(r.account.name, _explain(r.error)) for r in results if r.error is not None]
    for name, (_, message) in failures:
        session.error_lines.append(f"account {name}: {message}")
        print(f"error: account {name}: {message}", file=sys.stderr)
    if not failures:
        return EXIT_OK
    if len(failures) == len(results) and all(code == EXIT_USAGE for _, (code, _) in failures):
        return EXIT_USAGE
    return EXIT_FAILED


def format_accounts_summary(
    plan: AccountsPlan,
    results: Sequence[AccountRun],
    notes: Callable[[RunOutcome], Sequence[str]] = lambda outcome: (),
) -> str:
    """The summary of a multi-account run: a totals line, then one block per loaded account
    (the single-account summary, titled by the account's name) or one line per failed one, and
    one line per account discovery skipped."""
    loaded = [r for r in results if r.outcome is not None]
    failed = [r for r in results if r.error is not None]
    skipped = f" · {len(plan.skipped)} skipped (not active)" if plan.skipped else ""
    lines = [
        f"twilio_conversations: {len(results)} account(s): {len(loaded)} loaded · "
        f"{len(failed)} failed{skipped}"
    ]
    for result in results:
        sid = f" ({result.account.account_sid})" if result.account.account_sid else ""
        title = f"account {result.account.name}{sid}"
        if result.outcome is not None:
            lines.append(format_summary(result.outcome, notes(result.outcome), title=title))
        else:
            _, message = _explain(result.error) if result.error else (0, "")
            lines.append(f"{title}: FAILED, nothing loaded for it: {message}")
    for account in plan.skipped:
        lines.append(
            f"account {account.sid} ({account.friendly_name}): skipped, status {account.status}"
        )
    return "\n".join(lines)


def _foreground(pipeline: Any) -> Any:
    """Ctrl-C stops a load at once (jobs in flight still finish): dlt's own handler defers it,
    and drops it altogether when the load ends in the same pass, so the run went on as if
    nothing had been pressed."""
    pipeline.config.runtime.intercept_signals = False
    return pipeline


def _check_command(args: argparse.Namespace, session: _Session) -> int:
    from .setup_check import check_setup

    report = check_setup(
        args.destination,
        args.dataset,
        args.base_url,
        source_kwargs={
            name: getattr(args, name) for name in ("service_sids", "user_sids", "page_size")
        },
        account_names=args.account_names,
        lock_timeout=args.lock_timeout,
    )
    _say(report.text())
    _flush_stdout()
    for message in report.errors:
        session.error_lines.append(message)
        print(f"error: {message}", file=sys.stderr)
    return report.exit_code


def _config_command(args: argparse.Namespace, session: _Session) -> int:
    from .effective_config import effective_settings, format_settings

    _say(format_settings(effective_settings(destination=args.destination)))
    return EXIT_OK


def _demo_command(args: argparse.Namespace, session: _Session) -> int:
    try:  # a distribution of its own, which a deployment of the connector need not install
        from twilio_emulator import DataSpec, EmulatorConfig, run_emulator
    except ImportError as missing:
        raise ConfigurationError(
            "the demo needs the emulator, which is not installed: install the twilio-emulator "
            "wheel beside this one (in a clone of the project, `make demo` does)"
        ) from missing

    from .credentials import TwilioCredentials

    # Several services, a mix of users with none, a few and more than 50 conversations (paging).
    config = EmulatorConfig(data=DataSpec(seed=args.seed, services=3, users=60))
    with run_emulator(config) as emulator:
        _say(f"emulator serving demo data at {emulator.base_url}")
        credentials = TwilioCredentials()
        credentials.account_sid = emulator.account_sid
        credentials.auth_token = emulator.auth_token
        # Locked before the pipeline is made: see `exclusive`.
        with exclusive(DEMO_PIPELINE_NAME):
            pipeline = _foreground(make_demo_pipeline(session.progress(args.progress)))
            # A fresh start each time: the demo's data is the emulator's, not a real account's.
            # Every setting is given, so nothing configured for the real account applies.
            with session.watching():
                outcome = run(
                    pipeline,
                    full_refresh=True,
                    source_kwargs={
                        **DEMO_SETTINGS,
                        "credentials": credentials,
                        "base_url": emulator.base_url,
                    },
                )
    _say(format_summary(outcome, session.notes(outcome)))
    _say(_example_queries(pipeline))
    return EXIT_OK


# The source's defaults, given explicitly: dlt would fill an omitted argument from the real
# pipeline's `[sources.twilio_conversations]` config (an explicit value, None included, is not
# looked up).
DEMO_SETTINGS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(twilio_conversations).parameters.items()
    if name not in ("credentials", "base_url", "run_report", "parts")
}


def format_summary(
    outcome: RunOutcome, notes: Sequence[str] = (), title: str = "twilio_conversations"
) -> str:
    """One screen a scheduler log can keep: what was written, scanned, skipped and retried;
    `notes` are further lines (what dlt warned about, in one line per kind)."""
    report = outcome.report
    rows = " · ".join(f"{table} {count:,}" for table, count in outcome.rows_written.items())
    done = (
        f"loaded into {outcome.destination} dataset {outcome.dataset}"
        if outcome.load_ids
        else f"nothing to write, {outcome.destination} dataset {outcome.dataset} is up to date"
    )
    lines = [f"{title}: {done} in {outcome.elapsed_s:.1f} s", f"  rows written   {rows}"]
    if outcome.rows_deleted:
        lines.append(f"  rows deleted   {_deleted(outcome.rows_deleted)}")
    if report.users_recorded:
        lines.append(
            f"  history        turned on: the current rows of {report.users_recorded:,} "
            "unchanged users recorded as their first versions"
        )
    lines += [
        f"  services       {report.services_scanned} scanned",
        f"  users          {report.users_scanned:,} scanned · {report.users_changed:,} changed · "
        f"{report.users_removed:,} removed · {len(report.skipped):,} skipped",
        f"  conversations  {report.conversation_rows_fetched:,} rows read",
        f"  requests       {report.requests.requests:,} ({report.requests.retries:,} retries)"
        + _per_stream(report.requests.by_stream),
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
    if outcome.views_wait_for:
        missing = ", ".join(outcome.views_wait_for)
        lines.append(f"  views          not refreshed: the dataset has no {missing} table yet")
    if outcome.recovered_packages:
        lines.append(
            f"  recovered      {outcome.recovered_packages} load package(s) left by an earlier"
            " run were loaded first"
        )
    lines.extend(notes)
    for skipped in report.skipped[:10]:
        lines.append(f"  skipped        {skipped.service_sid}/{skipped.user}: {skipped.reason}")
    if len(report.skipped) > 10:
        lines.append(f"  skipped        ... and {len(report.skipped) - 10} more")
    for ref in report.unresolved_users:
        lines.append(f"  not found      user {ref!r} is in no scanned service")
    return "\n".join(lines)


def _per_stream(by_stream: Mapping[str, int]) -> str:
    """`: services 1 · users 2 · user_conversations 29`, in the order the run made them."""
    return ": " + " · ".join(f"{name} {n:,}" for name, n in by_stream.items()) if by_stream else ""


def _deleted(markers: dict[str, int]) -> str:
    """`services 1 · users 80 · user_conversations of 12 users`: a marker in
    `user_conversations` deletes all of one user's rows."""
    return " · ".join(
        f"{table} of {count:,} users" if table == "user_conversations" else f"{table} {count:,}"
        for table, count in markers.items()
    )


def _json_record(session: _Session, code: int, error: str | None, elapsed: float) -> dict[str, Any]:
    """`run --json`: the whole run in one object, whatever its end (schema in
    docs/scheduling.md)."""
    status = {EXIT_OK: "ok", EXIT_INTERRUPTED: "interrupted"}.get(code, "failed")
    record: dict[str, Any] = {"command": "run", "exit_code": code, "status": status}
    record["error"] = error
    record["duration_s"] = round(elapsed, 3)
    if session.accounts is not None:
        plan, results = session.accounts
        record["accounts"] = [_account_record(result) for result in results]
        record["skipped_accounts"] = [
            {"account_sid": a.sid, "friendly_name": a.friendly_name, "status": a.status}
            for a in plan.skipped
        ]
    elif session.outcome is not None:
        record.update(outcome_record(session.outcome))
        record["notes"] = [note.strip() for note in session.notes(session.outcome)]
    elif session.report is not None:  # failed on the way: what it had done
        record.update(_report_record(session.report))
    return record


def _account_record(result: AccountRun) -> dict[str, Any]:
    record: dict[str, Any] = {"account": result.account.name}
    record["account_sid"] = result.account.account_sid
    record["dataset"] = result.dataset
    if result.outcome is not None:
        return {**record, "status": "ok", "error": None, **outcome_record(result.outcome)}
    message = _explain(result.error)[1] if result.error is not None else None
    return {**record, "status": "failed", "error": message}


def outcome_record(outcome: RunOutcome) -> dict[str, Any]:
    """What `format_summary` says, as JSON values."""
    return {
        "loaded": bool(outcome.load_ids),
        "destination": outcome.destination,
        "dataset": outcome.dataset,
        "run_s": round(outcome.elapsed_s, 3),
        "rows_written": outcome.rows_written,
        "rows_deleted": outcome.rows_deleted,
        **_report_record(outcome.report),
        "load_ids": outcome.load_ids,
        "views": outcome.views,
        "views_wait_for": outcome.views_wait_for,
        "recovered_packages": outcome.recovered_packages,
        "waited_for_lock": outcome.waited_for_lock,
    }


def _report_record(report: RunReport) -> dict[str, Any]:
    return {
        "services_scanned": report.services_scanned,
        "users_scanned": report.users_scanned,
        "users_changed": report.users_changed,
        "users_removed": report.users_removed,
        "users_recorded": report.users_recorded,
        "conversation_rows_read": report.conversation_rows_fetched,
        "requests": report.requests.requests,
        "requests_by_stream": dict(report.requests.by_stream),
        "retries": report.requests.retries,
        "skipped": [asdict(skipped) for skipped in report.skipped],
        "users_not_found": list(report.unresolved_users),
    }


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


def _explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (without `error: `) for a run that raised `exc`."""
    unknown = _find(exc, UnknownDestinationModule)
    if unknown is not None:
        return EXIT_USAGE, _unknown_destination(unknown.ref)
    missing = _missing_driver(exc)
    if missing is not None:
        return EXIT_USAGE, missing
    cause = _root_cause(exc)
    configuration = _find(exc, ConfigurationException)
    if not isinstance(cause, TwilioConnectorError) and configuration is not None:
        # dlt's own words, which never show a value that may be a secret (the driver's error
        # below it may quote a connection string whole)
        return EXIT_USAGE, _configuration_line(configuration)
    # A configured service the credentials cannot see is fixed in the configuration, as a
    # malformed one is: retrying cannot help (docs/scheduling.md, "Exit codes").
    usage = isinstance(cause, ConfigurationError | NotFoundError)
    return (EXIT_USAGE if usage else EXIT_FAILED), _one_line(cause)


def _configuration_line(exc: ConfigurationException) -> str:
    """dlt's message in one line, with its cause: the file and line of a TOML error, the
    missing field inside a nested configuration (dlt says them on the lines after the first)."""
    if isinstance(exc, TomlProviderReadException):
        present = [p for p in exc.full_paths if os.path.isfile(p)] or exc.full_paths
        why = " ".join(str(exc).splitlines()[1:]).strip()
        return f"could not read {' or '.join(present)}: {why}"
    said: list[str] = []
    for line in str(exc).strip().split("\n\n")[0].splitlines():
        if line.strip().startswith(("for field", "NOTE")):  # where dlt looked: a screenful
            break
        said.append(line.strip())
    return "; ".join(line for line in said if line)


E = TypeVar("E", bound=BaseException)


def _find(exc: BaseException, kind: type[E]) -> E | None:
    return next((e for e in causes(exc) if isinstance(e, kind)), None)


def _unknown_destination(ref: str) -> str:
    from dlt.common.destination.reference import DestinationReference

    prefix = "dlt.destinations."
    names = sorted(
        name.removeprefix(prefix)
        for name in DestinationReference.DESTINATIONS
        if name.startswith(prefix) and name != f"{prefix}destination"  # the decorator
    )
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"unknown destination {ref!r}{hint}: use one of {', '.join(names)}, or the name of a "
        "destination configured with a destination_type"
    )


# A missing module, or dlt's extra for it -> the connector's extra that installs it.
_EXTRAS = {
    "psycopg2": "postgres",
    "dlt[postgres]": "postgres",
    "s3fs": "filesystem",
    "botocore": "filesystem",
    "dlt[s3]": "filesystem",
    "dlt[filesystem]": "filesystem",
    "deltalake": "filesystem",
    "dlt[deltalake]": "filesystem",
}


def _missing_driver(exc: BaseException) -> str | None:
    """The line for a destination whose driver is not installed: which extra installs it."""
    for error in causes(exc):
        if isinstance(error, MissingDependencyException):
            for dependency in error.dependencies:
                extra = _EXTRAS.get(dependency)
                if extra is not None:
                    return _install_line(error.caller.removesuffix(" destination"), extra)
            wanted = " ".join(f'"{d}"' for d in error.dependencies)
            caller = error.caller.removesuffix(" destination")
            return (
                f"the {caller} destination needs packages that are not installed: "
                f"pip install {wanted}"
            )
        if isinstance(error, ModuleNotFoundError) and error.name:
            extra = _EXTRAS.get(error.name.split(".")[0])
            if extra is not None:
                return _install_line(extra, extra, error.name)
    return None


def _install_line(destination: str, extra: str, module: str | None = None) -> str:
    needs = f"{module}, which is not installed" if module else "packages that are not installed"
    return (
        f"the {destination} destination needs {needs}: pip install 'twilio-conversations[{extra}]'"
    )


def _root_cause(exc: BaseException) -> BaseException:
    """The connector's own error inside dlt's wrappers, else the innermost cause."""
    seen: list[BaseException] = []
    for current in causes(exc):
        if isinstance(current, TwilioConnectorError):
            return current
        seen.append(current)
    if isinstance(exc, PipelineStepFailed | DestinationConnectionError) and seen:
        return seen[-1]
    return exc


# dlt's words in front of the reason, which send the reader to credentials and the network
# whatever the reason was (a DuckDB file held open, a corrupt file).
_PREAMBLES = (
    re.compile(
        r"Connection with `client_type=[^`]*` to `dataset_name=[^`]*` failed\..*?"
        r"The actual reason given is: "
    ),
)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for preamble in _PREAMBLES:
        text = preamble.sub("", text)
    return text.strip().splitlines()[0]


if __name__ == "__main__":
    console_main()
