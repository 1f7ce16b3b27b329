"""Seeded, reproducible fault injection.

Every request asks :meth:`FaultController.decide` once, in arrival order, under a lock. Scripted
faults (:meth:`inject`) come first; otherwise, with a rate set, one draw from
``random.Random(seed)`` decides whether this request fails and a second which kind. The same seed
and the same request order therefore give the same faults.

Kinds, and what the client sees:

=================  ====================================================================
``429-retry-after``  429 / 20429 with ``Retry-After`` (seconds)
``429``              429 / 20429 without ``Retry-After`` (Twilio does not promise it)
``503``              503 / 20503
``500``              500 / 20500
``drop``             connection closed without any response
``truncated``        200 whose JSON body is cut in half (Content-Length matches: bad JSON)
``short-body``       200 announcing the full Content-Length, half sent, connection closed
``html-502``         502 ``text/html`` page, as an intermediary proxy would send
``empty-200``        200 with an empty body
``slow``             the normal answer after an extra delay (``slow_ms``)
=================  ====================================================================
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    """The faults the emulator can inject."""

    RATE_LIMIT_RETRY_AFTER = "429-retry-after"
    RATE_LIMIT = "429"
    UNAVAILABLE = "503"
    SERVER_ERROR = "500"
    DROP = "drop"
    TRUNCATED = "truncated"
    SHORT_BODY = "short-body"
    HTML_502 = "html-502"
    EMPTY_200 = "empty-200"
    SLOW = "slow"


DEFAULT_MIX: tuple[FaultKind, ...] = (
    FaultKind.RATE_LIMIT_RETRY_AFTER,
    FaultKind.RATE_LIMIT,
    FaultKind.UNAVAILABLE,
    FaultKind.DROP,
)


@dataclass
class _Script:
    kind: FaultKind
    remaining: int
    path_contains: str | None


class FaultController:
    """Decides, per request, whether and how it fails."""

    def __init__(
        self, seed: int = 0, rate: float = 0.0, kinds: tuple[str, ...] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._rate = 0.0
        self._kinds: tuple[FaultKind, ...] = DEFAULT_MIX
        self._scripts: list[_Script] = []
        #: (request number, path, kind) of every injected fault, most recent 10,000.
        self.history: deque[tuple[int, str, FaultKind]] = deque(maxlen=10_000)
        self._seq = 0
        self.set_rate(rate, kinds)

    @property
    def rate(self) -> float:
        """Current random fault rate."""
        return self._rate

    @property
    def kinds(self) -> tuple[FaultKind, ...]:
        """Current mix used by the random rate."""
        return self._kinds

    def set_rate(self, rate: float, kinds: tuple[str, ...] | list[str] | None = None) -> None:
        """Fail a ``rate`` share (0..1) of requests with kinds drawn from ``kinds``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be within 0..1")
        parsed = DEFAULT_MIX if kinds is None else tuple(FaultKind(k) for k in kinds)
        if not parsed:
            raise ValueError("at least one fault kind is needed")
        with self._lock:
            self._rate, self._kinds = rate, parsed

    def inject(self, kind: str, count: int = 1, path_contains: str | None = None) -> None:
        """Give the next ``count`` requests whose path contains ``path_contains`` this fault."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._scripts.append(_Script(FaultKind(kind), count, path_contains))

    def reset(self, seed: int | None = None) -> None:
        """No faults, empty history, rng re-seeded (with ``seed`` or the original seed)."""
        with self._lock:
            self._seed = self._seed if seed is None else seed
            self._rng = random.Random(self._seed)
            self._rate = 0.0
            self._kinds = DEFAULT_MIX
            self._scripts.clear()
            self.history.clear()
            self._seq = 0

    def pending(self) -> int:
        """Scripted faults not yet delivered."""
        with self._lock:
            return sum(s.remaining for s in self._scripts)

    def decide(self, path: str) -> FaultKind | None:
        """The fault for this request (called once per request, in arrival order)."""
        with self._lock:
            self._seq += 1
            kind: FaultKind | None = None
            for script in self._scripts:
                if script.path_contains is None or script.path_contains in path:
                    kind = script.kind
                    script.remaining -= 1
                    if script.remaining == 0:
                        self._scripts.remove(script)
                    break
            if kind is None and self._rate > 0.0 and self._rng.random() < self._rate:
                kind = self._kinds[self._rng.randrange(len(self._kinds))]
            if kind is not None:
                self.history.append((self._seq, path, kind))
            return kind
