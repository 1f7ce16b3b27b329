"""Adaptive concurrency: the pool shrinks to 70 % once per burst of 429s, returns quickly to just
below where the 429 came, then grows one slot per round of successes with the pool full; a wall
that has not moved costs one slot and is probed less and less often. Driven directly (no HTTP);
threads only where being in flight together matters."""

from __future__ import annotations

import queue
import random
import statistics
import threading
from contextlib import ExitStack

import pytest
from twilio_conversations.cli import format_summary
from twilio_conversations.report import RunReport
from twilio_conversations.runner import RunOutcome
from twilio_conversations.throttle import MAX_HOLD, AdaptiveLimit, Ticket


def hold(stack: ExitStack, limit: AdaptiveLimit, n: int) -> list[Ticket]:
    """`n` slots taken in this thread, released when `stack` closes (no threads needed)."""
    assert limit.in_flight + n <= limit.limit, "would block"
    return [stack.enter_context(limit.slot()) for _ in range(n)]


def full(limit: AdaptiveLimit) -> bool:
    """One success of a request sent with the pool full (this thread holds the other slots):
    what `succeeded` returns."""
    with ExitStack() as stack:
        tickets = hold(stack, limit, limit.limit - limit.in_flight)
        return limit.succeeded(tickets[-1])


def test_a_burst_of_429s_from_requests_in_flight_together_cuts_once() -> None:
    limit = AdaptiveLimit(16)
    with ExitStack() as stack:
        burst = hold(stack, limit, 16)  # all sent at the old limit
        assert [limit.throttled(t) for t in burst] == [True] + [False] * 15
        assert (limit.limit, limit.lowest, limit.generation) == (11, 11, 1)  # 70 % of 16
        assert limit.in_flight == 16  # the cut lets nobody in until enough have left
    with ExitStack() as stack:
        second = hold(stack, limit, 11)  # sent after the cut: a new signal
        assert [limit.throttled(t) for t in second] == [True] + [False] * 10
    assert (limit.limit, limit.lowest, limit.generation) == (7, 7, 2)


def test_a_429_from_before_the_cut_is_ignored_even_after_the_limit_grew() -> None:
    limit = AdaptiveLimit(8)
    with ExitStack() as old:
        stale = hold(old, limit, 2)
        assert limit.throttled(stale[0])  # 8 -> 5
        old.close()
        full(limit)
        full(limit)
        assert limit.limit == 7  # grown, still the same generation
        assert not limit.throttled(stale[1])
        assert limit.limit == 7


