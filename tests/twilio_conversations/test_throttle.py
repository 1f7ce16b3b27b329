"""Adaptive concurrency: the pool shrinks on 429s and grows back as requests succeed."""

from __future__ import annotations

import queue
import threading

from twilio_conversations.throttle import AdaptiveLimit


def test_halves_on_429_and_recovers_one_step_per_success_run() -> None:
    limit = AdaptiveLimit(16, recover_after=3)
    limit.throttled()
    limit.throttled()
    assert (limit.limit, limit.lowest) == (4, 4)
    for _ in range(3):
        limit.succeeded()
    assert limit.limit == 5
    for _ in range(3 * 20):
        limit.succeeded()
    assert limit.limit == 16, "never above the configured ceiling"
    for _ in range(10):
        limit.throttled()
    assert limit.limit == 1, "never below one"


class _ObservedCondition(threading.Condition):
    """A condition that reports each thread about to block in `wait` (lock still held)."""

    def __init__(self, events: queue.Queue[str]) -> None:
        super().__init__()
        self.events = events

    def wait(self, timeout: float | None = None) -> bool:
        self.events.put("waiting")
        return super().wait(timeout)


def test_slots_bound_requests_in_flight() -> None:
    """Exactly `limit` threads get inside at once, and one more waits until one of them leaves.

    No timing: a barrier proves four are inside together; the fifth thread reports either that
    it blocked in the condition's `wait` (bound kept) or that it got in (bound broken).
    """
    limit = AdaptiveLimit(8)
    limit.throttled()  # now 4
    events: queue.Queue[str] = queue.Queue()
    limit._condition = _ObservedCondition(events)
    guard = 60  # seconds: only so that a broken bound fails instead of hanging
    inside = threading.Barrier(limit.limit + 1)  # the four holders and this thread
    leave = [threading.Event() for _ in range(limit.limit + 1)]

    errors: list[BaseException] = []

    def hold(i: int) -> None:
        try:
            with limit.slot():
                if i < limit.limit:
                    inside.wait(guard)
                else:
                    events.put("entered")
                assert leave[i].wait(guard)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(limit.limit)]
    all_inside = False
    try:
        for t in threads:
            t.start()
        inside.wait(guard)  # all four hold a slot at the same time
        all_inside = True
        assert limit.in_flight == 4
        assert events.empty(), "none of the first four had to wait"

        fifth = threading.Thread(target=hold, args=(limit.limit,))
        fifth.start()
        threads.append(fifth)
        assert events.get(timeout=guard) == "waiting", "a fifth request got a slot of four"
        assert limit.in_flight == 4

        leave[0].set()  # one holder leaves: now the fifth gets in
        while (event := events.get(timeout=guard)) == "waiting":
            pass  # woken while the slot was not free yet
        assert event == "entered"
        assert limit.in_flight == 4
    finally:
        for e in leave:
            e.set()
        if not all_inside:
            inside.abort()  # frees holders stuck at the barrier when the test failed early
        for t in threads:
            t.join(guard)
    assert not errors, errors
    assert limit.in_flight == 0
