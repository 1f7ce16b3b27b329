"""Request counters, for tests and benchmarks (requests per route, statuses, concurrency)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StatsSnapshot:
    """A consistent copy of the counters."""

    total: int
    by_status: dict[int, int]
    by_route: dict[str, int]
    by_fault: dict[str, int]
    max_concurrent: int


@dataclass
class Stats:
    """Thread-safe counters; ``in_flight`` also feeds ``Twilio-Concurrent-Requests``."""

    total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_concurrent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self) -> int:
        """A request started; returns the number now in flight (this one included)."""
        with self._lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
            return self.in_flight

    def end(self, route: str, status: int | None, fault: str | None) -> None:
        """A request finished (``status`` None when the connection was dropped)."""
        with self._lock:
            self.in_flight -= 1
            self.total += 1
            self.by_route[route] += 1
            if status is not None:
                self.by_status[status] += 1
            if fault is not None:
                self.by_fault[fault] += 1

    def snapshot(self) -> StatsSnapshot:
        """Copy of the counters."""
        with self._lock:
            return StatsSnapshot(
                self.total,
                dict(self.by_status),
                dict(self.by_route),
                dict(self.by_fault),
                self.max_concurrent,
            )

    def reset(self) -> None:
        """Zero every counter (requests in flight stay counted as in flight)."""
        with self._lock:
            self.total = 0
            self.by_status.clear()
            self.by_route.clear()
            self.by_fault.clear()
            self.max_concurrent = self.in_flight
