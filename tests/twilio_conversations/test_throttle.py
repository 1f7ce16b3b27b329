"""Adaptive concurrency: the pool shrinks on 429s and grows back as requests succeed."""

from __future__ import annotations

import threading
import time

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


def test_slots_bound_requests_in_flight() -> None:
    limit = AdaptiveLimit(8)
    limit.throttled()  # now 4
    peak, in_flight, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal peak, in_flight
        with limit.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.01)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=work) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 4