def test_recovery_returns_quickly_below_the_429_then_grows_one_slot_per_round() -> None:
    """The account answered 429 at 40 in flight: 70 % of it (28) at once, then one slot per
    quarter round back to 39, just below where the 429 came; from there one slot per round of
    `limit` successes (about one round trip of a full pool), probing for room."""
    limit = AdaptiveLimit(64)
    limit.limit = 40  # where an account shared with other traffic has room for 40
    limit.throttled()
    assert limit.limit == 28
    grown_after: list[int] = []
    successes = 0
    while limit.limit < 42:
        successes += 1
        if full(limit):
            grown_after.append(successes)
    steps = [b - a for a, b in zip([0, *grown_after], grown_after, strict=False)]
    # 28 -> 39: limit // 4 successes per slot (7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9)
    assert steps[:11] == [n // 4 for n in range(28, 39)]
    # 39 -> 40 -> 41 -> 42: a round of `limit` successes per slot
    assert steps[11:] == [39, 40, 41]


def rounds_just_below(limit: AdaptiveLimit, wall: int) -> int:
    """Feed successes until the limit grows back to `wall`; the rounds (of `limit` successes)
    it stayed at `wall - 1`."""
    below = 0
    while limit.limit < wall:
        at = limit.limit
        full(limit)
        below += at == wall - 1
    assert below % (wall - 1) == 0
    return below // (wall - 1)


def test_a_wall_that_has_not_moved_costs_one_slot_and_is_probed_less_and_less_often() -> None:
    """The account has room for 40 of our requests (the customer's app holds the rest). The first
    429, at 41, cuts to 70 %; every later probe that meets the same wall steps back one slot,
    with no cut, and waits twice as many rounds as the last time before it probes again (up to
    MAX_HOLD). A second 429 before a round has passed at the new level means the room is
    shrinking: the 70 % cut again, and the count starts over."""
    limit = AdaptiveLimit(64)
    limit.limit = 41
    assert limit.throttled()
    assert limit.limit == 28
    rounds = [rounds_just_below(limit, 41)]
    for _ in range(6):
        assert limit.throttled()  # the probe at 41 meets the wall again
        assert limit.limit == 40, "a probe of an unmoved wall steps back one slot, no cut"
        rounds.append(rounds_just_below(limit, 41))
    assert rounds == [1, 2, 3, 5, 9, 17, MAX_HOLD + 1]
    assert limit.lowest == 28

    limit.throttled()  # the next probe at 41 meets the wall: one slot back
    assert limit.limit == 40
    limit.throttled()  # at 40 before a round passed there: the customer's traffic grew
    assert limit.limit == 28
    assert rounds_just_below(limit, 40) == 1, "a new wall is probed after one round again"


def test_a_429_one_slot_above_the_wall_is_the_same_wall() -> None:
    """A slot is held longer than the account counts its request, so a round can pass one slot
    above the wall (seen on a busy machine): the 429 there goes back below the wall, no cut. Two
    slots above, the room grew and the 429 is a new wall's: the 70 % cut."""
    limit = AdaptiveLimit(64)
    limit.limit = 41
    limit.throttled()  # the wall at 41: cut to 28
    rounds_just_below(limit, 41)
    limit.limit = 42  # a round at 41 passed
    assert limit.throttled()
    assert limit.limit == 40, "one slot above the wall: back below the wall"
    limit.limit = 43  # a round passed at 42 too: the wall is 41-42, one above it is the same
    assert limit.throttled()
    assert limit.limit == 40
    limit.limit = 45
    assert limit.throttled()
    assert limit.limit == 31, "two slots above the wall: a new wall, the 70 % cut"


def test_a_429_one_slot_below_the_wall_after_a_round_there_is_the_same_wall() -> None:
    """The first wall can be found a slot high (a round passed at the room's edge, the 429 came
    one above): a 429 at the level just below it, once a round has passed there, steps back one
    slot like any probe of the same wall (seen in CI: 7 -> 4 after a step at 8 had moved the
    wall up). Two slots below, the room shrank: the 70 % cut."""
    limit = AdaptiveLimit(64)
    limit.limit = 42
    limit.throttled()  # the wall found at 42: cut to 29
    rounds_just_below(limit, 42)  # back to 41, a round held there, probing 42
    limit.limit = 41
    assert limit.throttled()
    assert limit.limit == 40, "one slot below the wall after a round: one slot back"
    limit.limit = 42
    assert limit.throttled()
    assert limit.limit == 40, "the wall is now 41-42"
    limit.limit = 40
    assert limit.throttled()
    assert limit.limit == 28, "below the wall with no round since the last 429: the 70 % cut"
    rounds_just_below(limit, 40)
    limit.limit = 38
    assert limit.throttled()
    assert limit.limit == 26, "two slots below the last wall: the room shrank, the 70 % cut"


def test_recovery_grows_one_slot_per_round_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(8)
    limit.throttled()
    limit.throttled()
    assert limit.limit == 3  # 8 -> 5 -> 3; the last 429 came at 5
    grown_after: list[int] = []
    successes = 0
    while limit.limit < limit.ceiling:
        successes += 1
        if full(limit):
            grown_after.append(successes)
    # back to 4 at once (3 // 4 rounds up to one success), then 4, 5, 6, 7 successes a slot
    assert grown_after == [1, 5, 10, 16, 23]
    assert limit.limit == 8
    assert not limit.succeeded(), "never above the configured ceiling"
    assert limit.limit == 8


def test_a_429_restarts_the_round_and_stale_successes_do_not_count() -> None:
    limit = AdaptiveLimit(40)
    with ExitStack() as stack:
        stale = hold(stack, limit, 40)
        limit.throttled(stale[0])  # 40 -> 28, generation 1
        for ticket in stale[1:]:
            assert not limit.succeeded(ticket)  # ran at the old limit
    assert limit.limit == 28
    for _ in range(3):
        full(limit)  # 28 // 4 = 7 needed
    assert limit.limit == 28
    with limit.slot() as ticket:
        assert ticket.generation == 1
        assert limit.throttled(ticket)  # sent at the current limit: 28 -> 19, 3 successes dropped
    assert limit.limit == 19
    for _ in range(3):
        full(limit)  # 19 // 4 = 4 needed: kept, the 3 before would have made 6
    assert limit.limit == 19, "the round started again after the 429"
    full(limit)
    assert limit.limit == 20


def test_never_below_one() -> None:
    limit = AdaptiveLimit(4)
    cuts = [limit.throttled() for _ in range(5)]
    assert cuts == [True, True, False, False, False]
    assert (limit.limit, limit.lowest, limit.ceiling) == (1, 1, 4)
    assert full(limit) and limit.limit == 2  # one success is a round at one


def test_only_a_limit_that_was_used_grows() -> None:
    """Successes of requests that never had `limit` in flight together test nothing about the
    account's room: they neither grow the limit nor count towards the wait before a probe."""
    limit = AdaptiveLimit(8)
    limit.throttled()
    assert limit.limit == 5  # the return to 7 takes one success a slot, with the pool full
    for _ in range(20):
        with ExitStack() as stack:
            ticket = hold(stack, limit, 2)[-1]  # two in flight of five
            assert not limit.succeeded(ticket)
    assert limit.limit == 5
    assert full(limit) and limit.limit == 6
    # On a plateau: a wall met twice at 7 waits a round at 6 before the next probe. Rounds that
    # never fill the pool do not count towards that wait.
    limit = AdaptiveLimit(8)
    limit.limit = 7
    limit.throttled()  # the wall at 7, once: 70 %
    assert rounds_just_below(limit, 7) == 1
    assert limit.throttled() and limit.limit == 6  # the same wall: a round's wait from now on
    for _ in range(30):
        with ExitStack() as stack:
            ticket = hold(stack, limit, 3)[-1]
            limit.succeeded(ticket)
    assert limit.limit == 6, "rounds of a half-empty pool counted towards the wait"
    assert [full(limit) for _ in range(12)] == [False] * 11 + [True]  # a round of 6, then one
    assert limit.limit == 7


def test_threads_in_flight_together_that_all_get_429_cut_once() -> None:
    """Eight threads hold slots at once (a barrier proves it); all eight answer 429."""
    limit = AdaptiveLimit(8)
    guard = 60  # seconds: only so that a broken test fails instead of hanging
    inside = threading.Barrier(8)
    cuts: list[bool] = []
    errors: list[BaseException] = []

    def request() -> None:
        try:
            with limit.slot() as ticket:
                inside.wait(guard)
                cuts.append(limit.throttled(ticket))
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(guard)
    assert not errors, errors
    assert sorted(cuts) == [False] * 7 + [True]
    assert (limit.limit, limit.lowest, limit.in_flight) == (5, 5, 0)


def test_the_summary_reads_ceiling_lowest_and_limit() -> None:
    limit = AdaptiveLimit(32)
    for _ in range(3):
        limit.throttled()  # 32 -> 22 -> 15 -> 10
    for _ in range(2):
        full(limit)  # 10 // 4 = 2 successes: one slot back
    report = RunReport(concurrency=limit)
    summary = format_summary(RunOutcome(load_info=None, report=report))
    assert "429s cut parallel requests from 32 to 10 (now 11)" in summary
    quiet = format_summary(RunOutcome(None, RunReport(concurrency=AdaptiveLimit(32))))
    assert "throttled" not in quiet


def test_a_ceiling_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdaptiveLimit(0)


class _ObservedCondition(threading.Condition):
    """A condition that reports each thread about to block in `wait` (lock still held)."""

    def __init__(self, events: queue.Queue[str], lock: threading.Lock) -> None:
        super().__init__(lock)
        self.events = events

    def wait(self, timeout: float | None = None) -> bool:
        self.events.put("waiting")
        return super().wait(timeout)


def observe(limit: AdaptiveLimit, events: queue.Queue[str]) -> None:
    """Make both of the limit's queues of waiters (ordinary and `first`) report to `events`."""
    limit._condition = _ObservedCondition(events, limit._lock)
    limit._first_condition = _ObservedCondition(events, limit._lock)


def test_slots_bound_requests_in_flight() -> None:
    """Exactly `limit` threads get inside at once, and one more waits until one of them leaves.

    No timing: a barrier proves four are inside together; the fifth thread reports either that
    it blocked in the condition's `wait` (bound kept) or that it got in (bound broken).
    """
    limit = AdaptiveLimit(6)
    limit.throttled()  # now 4
    events: queue.Queue[str] = queue.Queue()
    observe(limit, events)
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


def test_a_listing_page_takes_the_next_free_slot_before_other_waiters() -> None:
    """The user listing's pages (`slot(first=True)`) are the run's critical path: with the one
    slot taken and an ordinary request already waiting, a listing page that comes later still
    gets the slot first. No timing: each waiter reports when it blocks in `wait`."""
    limit = AdaptiveLimit(1)
    events: queue.Queue[str] = queue.Queue()
    observe(limit, events)
    guard = 60  # seconds: only so that a broken order fails instead of hanging
    order: list[str] = []
    errors: list[BaseException] = []

    def wait_for_slot(name: str, first: bool) -> None:
        try:
            with limit.slot(first=first):
                order.append(name)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    held = limit.slot()
    held.__enter__()
    ordinary = threading.Thread(target=wait_for_slot, args=("ordinary", False))
    listing = threading.Thread(target=wait_for_slot, args=("listing page", True))
    try:
        ordinary.start()
        assert events.get(timeout=guard) == "waiting"
        listing.start()
        assert events.get(timeout=guard) == "waiting"
    finally:
        held.__exit__(None, None, None)
        ordinary.join(guard)
        listing.join(guard)
    assert not errors, errors
    assert order == ["listing page", "ordinary"]
    assert limit.in_flight == 0


def test_a_freed_slot_wakes_one_waiter_not_all_of_them() -> None:
    """With more workers than the account has room for (64 workers, room for 40), some threads
    always wait for a slot; waking them all on every response, for all but one to wait again,
    cost 15-30 % of the run's CPU (docs/performance.md, "One waiter a slot"). Eight threads wait
    for one slot, which is freed eight times: each thread blocks once. No timing: each waiter
    reports when it blocks in `wait`, and holds its slot until this thread lets it go."""
    limit = AdaptiveLimit(1)
    events: queue.Queue[str] = queue.Queue()
    observe(limit, events)
    guard = 60  # seconds: only so that a broken hand-over fails instead of hanging
    waiters = 8
    leave = [threading.Event() for _ in range(waiters)]
    errors: list[BaseException] = []

    def wait_for_slot(i: int) -> None:
        try:
            with limit.slot():
                events.put(f"entered {i}")
                assert leave[i].wait(guard)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    held = limit.slot()
    held.__enter__()
    threads = [threading.Thread(target=wait_for_slot, args=(i,)) for i in range(waiters)]
    seen: list[str] = []
    try:
        for t in threads:
            t.start()
            seen.append(events.get(timeout=guard))  # it blocks before the next one starts
        held.__exit__(None, None, None)
        for _ in range(waiters):
            while (event := events.get(timeout=guard)) == "waiting":
                seen.append(event)  # woken for a slot another thread took
            seen.append(event)
            leave[int(event.split()[1])].set()
    finally:
        for e in leave:
            e.set()
        for t in threads:
            t.join(guard)
    assert not errors, errors
    assert seen.count("waiting") == waiters, seen
    assert limit.in_flight == 0


def test_slots_are_handed_over_without_loss_under_a_moving_limit() -> None:
    """Many threads, a tenth of them listing pages (`first`), take and free slots while 429s
    and successes move the limit: every thread finishes (a freed slot never goes unclaimed
    while a thread waits for it) and no more than the ceiling are ever inside together."""
    limit = AdaptiveLimit(8)
    guard = 60  # seconds: a lost hand-over leaves threads waiting for ever
    inside = 0
    most_inside = 0
    count = threading.Lock()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        nonlocal inside, most_inside
        try:
            for n in range(300):
                with limit.slot(first=i % 10 == 0) as ticket:
                    with count:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    if n % 37 == i % 37:
                        limit.throttled(ticket)
                    else:
                        limit.succeeded(ticket)
                    with count:
                        inside -= 1
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(guard)
    assert not [t for t in threads if t.is_alive()], "threads left waiting for a slot"
    assert not errors, errors
    assert most_inside <= limit.ceiling
    assert limit.in_flight == 0


def test_what_a_listing_page_leaves_of_the_freed_slots_goes_to_the_next_waiter() -> None:
    """Two slots are freed together while a listing page (`first`) and an ordinary request
    wait: the frees wake only the page (it goes first), which takes one slot and hands the
    other on, so the ordinary request gets in while the page is still inside. No timing: the two
    slots are freed under the limit's lock (made re-entrant here), so neither waiter runs before
    both are free."""
    limit = AdaptiveLimit(2)
    limit._lock = threading.RLock()  # type: ignore[assignment]
    events: queue.Queue[str] = queue.Queue()
    observe(limit, events)
    guard = 60  # seconds: only so that a slot left unclaimed fails instead of hanging
    leave = threading.Event()
    errors: list[BaseException] = []

    def wait_for_slot(name: str, first: bool) -> None:
        try:
            with limit.slot(first=first):
                events.put(f"{name} entered")
                assert leave.wait(guard)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    with ExitStack() as held:
        hold(held, limit, 2)
        ordinary = threading.Thread(target=wait_for_slot, args=("ordinary", False))
        listing = threading.Thread(target=wait_for_slot, args=("listing page", True))
        ordinary.start()
        assert events.get(timeout=guard) == "waiting"
        listing.start()
        assert events.get(timeout=guard) == "waiting"
        with limit._lock:
            held.close()  # both slots freed before either waiter can run
    try:
        entered: list[str] = []
        while len(entered) < 2:
            if (event := events.get(timeout=guard)) != "waiting":
                entered.append(event)
    finally:
        leave.set()
        ordinary.join(guard)
        listing.join(guard)
    assert not errors, errors
    assert sorted(entered) == ["listing page entered", "ordinary entered"]  # both inside at once
    assert limit.in_flight == 0


def shared_account(seed: int, room: int, requests: int) -> tuple[list[int], list[bool]]:
    """A scripted account with room for `room` of our requests, seen through a busy client: a
    slot is held longer than the account counts its request, so a 429 comes only once the limit
    is a slot or two above the room, by a margin that moves from request to request (drawn
    from `seed`), and then only for some of the requests sent there. One thread, no clock.

    Returns the limit after each request, and per 429 that cut whether it was a 70 % cut (a
    new wall) rather than a step back below a wall met again.
    """
    draw = random.Random(seed)
    limit = AdaptiveLimit(16)
    limits: list[int] = []
    seventy: list[bool] = []
    for _ in range(requests):
        if limit.limit > room + draw.randint(0, 2) and draw.random() < 0.3:
            if limit.throttled():
                seventy.append(not limit._hold)  # a step back below a wall holds there
        else:
            full(limit)
        limits.append(limit.limit)
    return limits, seventy


@pytest.mark.parametrize("seed", range(20))
def test_a_noisy_wall_costs_a_few_cuts_then_steps_and_the_limit_settles_at_the_room(
    seed: int,
) -> None:
    """Where a busy machine blurs the level at which the account answers 429, the 70 % cuts
    are the few of finding the wall; after that a 429 is a probe of the same wall, answered by
    a step back below it, and the limit settles at the room, not below it."""
    room = 6
    limits, seventy = shared_account(seed, room, requests=5000)
    assert len(seventy) > 20, "the wall was not probed again"
    assert sum(seventy) <= 10, f"{sum(seventy)} of {len(seventy)} 429s cut to 70 %"
    assert statistics.median(limits[1000:]) >= room
    assert sum(limit < room for limit in limits[1000:]) <= 10, "settled below the room"
