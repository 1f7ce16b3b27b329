"""A run loaded in parts (`users_per_load`) keeps reading the API while a part is normalized and
loaded: the user listing's chain of page tokens and the fetches already submitted go on.

A dlt tracking module holds the first part's load step until the emulator has served what must
be served meanwhile (the emulator's own counters, waited for on a condition, no sleep); had the
run stopped reading at the part's end, the wait would time out. The result is then checked
against the emulator's truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from dlt.pipeline import trace as dlt_trace
from reliability.helpers import assert_exact_mirror

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

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if step == "load" and self.held is None:
            self.held = self.emu.stats.wait_for(self.until, timeout=30)
            self.seen = self.emu.stats.snapshot().by_route

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

    outcome = run_pipeline(emu, max_workers=WORKERS)

    assert spy.held, (
        f"while the first part loaded, the run stopped reading: {spy.seen.get('users')} "
        f"listing pages (want {pages_past_the_part}), {spy.seen.get('user_conversations')} "
        f"conversation lists (want {PART + FETCHED_DURING_THE_PAUSE})"
    )
    assert len(outcome.load_ids) == math.ceil(USERS / PART)
    assert_exact_mirror(outcome.pipeline, emu)
