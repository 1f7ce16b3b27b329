"""A test hook that holds admitted requests in flight: :class:`RequestGate`.

Tests of the account concurrency limit need requests that are *in flight* at a known moment,
without sleeping for synchronisation. Set ``Emulator.gate = RequestGate()`` and every request the
account limit admits stops at :meth:`RequestGate.hold` (after the fault decision, before the
latency and the handling) while it keeps its account slot; requests the limit rejects never reach
it. The test waits for the arrivals it expects (:meth:`wait_for_arrivals`), does its checks, and
calls :meth:`open`. ``Emulator.stop()`` opens it too, so no request stays held. The default is no
gate (``Emulator.gate = None``), which costs nothing. ``RequestGate(holds=...)`` holds only the
requests whose path it accepts (say, some users' conversation lists); the others pass uncounted.

    gate = emu.gate = RequestGate()
    ... start 3 requests in threads ...
    assert gate.wait_for_arrivals(3)      # all 3 now hold an account slot
    ... a 4th request gets 429 at once ...
    gate.open()
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class RequestGate:
    """Closed (holding) until :meth:`open`, unless created with ``open=True`` (counting only)."""

    def __init__(
        self,
        open: bool = False,  # noqa: A002 (reads naturally at call sites)
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self._open = open
        self._holds = holds
        #: Requests that reached the gate so far.
        self.arrivals = 0
        #: Requests waiting at the gate now.
        self.held = 0

    def hold(self, path: str = "") -> None:
        """Called by the server for each admitted request (its path without the query): count
        it and wait while closed, unless `holds` leaves it out."""
        if self._holds is not None and not self._holds(path):
            return
        with self._cond:
            self.arrivals += 1
            self.held += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._open)
            finally:
                self.held -= 1

    def wait_for_arrivals(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` requests have reached the gate; False after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self.arrivals >= count, timeout)

    def open(self) -> None:
        """Let every held request (and every later one) through."""
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def close(self) -> None:
        """Hold the requests that arrive from now on."""
        with self._cond:
            self._open = False
