"""A run loaded in parts (`users_per_load`) keeps reading the API while a part is normalized and
loaded: the user listing's chain of page tokens and the fetches already submitted go on. And once
every user is submitted, what is decided is loaded while the last fetches drain.

A dlt tracking module holds the first part's load step until the emulator has served what must
be served meanwhile (the emulator's own counters, waited for on a condition, no sleep); had the
run stopped reading at the part's end, the wait would time out. The result is then checked
against the emulator's truth.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from dlt.pipeline import trace as dlt_trace
from mirror import loaded_rows
from reliability.helpers import assert_exact_mirror
from twilio_conversations import user_conversations
from twilio_conversations.settings import DRAIN_ROUNDS
from twilio_emulator import RequestGate

USERS = 3_000
PART = 300
WORKERS = 4
PAGE = 50  # the users listing's page size (the connector's default)
READ_AHEAD = 2_000  # users the listing is read ahead by, whatever the readers do
# Users fetched beyond the part while it is loaded: the pool keeps working through the pause
# (seconds at Twilio's latency), so this is many times the workers, not the few it used to be.
FETCHED_DURING_THE_PAUSE = 10 * WORKERS


class HoldFirstLoad:
    """A dlt tracking module: at the first load step, waits for `until(stats)` to hold."""

    def __init__(self, emu: Any, until: Callable[[Any], bool]) -> None:
        self.emu, self.until = emu, until
        self.held: bool | None = None  # whether the condition came true; None: never asked
        self.seen: dict[str, int] = {}  # requests per route when the wait ended
        self.started = threading.Event()  # set once the first load step has begun (and waited)

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if step == "load" and self.held is None:
            self.held = self.emu.stats.wait_for(self.until, timeout=30)
            self.seen = self.emu.stats.snapshot().by_route
            self.started.set()

    def on_start_trace(self, *args: Any) -> None:
        pass

    def on_end_trace_step(self, *args: Any) -> None:
        pass

    def on_end_trace(self, *args: Any) -> None:
        pass


def test_the_listing_and_the_fetches_go_on_while_a_part_is_loaded(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = start_emulator(seed=8, services=1, users=USERS, conversations_per_user=1)
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD", str(PART))
    pages_past_the_part = math.ceil((PART + READ_AHEAD) / PAGE)

    def read_on(stats: Any) -> bool:
        routes = stats.by_route
        return (
            routes.get("user_conversations", 0) >= PART + FETCHED_DURING_THE_PAUSE
            and routes.get("users", 0) >= pages_past_the_part
        )

    spy = HoldFirstLoad(emu, read_on)
    monkeypatch.setattr(dlt_trace, "TRACKING_MODULES", [*dlt_trace.TRACKING_MODULES, spy])
    # Parts by size only: the part cut where the last fetches drain is the tests' below.
    monkeypatch.setattr(user_conversations, "DRAIN_ROUNDS", USERS)

    outcome = run_pipeline(emu, max_workers=WORKERS)

    assert spy.held, (
        f"while the first part loaded, the run stopped reading: {spy.seen.get('users')} "
        f"listing pages (want {pages_past_the_part}), {spy.seen.get('user_conversations')} "
        f"conversation lists (want {PART + FETCHED_DURING_THE_PAUSE})"
    )
    # and the package that finishes the first load's claim (first_load.py): USERS is a
    # multiple of PART, so the last part ended before the scan did
    assert len(outcome.load_ids) == math.ceil(USERS / PART) + 1
    assert_exact_mirror(outcome.pipeline, emu)


class HoldUsers(RequestGate):
    """Holds the conversation lists of the users `held` until `open`, and that of the user
    `early` until `release` is set (uncounted)."""

    def __init__(self, held: set[str], early: str, release: threading.Event) -> None:
        super().__init__(holds=lambda path: _user_of(path) in held)
        self.early, self.release = early, release

    def hold(self, path: str = "") -> None:
        if _user_of(path) == self.early:
            self.release.wait(timeout=120)  # a guard against hanging only
            return
        super().hold(path)


def _user_of(path: str) -> str | None:
    """The user SID of `/v1/Services/{sid}/Users/{sid}/Conversations`, else None."""
    return path.split("/")[-2] if path.endswith("/Conversations") else None


def test_what_is_decided_is_loaded_while_the_last_fetches_drain(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last 30 users' conversation lists are held by the emulator until a load starts, so
    at least 30 fetches stay unfinished on 4 workers (7 a worker) once every user is
    submitted: the users decided by then are loaded as a part of their own, as soon as they are
    no fewer than the fetches still running. Had the run waited for the drain, no load could start
    while those lists are held (the wait below would time out).

    The drain's part is decided as a result is handed out once every user is submitted; so that
    one always is, whatever the workers' pace against the listing's, the first user's list is
    held until then too (workers that read every other user first would leave none). The held
    users are the listing's whole last page: held earlier, they could take every slot of the
    concurrency limit (one a worker) from the listing's last page."""
    emu = start_emulator(seed=9, services=1, users=2 * PAGE + 30, conversations_per_user=1)
    service_sid = emu.services()[0]["sid"]
    listed = emu.users(service_sid)
    last = {user["sid"] for user in listed[-30:]}
    all_submitted = threading.Event()  # the run's users are all submitted: release the first

    class SaysWhenAllSubmitted(user_conversations._Fetches):
        """The run's `_Fetches`, unchanged, but for saying when its tasks have run out."""

        @property
        def all_submitted(self) -> bool:
            return self._all_submitted

        @all_submitted.setter
        def all_submitted(self, value: bool) -> None:
            self._all_submitted = value
            if value:
                all_submitted.set()

    monkeypatch.setattr(user_conversations, "_Fetches", SaysWhenAllSubmitted)
    gate = emu.gate = HoldUsers(last, early=listed[0]["sid"], release=all_submitted)
    spy = HoldFirstLoad(emu, lambda stats: True)  # notes what was served when a load began
    monkeypatch.setattr(dlt_trace, "TRACKING_MODULES", [*dlt_trace.TRACKING_MODULES, spy])
    outcomes: list[Any] = []
    run = threading.Thread(target=lambda: outcomes.append(run_pipeline(emu, max_workers=4)))
    run.start()
    try:
        loaded_while_held = spy.started.wait(timeout=60)  # a guard against hanging only
    finally:
        gate.open()
        all_submitted.set()  # releases the first user's list (`_Fetches` keeps its own flag)
        run.join(timeout=120)
    assert loaded_while_held, "no part was loaded while the last fetches were pending"
    assert spy.seen.get("user_conversations", 0) <= len(listed) - len(last)  # held: not read
    (outcome,) = outcomes
    first, second = outcome.load_ids
    by_load: dict[str, set[str]] = {first: set(), second: set()}
    for row in loaded_rows(outcome.pipeline, "user_conversations", ["user_sid", "_dlt_load_id"]):
        by_load[row["_dlt_load_id"]].add(row["user_sid"])
    users = {user["sid"] for user in listed}
    assert by_load[first] | by_load[second] == users  # every user has one conversation
    assert not by_load[first] & last, "a held user was decided before it was read"
    assert last <= by_load[second]
    # A first load: every user handed out is decided, and the held users were all running at
    # the cut, so `decided >= running` means the first part holds at least as many users.
    assert len(by_load[first]) >= len(last), (len(by_load[first]), len(by_load[second]))
    assert_exact_mirror(outcome.pipeline, emu)


def test_a_small_account_is_loaded_in_one_package(start_emulator: Any, run_pipeline: Any) -> None:
    """With fewer users than twice `DRAIN_ROUNDS` requests a worker, the fetches left once as
    many users are decided never last long enough to pay for a part, whatever the timing."""
    workers = 4
    emu = start_emulator(seed=10, services=1, users=2 * DRAIN_ROUNDS * workers - 1)
    outcome = run_pipeline(emu, max_workers=workers)
    assert len(outcome.load_ids) == 1
    assert_exact_mirror(outcome.pipeline, emu)
