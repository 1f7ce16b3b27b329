"""Adaptive concurrency: fewer requests in flight while Twilio answers 429, more as it recovers.

Twilio's 429 (error 20429) is an account-wide limit on *concurrent* requests, shared with every
other job on the account and not published. Backing off each request alone keeps the pressure
the same, so the pool as a whole backs off, the way TCP's congestion control does (the shape
of CUBIC, RFC 9438: a multiplicative cut, a quick return towards where the loss came, slow
probing beyond).

The rule:

* **Cut once per burst, to 70 %.** Every slot is handed out with a ticket naming the current
  *generation*; a cut starts a new one. A 429 cuts the limit to `DECREASE` (70 %, CUBIC's
  factor) only if its request was started in the current generation. Requests started before
  the last cut were sent at the old, higher limit: their 429s are the same signal the cut
  already answered, so a burst of N 429s from requests in flight together cuts once, not N
  times. Halving, tried first, left a shared account's room a quarter unused on average
  (docs/architecture.md, "Measurements behind the code").
* **Return quickly, then grow one slot per round.** Below the limit at which the last 429 came,
  minus one, the limit grows by one every `limit // RETURN_SPEED` successes: the account had
  that room a moment ago. From there a round is `limit` successes of requests started in the
  current generation (about one round trip with the pool full) and adds one slot, probing for
  more room. A 429 restarts the round.
* **A wall that has not moved: step back below it, probe it less and less often.** The
  wall is the levels at which 429s came since the last cut, from its lowest to its highest. A
  429 within it, or one slot above it, says the account's room is where it was: the limit goes
  back to one slot below the wall's lowest level, without the cut, and stays there for twice
  as many rounds as the last time (1, 2, 4 … up to `MAX_HOLD`) before probing again. A steady
  wall is so met every few seconds instead of every few round trips, at one 429 a probe, not a
  30 % dip (CUBIC's plateau around the window of its last loss; figures in docs/architecture.md,
  "Measurements behind the code"). The wall is more than a level wide because a slot is held from
  before its request is sent until its body is parsed, longer than the account counts it: a
  round may pass a slot or two above the room, and the first 429 may come above the room's
  edge. So a 429 one slot below the wall, once a round has passed since the last 429, widens
  the wall downwards too. Farther away, or below it with no round passed since the
  last 429 (the room shrinking faster than the limit steps), it is the 70 % cut, and the wall
  starts again at the new 429's level.
* **Only a limit that was used grows.** A round counts, towards growth or towards the wait
  before a probe, only if `limit` requests were in flight at some moment of it (RFC 7661's
  rule for TCP's window): a limit the run did not fill says nothing about the account's room.
  Grown anyway (the pool short of work for a moment, the end of a run), it drifts above a wall
  it never tested, and the next 429 up there costs a 70 % cut instead of one slot.
* **Between 1 and `ceiling`** (`max_workers`), always.
* `Retry-After`, when Twilio sends it, sets the wait of the request that got the 429 (the
  client's backoff); the limit does not use it.

`Twilio-Concurrent-Requests` is not used: it counts the account's requests in flight, but the
account's limit is unpublished and shared with the customer's own traffic, so the number alone
says nothing about headroom; the 429 is the only signal that the limit was reached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DECREASE = 0.7  # the limit after a cut, as a share of the limit before it
RETURN_SPEED = 4  # slots regained per round while below where the last 429 came
MAX_HOLD = 16  # rounds at most just below a level that answered 429 before probing it again


@dataclass(frozen=True)
class Ticket:
    """What a slot remembers of the limit when it was handed out.

    Attributes:
        generation: The number of cuts made before this request was started.
    """

    generation: int


class AdaptiveLimit:
    """A semaphore whose size moves between 1 and `ceiling` (see the module docstring).

    Attributes:
        ceiling: The configured maximum in flight (`max_workers`).
        limit: Requests allowed in flight now.
        lowest: The lowest `limit` so far (the run summary reports it with `ceiling` and `limit`).
        in_flight: Requests holding a slot now.
        generation: Cuts made so far.
    """

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.limit = ceiling
        self.lowest = ceiling
        self.in_flight = 0
        self.generation = 0
        self._successes = 0  # in the current round
        self._first_waiting = 0  # waiters that go first (`slot(first=True)`)
        self._wall = 0  # the lowest limit at which a 429 came since the last cut (0: none yet)
        self._wall_top = 0  # the highest
        self._hold = 0  # rounds to stay just below `_wall` before probing it again
        self._held = 0  # rounds stayed there so far
        self._filled = False  # `limit` requests were in flight at some moment of this round
        self._passed = False  # a round with the pool full ended since the last 429
        # One lock, two queues of waiters: a freed slot wakes one thread that may take it, not
        # every waiting thread for all but one to wait again (docs/architecture.md,
        # "Measurements behind the code").
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)  # ordinary requests
        self._first_condition = threading.Condition(self._lock)  # `slot(first=True)`

    @contextmanager
    def slot(self, first: bool = False) -> Iterator[Ticket]:
        """Hold one of the `limit` slots for the duration of one HTTP attempt.

        Args:
            first: Take the next free slot before any waiter without `first`: the user
                listing's chain of pages is the run's critical path, and a page that waits for
                a slot delays every fetch after it.
        """
        with self._lock:
            if first:
                self._first_waiting += 1
                try:
                    self._first_condition.wait_for(lambda: self.in_flight < self.limit)
                except BaseException:  # e.g. Ctrl-C: the others must not wait for this one
                    self._first_waiting -= 1
                    self._wake()
                    raise
                self._first_waiting -= 1
            else:
                self._condition.wait_for(
                    lambda: self.in_flight < self.limit and not self._first_waiting
                )
            self.in_flight += 1
            self._filled = self._filled or self.in_flight >= self.limit
            ticket = Ticket(self.generation)
            if first:
                self._wake()  # the others may take what is left
        try:
            yield ticket
        finally:
            with self._lock:
                self.in_flight -= 1
                self._wake()

    def _wake(self) -> None:
        """Wake as many waiters as there are free slots, those that go first before the others
        (called with the lock held). A woken thread that finds its slot taken waits again."""
        free = self.limit - self.in_flight
        if free <= 0:
            return
        if self._first_waiting:
            self._first_condition.notify(free)
        else:
            self._condition.notify(free)

    def throttled(self, ticket: Ticket | None = None) -> bool:
        """A 429 for the request holding `ticket`: cut the limit to 70 %, once per burst (back
        below the wall where a probe of the last one failed).

        Args:
            ticket: The slot's ticket; None stands for a request started just now.

        Returns:
            True if this 429 cut the limit; False if it came from a request started before the
            last cut (already answered) or the limit is at one.
        """
        with self._lock:
            if ticket is not None and ticket.generation != self.generation:
                return False
            self._successes = 0
            self._filled = False
            if self.limit == 1:
                return False
            met = self.limit
            within = self._wall <= met <= self._wall_top + 1
            just_below = met == self._wall - 1 and self._passed
            if self._wall and (within or just_below):
                self._wall = min(self._wall, met)
                self._wall_top = max(self._wall_top, met)
                self._hold = min(MAX_HOLD, max(1, 2 * self._hold))
                self.limit = max(1, self._wall - 1)
            else:
                self._wall = self._wall_top = met
                self._hold = 0
                self.limit = max(1, int(met * DECREASE))
            self._held = 0
            self._passed = False
            self.lowest = min(self.lowest, self.limit)
            self.generation += 1
            return True

    def succeeded(self, ticket: Ticket | None = None) -> bool:
        """A success: after a round of `limit` of them in which the pool was full, allow one
        more in flight.

        Args:
            ticket: The slot's ticket; successes of requests started before the last cut do not
                count (they ran at the old limit). None stands for a request started just now.

        Returns:
            True if this success grew the limit.
        """
        with self._lock:
            if self.limit >= self.ceiling:
                return False
            if ticket is not None and ticket.generation != self.generation:
                return False
            self._successes += 1
            # Quickly back to just below where the account answered 429, then probe slowly.
            returning = self.limit < self._wall - 1
            if self._successes < (max(1, self.limit // RETURN_SPEED) if returning else self.limit):
                return False
            self._successes = 0
            filled, self._filled = self._filled, self.in_flight >= self.limit
            if not filled:
                return False  # the round never had `limit` requests in flight: nothing tested
            self._passed = True
            if self.limit == self._wall - 1 and self._held < self._hold:
                self._held += 1  # a round just below a wall that answered 429 more than once
                return False
            self.limit += 1
            self._wake()
            return True
