"""What one run did, for the summary a scheduler log shows."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from .client import RequestStats
from .throttle import AdaptiveLimit


@dataclass
class SkippedUser:
    service_sid: str
    user: str
    reason: str


@dataclass
class RunReport:
    """Counters filled by the resources while they run; read after `pipeline.run`."""

    requests: RequestStats = field(default_factory=RequestStats)
    services_scanned: int = 0
    users_scanned: int = 0
    users_changed: int = 0
    users_removed: int = 0
    # History turned on for a dataset that already mirrors the API: the users whose unchanged
    # rows were written as their first history versions.
    users_recorded: int = 0
    # Deletion markers written, per table: a removed service or user, or a user whose
    # conversations are all gone (one marker deletes that user's rows).
    rows_deleted: Counter[str] = field(default_factory=Counter)
    conversation_rows_fetched: int = 0
    skipped: list[SkippedUser] = field(default_factory=list)
    unresolved_users: list[str] = field(default_factory=list)
    concurrency: AdaptiveLimit | None = None
    # The most listed users held in memory at once (a listing lets go of what its readers took).
    users_held_peak: int = 0
    # How many users the scan is expected to reach, where something knows (progress lines say
    # "of N"); None: Twilio's lists carry no total.
    users_known: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _watchers: ClassVar[list[Callable[[RunReport], None]]] = []

    def __post_init__(self) -> None:
        for watcher in list(RunReport._watchers):
            watcher(self)

    @classmethod
    @contextmanager
    def watch(cls, callback: Callable[[RunReport], None]) -> Iterator[None]:
        """Call `callback` with each report made inside the block, as soon as it exists: the
        CLI reads a run's counters while the run goes (the runner makes the report itself)."""
        cls._watchers.append(callback)
        try:
            yield
        finally:
            cls._watchers.remove(callback)

    def skip(self, service_sid: str, user: str, reason: str) -> None:
        with self._lock:
            self.skipped.append(SkippedUser(service_sid, user, reason))
