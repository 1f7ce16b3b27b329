"""What a run shows while it goes, for a terminal or a log file: one line every `INTERVAL_S`
seconds, one line when a retry makes it wait long, and dlt's own warnings turned into one line.

dlt's `LogCollector` writes only when a resource yields, so the usual scheduled run (an
unchanged account, nothing yielded) showed nothing for minutes; the ticker here reads the
connector's own counters (`RunReport`) on a clock instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from dlt.common.runtime.collector_base import Collector

from .report import RunReport

# docs/scheduling.md promises a line every 10 s; tests set these module constants.
INTERVAL_S = 10.0
# Shorter waits are routine backoff that the next progress line shows as a retry count.
ANNOUNCE_WAIT_S = 5.0

RETRY_LOGGER = "twilio_conversations.client"

# dlt's counter names that are not tables.
_NOT_TABLES = frozenset({"Resources", "Files", "Items", "Jobs"})


class StepCounter(Collector):
    """A dlt progress collector that only counts (rows per table, load jobs) and remembers the
    step dlt is in; the ticker reads it. Thread-safe: dlt updates it from its worker threads."""

    def __init__(self) -> None:
        self.step: str = ""
        self.current = ""  # "extract", "normalize" or "load"; "" before dlt's first step
        self.completed = False  # whether the current step ended without an error
        # Set on Ctrl-C: DuckDB turns the KeyboardInterrupt into an InterruptException, which
        # code catching Exception may swallow, so the next step of dlt's raises it again.
        self.interrupt_requested = False
        # Loads completed after this run's first extract: the parts of a run loaded in parts
        # (`users_per_load`); a load before it finishes what an earlier run left.
        self.parts_loaded = 0
        self._extract_started = False
        self.extracted_rows = 0
        self.jobs_done = 0
        self.jobs_total = 0
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def update(
        self,
        name: str,
        inc: int = 1,
        total: int | None = None,
        inc_total: int | None = None,
        message: str | None = None,
        label: str | None = None,
    ) -> None:
        with self._lock:
            if name == "Jobs" and not label:
                self.jobs_done += inc
                if total is not None:
                    self.jobs_total = total
                if inc_total is not None:
                    self.jobs_total += inc_total
            elif not label and name not in _NOT_TABLES and not name.startswith("_dlt"):
                self._counts[name] += inc

    def _start(self, step: str) -> None:
        if self.interrupt_requested:
            raise KeyboardInterrupt
        with self._lock:
            self.current = step.split(" ", 1)[0].lower()
            self.completed = False
            self._extract_started = self._extract_started or self.current == "extract"
            self._counts = defaultdict(int)
            self.jobs_done = self.jobs_total = 0

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        super().__exit__(exc_type, exc_val, exc_tb)
        self.completed = exc_type is None
        if self.completed and self.current == "load" and self._extract_started:
            self.parts_loaded += 1

    def _stop(self) -> None:
        with self._lock:
            if self.current == "extract":
                # the connector's own tables (`_fingerprints`) are bookkeeping, not data
                self.extracted_rows += sum(
                    n for table, n in self._counts.items() if not table.startswith("_")
                )
            self._counts = defaultdict(int)

    @property
    def part(self) -> int | None:
        """The part of this run being extracted, normalized or loaded (1, 2, ...); None before
        the run's first extract (a load then finishes what an earlier run left)."""
        return self.parts_loaded + 1 if self._extract_started else None

    def rows(self) -> int:
        """Data rows extracted so far (what the run will write)."""
        with self._lock:
            live = self._counts if self.current == "extract" else {}
            return self.extracted_rows + sum(
                n for table, n in live.items() if not table.startswith("_")
            )


def progress_line(report: RunReport | None, steps: StepCounter | None, elapsed_s: float) -> str:
    """One line of what the run has done so far."""
    step = steps.current if steps is not None and steps.current else "starting"
    if steps is not None and steps.part is not None:
        step = f"part {steps.part}: {step}"  # a run loaded in parts extracts again after a load
    if report is None:  # the runner has not made its report yet
        return f"progress {elapsed_s:.0f} s  {step}"
    users = f"users {report.users_scanned:,} scanned"
    # The users the destination held after the last run: a guess (the lists carry no totals),
    # shown only while it can still be right.
    if report.users_known is not None and report.users_scanned <= report.users_known:
        users += f" of ~{report.users_known:,}"
    parts = [f"progress {elapsed_s:.0f} s  {step}", f"{users}, {report.users_changed:,} changed"]
    if steps is not None:
        parts.append(f"{steps.rows():,} rows to write")
        if steps.current == "load" and steps.jobs_total:
            parts.append(f"load jobs {steps.jobs_done} of {steps.jobs_total}")
    stats = report.requests
    responses, retries = stats.requests, stats.retries
    reasons = Counter(dict(stats.retry_reasons))  # dict() copies in one step under the GIL
    requests = f"{responses:,} requests, {retries:,} retries"
    if reasons:
        requests += " (" + ", ".join(f"{n:,} x {why}" for why, n in reasons.most_common()) + ")"
    parts.append(requests)
    limit = report.concurrency
    if limit is not None and limit.lowest < limit.ceiling:
        parts.append(f"429s cut parallel requests to {limit.limit} of {limit.ceiling}")
    return " · ".join(parts)


