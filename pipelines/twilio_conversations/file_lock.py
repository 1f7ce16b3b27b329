"""Wait for a DuckDB file that another process holds open, instead of failing the run.

DuckDB lets one process open a file for writing, and a writer cannot open it at all while another
process holds it, even read-only: a notebook kernel or a `duckdb` shell left open would fail
every scheduled load. So each step of a run that touches the file goes through `FileAccess.call`:
on DuckDB's lock conflict it says once, in one line, which process holds the file, waits until
the file is free (bounded by `lock_timeout`) and tries the step again. Extract and normalize never
open the file, so a run holds it only for the state sync, the load and the views
(docs/destinations.md, "Who holds the DuckDB file").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import DestinationLockedError, causes

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Minutes, not seconds: an analyst's query or a notebook cell should not fail a scheduled run.
DEFAULT_LOCK_TIMEOUT = 600.0
# How often a waiting run looks at the file again (DuckDB has no way to wait for its lock).
POLL_INTERVAL = 0.5

_CONFLICT = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (?P<holder>.+? \(PID \d+\))")


def lock_holder(exc: BaseException) -> str | None:
    """`<program> (PID n)` when `exc` or one of its causes is DuckDB's lock conflict, else None.

    dlt wraps the driver's error and sometimes keeps only its message, so messages are read.
    """
    for current in causes(exc):
        message = str(current)
        if _CONFLICT in message:
            match = _HOLDER.search(message)
            return match.group("holder") if match else "another process"
    return None


def probe(path: str) -> None:
    """Open the file for writing and close it again: raises DuckDB's error while it is held."""
    import duckdb

    duckdb.connect(path).close()


class FileAccess:
    """Runs the steps of one run that open a DuckDB file, waiting while another process holds it.

    Args:
        path: The database file; None for destinations that are not a local DuckDB file (then
            steps simply run).
        timeout: Seconds one run may wait in all before it fails with `DestinationLockedError`.
        clock, sleep, check: Injectable for tests; `check(path)` raises while the file is held.
    """

    def __init__(
        self,
        path: str | None,
        timeout: float = DEFAULT_LOCK_TIMEOUT,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        check: Callable[[str], None] = probe,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._check = check
        self._deadline: float | None = None
        self.waited_for: str | None = None  # the holder announced, if the run had to wait

    def call(self, step: Callable[[], T]) -> T:
        """`step()`, retried after the file is free again whenever it fails on the file's lock."""
        while True:
            try:
                return step()
            except Exception as exc:
                holder = lock_holder(exc) if self.path is not None else None
                if holder is None:
                    raise
                self._wait(holder, exc)

    def _wait(self, holder: str, cause: Exception) -> None:
        assert self.path is not None
        if self._deadline is None:
            self._deadline = self._clock() + self.timeout
        while True:
            if self.waited_for is None:
                self.waited_for = holder
                logger.warning(
                    "%s is held open by %s; waiting up to %.0f s (lock_timeout) for it to close",
                    self.path,
                    holder,
                    self.timeout,
                )
            if self._clock() >= self._deadline:
                raise DestinationLockedError(
                    f"{self.path} is still held open by {holder} after {self.timeout:.0f} s "
                    "(lock_timeout); close it (a notebook kernel, a duckdb shell) and run again: "
                    "what this run extracted is loaded first then"
                ) from cause
            self._sleep(POLL_INTERVAL)
            try:
                self._check(self.path)
            except Exception as exc:
                now_holder = lock_holder(exc)
                if now_holder is None:
                    raise
                holder = now_holder
                continue
            return
