"""A test hook that holds admitted requests in flight: :class:`RequestGate`.

Tests of the account concurrency limit need requests that are *in flight* at a known moment,
without sleeping for synchronisation. Set ``Emulator.gate = RequestGate()`` and every request the
account limit admits stops at :meth:`RequestGate.hold` (after the fault decision, before the
latency and the handling) while it keeps its account slot; requests the limit rejects never reach
it. The test waits for the arrivals it expects (:meth:`wait_for_arrivals`), does its checks, and
calls :meth:`open`. ``Emulator.stop()`` opens it too, so no request stays held. The default is no
gate (``Emulator.gate = None``), which costs nothing.

    gate = emu.gate = RequestGate()
    ... start 3 requests in threads ...
    assert gate.wait_for_arrivals(3)      # all 3 now hold an account slot
    ... a 4th request gets 429 at once ...
    gate.open()
"""

from __future__ import annotations

import threading


class RequestGate:
    """Closed (holding) until :meth:`open`, unless created with ``open=True`` (counting only)."""

    def __init__(self, open: bool = False) -> None:  # noqa: A002 (reads naturally at call sites)
        self._cond = threading.Condition()
        self._open = open
        #: Requests that reached the gate so far.
        self.arrivals = 0
        #: Requests waiting at the gate now.
        self.held = 0

    def hold(self) -> None:
        """Called by the server for each admitted request: count it, wait while closed."""
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
