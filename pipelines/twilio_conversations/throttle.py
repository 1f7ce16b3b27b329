"""Adaptive concurrency: fewer requests in flight while Twilio answers 429, more as it recovers.

Twilio's 429 (error 20429) is an account-wide limit on *concurrent* requests, shared with every
other job on the account and not published. Backing off each request alone keeps the pressure
the same; halving the number in flight on a 429 and growing it back by one after a run of
successes (AIMD, as TCP does) finds what the account can take right now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class AdaptiveLimit:
    """A semaphore whose size moves between 1 and `ceiling`.

    Args:
        ceiling: The configured maximum in flight (`max_workers`).
        recover_after: Successes needed at the current limit before it grows by one.
    """

    def __init__(self, ceiling: int, recover_after: int = 20) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.lowest = ceiling
        self.in_flight = 0
        self._recover_after = recover_after
        self._successes = 0
        self._condition = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `limit` slots for the duration of one HTTP attempt."""
        with self._condition:
            self._condition.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            yield
        finally:
            with self._condition:
                self.in_flight -= 1
                self._condition.notify_all()

    def throttled(self) -> None:
        """A 429: halve the limit (at most once per burst of answers at the old limit)."""
        with self._condition:
            self._successes = 0
            if self.limit > 1:
                self.limit = max(1, self.limit // 2)
                self.lowest = min(self.lowest, self.limit)

    def succeeded(self) -> None:
        """A success: after `recover_after` of them at this limit, allow one more in flight."""
        with self._condition:
            if self.limit >= self.ceiling:
                return
            self._successes += 1
            if self._successes >= self._recover_after:
                self._successes = 0
                self.limit += 1
                self._condition.notify_all()
