"""Request counters, for tests and benchmarks (requests per route, statuses, concurrency), and
the admission decision of the account-wide concurrency limit (see :meth:`Stats.admit`)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StatsSnapshot:
    """A consistent copy of the counters.

    ``max_concurrent`` is the most requests the emulator was handling at once, whatever their
    outcome (429s of the account limit included). ``peak_in_flight`` is the account's view: the
    most requests being *served* at once for the account, the other-traffic share included (never
    above the limit when one is set). ``account_limit_429s`` counts the 429s of the account limit;
    injected 429s are in ``by_fault`` instead (both are in ``by_status[429]``).
    """

    total: int
    by_status: dict[int, int]
    by_route: dict[str, int]
    by_fault: dict[str, int]
    max_concurrent: int
    peak_in_flight: int = 0
    account_limit_429s: int = 0


@dataclass
class Stats:
    """Thread-safe counters; :meth:`admit` also feeds ``Twilio-Concurrent-Requests``."""

    total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    #: Requests the emulator is handling now (rejected ones included, for their short life).
    in_flight: int = 0
    max_concurrent: int = 0
    #: Requests of this client being served for the account now (admitted, not yet answered).
    account_in_flight: int = 0
    peak_in_flight: int = 0
    account_limit_429s: int = 0
    _other_traffic: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._finished = threading.Condition(self._lock)  # notified as each request ends

    def begin(self) -> int:
        """A request started; returns the number now being handled (this one included)."""
        with self._lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
            return self.in_flight

    def admit(self, limit: int | None, other_traffic: int = 0) -> tuple[bool, int]:
        """Take one of the account's ``limit`` slots (``None``: no limit), ``other_traffic`` of
        which the account's other clients hold. Returns (admitted, the account's requests in
        flight including this one and the other traffic): the ``Twilio-Concurrent-Requests``
        value. An admitted request keeps its slot until :meth:`release`; a rejected one takes
        none (Twilio did not process it) and is counted in ``account_limit_429s``."""
        with self._lock:
            self._other_traffic = other_traffic
            in_flight = self.account_in_flight + other_traffic + 1
            if limit is not None and in_flight > limit:
                self.account_limit_429s += 1
                return False, in_flight
            self.account_in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, in_flight)
            return True, in_flight

    def release(self) -> None:
        """An admitted request was answered (or dropped): its account slot is free again."""
        with self._lock:
            self.account_in_flight -= 1

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
            self._finished.notify_all()

    def wait_for(self, done: Callable[[StatsSnapshot], bool], timeout: float = 30.0) -> bool:
        """Block until ``done(snapshot)`` holds after some request ended (or already holds);
        False after ``timeout`` s. For tests that wait for the client to reach a point."""
        with self._finished:
            return self._finished.wait_for(lambda: done(self._snapshot()), timeout)

    def snapshot(self) -> StatsSnapshot:
        """Copy of the counters."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            self.total,
            dict(self.by_status),
            dict(self.by_route),
            dict(self.by_fault),
            self.max_concurrent,
            self.peak_in_flight,
            self.account_limit_429s,
        )

    def reset(self) -> None:
        """Zero every counter (requests in flight stay counted as in flight)."""
        with self._lock:
            self.total = 0
            self.by_status.clear()
            self.by_route.clear()
            self.by_fault.clear()
            self.max_concurrent = self.in_flight
            self.account_limit_429s = 0
            self.peak_in_flight = (
                self.account_in_flight + self._other_traffic if self.account_in_flight else 0
            )