class Output:
    """Whole lines to one stream from several threads, each flushed at once (so a log file
    keeps them in order with the stderr lines around them). A closed pipe silences it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def line(self, text: str) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
            except BrokenPipeError:
                self.closed = True
                silence(self._stream)
            except ValueError:  # the stream was closed
                self.closed = True


def silence(stream: TextIO) -> None:
    """Point a stream whose reader went away (`| head`) at /dev/null, so that neither later
    writes nor the flush at exit raise BrokenPipeError again."""
    try:
        fileno = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


class Ticker:
    """A daemon thread writing `progress_line` every `interval` seconds until `stop`; `report`
    returns the run's report once the runner has made it."""

    def __init__(
        self,
        report: Callable[[], RunReport | None],
        steps: StepCounter | None,
        output: Output,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._steps = steps
        self._output = output
        self._interval = INTERVAL_S if interval is None else interval
        self._clock = clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = self._clock()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            line = progress_line(self._report(), self._steps, self._clock() - self._started)
            self._output.line(line)


class RetryAnnouncer(logging.Handler):
    """Writes the client's retry log line when the wait is at least `ANNOUNCE_WAIT_S`, once per
    reason (a refused connection, 429, 503): the progress lines count the retries after it."""

    def __init__(self, output: Output, threshold: float | None = None) -> None:
        super().__init__(logging.DEBUG)
        self._output = output
        self._threshold = ANNOUNCE_WAIT_S if threshold is None else threshold
        self._announced: set[str] = set()
        self._seen_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        wait = getattr(record, "retry_wait_s", None)
        reason = str(getattr(record, "retry_reason", ""))
        if not isinstance(wait, float) or wait < self._threshold:
            return
        with self._seen_lock:
            if reason in self._announced:
                return
            self._announced.add(reason)
        self._output.line(record.getMessage())


# -- dlt's warnings ---------------------------------------------------------------------------

_FALLBACK_TO_APPEND = re.compile(r"Falling back to `append` on `(?P<table>[^`]+)`")
# Expected consequences of what the user chose (another destination than last time, a
# destination without merge): the fallback line below says what matters.
_EXPECTED = (
    re.compile(r"in state differs from destination .* and will be ignored"),
    re.compile(r'"hard_delete" column hint .* will be ignored'),
)
_QUOTED = re.compile(r"`[^`]*`|\"[^\"]*\"|'[^']*'")


class DltWarnings(logging.Handler):
    """Collects dlt's log records instead of letting dlt print them in its raw format, so a
    run's stderr holds only the connector's own lines; `summary_lines` says what matters."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        self._records_lock = threading.Lock()
        self._verbose = logging.StreamHandler(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger("dlt").getEffectiveLevel() < logging.WARNING:
            # RUNTIME__LOG_LEVEL asked for dlt's own logs: they go out as dlt writes them
            self._verbose.handle(record)
            return
        if record.levelno < logging.WARNING:
            return
        with self._records_lock:
            if len(self.records) < 1000:
                self.records.append(record)

    def setFormatter(self, fmt: Any) -> None:  # noqa: N802 (logging's name)
        """dlt sets its format on the handler it finds: it is used for dlt's verbose logs."""
        self._verbose.setFormatter(fmt)

    def summary_lines(self, destination: str) -> list[str]:
        """One summary line per kind of warning (tables named once), none for expected ones."""
        appended: list[str] = []
        others: dict[str, tuple[str, int]] = {}
        with self._records_lock:
            records = list(self.records)
        for record in records:
            message = record.getMessage().strip()
            fallback = _FALLBACK_TO_APPEND.search(message)
            if fallback:
                # the connector's bookkeeping tables (`_fingerprints`) are no reader's concern
                if not fallback.group("table").startswith("_") and (
                    fallback.group("table") not in appended
                ):
                    appended.append(fallback.group("table"))
                continue
            if any(pattern.search(message) for pattern in _EXPECTED):
                continue
            key = _QUOTED.sub("…", message)
            first, count = others.get(key, (message.splitlines()[0], 0))
            others[key] = (first, count + 1)
        lines = []
        if appended:
            lines.append(
                f"  appended       {', '.join(sorted(appended))}: {destination} cannot merge, "
                "changed rows are added (docs/destinations.md)"
            )
        for first, count in others.values():
            more = f" (and {count - 1} like it)" if count > 1 else ""
            lines.append(f"  dlt warning    {first}{more}")
        return lines


@contextmanager
def dlt_warnings_captured() -> Iterator[DltWarnings]:
    """Make a collector the only handler of dlt's logger while the block runs (dlt keeps the
    handler it finds when it sets up logging); dlt's own handlers come back afterwards."""
    dlt_logger = logging.getLogger("dlt")
    handler = DltWarnings()
    saved = list(dlt_logger.handlers), dlt_logger.propagate
    for existing in saved[0]:
        dlt_logger.removeHandler(existing)
    dlt_logger.addHandler(handler)
    dlt_logger.propagate = False
    try:
        yield handler
    finally:
        dlt_logger.removeHandler(handler)
        for existing in saved[0]:
            dlt_logger.addHandler(existing)
        dlt_logger.propagate = saved[1]
