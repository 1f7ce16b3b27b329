"""Nothing is lost when the API misbehaves: random faults, bursts longer than the retry budget,
sustained 429s, and bodies that are not Twilio JSON."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed
from twilio_conversations import cli, throttle
from twilio_conversations.errors import TwilioAPIError, TwilioConnectionError
from twilio_emulator import DataSpec, EmulatorConfig

from .helpers import FAST_RETRIES, assert_exact_mirror, change_some_data, run_cli

#: 429 with and without Retry-After, 503, dropped connections, answers slower than the timeout.
TRANSIENT = ("429-retry-after", "429", "503", "drop", "slow")


def faulty_emulator(start_emulator: Any, rate: float, kinds: tuple[str, ...], **spec: Any) -> Any:
    data = DataSpec(**{"seed": 3, "services": 2, "users": 10, "max_conversations": 70, **spec})
    config = EmulatorConfig(
        data=data,
        fault_rate=rate,
        fault_kinds=kinds,
        fault_seed=9,  # all five kinds within the first 35 requests
        retry_after_s=1,
        slow_ms=2400,  # past request_timeout (2 s): the client gives up and retries
    )
    return start_emulator(config)


def faults_seen(emu: Any) -> set[str]:
    return {str(kind) for _, _, kind in emu.faults.history}


def assert_one_retry_per_fault(reasons: Counter[str], history: Iterable[Any]) -> None:
    """One retry per injected fault, of the reason the fault's kind gives the client. The one
    reason that may count more: a timeout, since on a busy machine an ordinary answer can take
    longer than the test's 2 s `request_timeout` too (it is retried like a slow one)."""
    kinds = Counter(str(kind) for *_, kind in history)
    timeouts = reasons["ReadTimeout"] + reasons["ConnectTimeout"]
    assert reasons["429"] == kinds["429"] + kinds["429-retry-after"], (reasons, kinds)
    assert reasons["503"] == kinds["503"], (reasons, kinds)
    assert reasons["ConnectionError"] == kinds["drop"], (reasons, kinds)
    assert timeouts >= kinds["slow"], (reasons, kinds)
    assert sum(reasons.values()) - timeouts == kinds.total() - kinds["slow"], (reasons, kinds)


def test_ten_percent_faults_two_runs_still_mirror_and_count_retries(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = faulty_emulator(start_emulator, 0.10, TRANSIENT)
    first = run_pipeline(emu, page_size=10, max_workers=4, **FAST_RETRIES)
    assert_exact_mirror(first.pipeline, emu)
    change_some_data(emu)
    second = run_pipeline(emu, page_size=10, max_workers=4, **FAST_RETRIES)
    assert_exact_mirror(second.pipeline, emu)
    assert second.rows_written["user_conversations"] > 0  # the changes were written

    assert faults_seen(emu) == set(TRANSIENT), "every fault kind must have been exercised"
    reasons = first.report.requests.retry_reasons + second.report.requests.retry_reasons
    # Each fault costs exactly one retry, of its own reason (nothing fails for good, nothing is
    # retried twice).
    assert_one_retry_per_fault(reasons, emu.faults.history)
    summary = cli.format_summary(second)
    assert f"({second.report.requests.retries:,} retries)" in summary


def test_cli_under_faults_exits_zero_and_prints_retries(
    start_emulator: Any, tmp_path: Path
) -> None:
    emu = faulty_emulator(start_emulator, 0.10, TRANSIENT)
    first = run_cli(emu, "run", "--progress", "none", "--max-workers", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    change_some_data(emu)
    emu.stats.reset()
    before = len(emu.faults.history)
    second = run_cli(emu, "run", "--progress", "none", "--max-workers", "4", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr.strip() == "", second.stderr

    match = re.search(r"requests\s+([\d,]+) \(([\d,]+) retries\)", second.stdout)
    assert match, second.stdout
    requests_done, retries = (int(g.replace(",", "")) for g in match.groups())
    injected = list(emu.faults.history)[before:]
    # A retry per fault; more only where an ordinary answer outlasted the 2 s timeout on a busy
    # machine, and each of those is an answer the client did not receive (below).
    assert retries >= len(injected) > 0
    timed_out = retries - len(injected)
    # Every answer the client received is counted: all the emulator sent, less the dropped
    # connections and the answers that came after the client had timed out. A slow answer is
    # counted by the emulator when it is sent, after the client gave up: wait for it.
    unanswered = sum(1 for *_, kind in injected if kind in ("drop", "slow"))
    assert emu.stats.wait_for(lambda s: s.total >= requests_done + unanswered, timeout=30)
    sent = emu.stats.snapshot().total
    assert requests_done + unanswered <= sent <= requests_done + unanswered + timed_out
    from .helpers import attach

    assert_exact_mirror(attach(tmp_path), emu)


def test_429_burst_longer_than_budget_fails_clearly_loads_nothing_and_next_run_recovers(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path
) -> None:
    emu = faulty_emulator(start_emulator, 0.0, TRANSIENT)
    run_pipeline(emu, **FAST_RETRIES)
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        before = {
            table: sorted(con.execute(f"select * from twilio.{table}").fetchall())
            for table in ("services", "users", "user_conversations")
        }
        loads_before = con.execute("select count(*) from twilio._dlt_loads").fetchone()
    change_some_data(emu)

    # The last service's users answer 429 for longer than the whole budget, after the first
    # service has been read completely.
    busy_service = emu.services()[-1]["sid"]
    emu.faults.inject("429", count=10_000, path_contains=f"{busy_service}/Users/US")
    result = run_cli(emu, "run", "--progress", "none", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"error: Twilio API error 20429 \(HTTP 429\) for {re.escape(emu.base_url)}"
        rf"/v1/Services/{busy_service}/Users/US[0-9a-f]{{32}}/Conversations: Too Many Requests",
        lines[0],
    ), lines[0]
    assert "Traceback" not in result.stdout + result.stderr

    # Nothing partial reached the destination: every table is exactly as the last good run
    # left it, and no load was recorded.
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        after = {
            table: sorted(con.execute(f"select * from twilio.{table}").fetchall())
            for table in before
        }
        assert con.execute("select count(*) from twilio._dlt_loads").fetchone() == loads_before
    assert after == before

    emu.faults.reset()
    recovered = run_pipeline(emu, **FAST_RETRIES)
    assert_exact_mirror(recovered.pipeline, emu)
    assert recovered.report.users_changed > 0, "the failed run must not have advanced any state"
    assert run_pipeline(emu, **FAST_RETRIES).rows_written["user_conversations"] == 0


def test_sustained_429s_back_off_the_pool_then_it_recovers(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve 429s at four workers: the pool is cut to 70 % (rounded down) once per burst, or one
    slot at a wall that has not moved, down to one, then grows back one slot at a time (see
    throttle.py for the rule)."""
    emu = faulty_emulator(start_emulator, 0.0, TRANSIENT, services=2, users=30)
    limits: list[int] = []  # the limit after every 429 and every success
    cuts: list[bool] = []  # per 429: did it cut the limit?
    walls: dict[int, int] = {}  # limit events' index -> the wall after a 429 that cut
    original_throttled = throttle.AdaptiveLimit.throttled
    original_succeeded = throttle.AdaptiveLimit.succeeded

    def throttled(self: Any, ticket: Any = None) -> bool:
        cut = original_throttled(self, ticket)
        cuts.append(cut)
        limits.append(self.limit)
        if cut:
            walls[len(limits) - 1] = self._wall
        return cut

    def succeeded(self: Any, ticket: Any = None) -> bool:
        grew = original_succeeded(self, ticket)
        limits.append(self.limit)
        return grew

    monkeypatch.setattr(throttle.AdaptiveLimit, "throttled", throttled)
    monkeypatch.setattr(throttle.AdaptiveLimit, "succeeded", succeeded)

    emu.faults.inject("429", count=12, path_contains="/Conversations")
    # More attempts than injected 429s: at a limit of one, whichever request takes the slot meets
    # the next 429, and with FAST_RETRIES' six attempts one request could meet six in a row and
    # fail the run (seen under CI load). This test is about the pool, not the retry budget.
    retries = {**FAST_RETRIES, "request_max_attempts": 13}
    outcome = run_pipeline(emu, max_workers=4, page_size=10, **retries)
    assert_exact_mirror(outcome.pipeline, emu)
    limit = outcome.report.concurrency
    assert limit is not None and limit.ceiling == 4
    assert len(cuts) == 12
    # Deterministic, whatever the interleaving: at most 3 of the 12 429s come from requests
    # started before the first cut, and while 429s are pending only the 6 user-listing pages
    # can succeed, too few to regrow 2 -> 4 between every cut. So the pool reaches one (4 -> 2
    # -> 1 at 70 %), and fewer cuts than 429s are made.
    assert limit.lowest == 1, "twelve 429s must cut the pool down to one"
    assert 2 <= sum(cuts) < 12
    steps = list(zip(limits, limits[1:], strict=False))
    # A cut keeps 70 %; a probe that meets the last wall again steps back below the wall.
    downs = [(a, b, walls[i + 1]) for i, (a, b) in enumerate(steps) if b < a]
    assert all(b in (max(1, int(a * 0.7)), max(1, wall - 1)) for a, b, wall in downs), downs
    assert all(b == a + 1 for a, b in steps if b > a), "recovery grows one slot at a time"
    assert limit.limit == limit.ceiling, "after the burst the pool must grow back to max_workers"
    assert limits[-1] == 4
    assert "429s cut parallel requests from 4 to 1 (now 4)" in cli.format_summary(outcome)


def test_a_shared_account_s_room_is_used_and_the_limit_never_settles_below_it(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account limited to 10 requests in flight, 4 of them held by the customer's other
    traffic (the emulator's account limit): the run, with 16 workers, has room for 6.

    Only what holds on any machine: the mirror is exact, the run filled the room (the emulator
    saw the account full), 429s are a small share of its requests, every cut is the rule's (70 %,
    or back below a wall met again), and the limit settles at the room, not below it. The shape
    of the sequence of cuts is the rule's business, pinned without threads in test_throttle.py:
    here a slot is held from before its request is sent until its body is read, longer than
    the emulator counts it in flight, by as much as the machine is busy, so the level at which
    a 429 comes moves with the host's load."""
    account, other = 10, 4
    room = account - other
    data = DataSpec(seed=5, services=1, users=300, max_conversations=70)
    config = EmulatorConfig(
        data=data, latency_ms=20, account_concurrency=account, other_traffic=other
    )
    emu = start_emulator(config)
    cuts: list[tuple[int, int, int]] = []  # (limit before, limit after, wall) of each cut
    settled: list[int] = []  # the limit after each success
    original_throttled = throttle.AdaptiveLimit.throttled
    original_succeeded = throttle.AdaptiveLimit.succeeded

    def throttled(self: Any, ticket: Any = None) -> bool:
        before = self.limit
        cut = original_throttled(self, ticket)
        if cut:
            cuts.append((before, self.limit, self._wall))
        return cut

    def succeeded(self: Any, ticket: Any = None) -> bool:
        grew = original_succeeded(self, ticket)
        settled.append(self.limit)
        return grew

    monkeypatch.setattr(throttle.AdaptiveLimit, "throttled", throttled)
    monkeypatch.setattr(throttle.AdaptiveLimit, "succeeded", succeeded)
    retries = {**FAST_RETRIES, "request_max_attempts": 10}
    outcome = run_pipeline(emu, max_workers=16, **retries)
    assert_exact_mirror(outcome.pipeline, emu)
    stats = emu.stats.snapshot()
    assert stats.peak_in_flight == account, "the run never filled the room the account left it"
    assert stats.account_limit_429s > 0
    assert stats.account_limit_429s <= 0.1 * stats.total, (stats.account_limit_429s, cuts)
    assert cuts and all(
        after in (max(1, int(before * 0.7)), max(1, wall - 1)) for before, after, wall in cuts
    ), cuts
    # Settled: over the second half of the run, the limit sits at the room or above it.
    second_half = sorted(settled[len(settled) // 2 :])
    assert second_half[len(second_half) // 2] >= room, (cuts, second_half)


@pytest.mark.parametrize("kind", ["truncated", "short-body", "html-502", "empty-200"])
def test_broken_bodies_are_retried_and_never_parsed_as_data(
    start_emulator: Any, run_pipeline: Any, kind: str
) -> None:
    emu = faulty_emulator(start_emulator, 0.0, TRANSIENT)
    # Every list (services, users, conversations) meets the broken body a few times.
    for path in ("/v1/Services", "/Users", "/Conversations"):
        emu.faults.inject(kind, count=2, path_contains=path)
    # No slow faults here: a timeout long enough that a busy machine's answer is not a retry.
    outcome = run_pipeline(emu, **{**FAST_RETRIES, "request_timeout": 30.0})
    assert emu.faults.pending() == 0
    assert outcome.report.requests.retries == 6
    assert_exact_mirror(outcome.pipeline, emu)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "(HTTP 200)"),  # ... malformed response body: <what was wrong>
        ("empty-200", "(HTTP 200)"),
        ("html-502", "(HTTP 502)"),
        ("short-body", "could not get"),  # the connection closed mid-body every time
    ],
)
def test_broken_bodies_past_the_budget_fail_with_one_clear_line(
    start_emulator: Any, run_pipeline: Any, kind: str, message: str, tmp_path: Path
) -> None:
    emu = faulty_emulator(start_emulator, 0.0, TRANSIENT)
    emu.faults.inject(kind, count=10_000, path_contains="/Conversations")
    with pytest.raises(PipelineStepFailed) as failure:
        run_pipeline(emu, **FAST_RETRIES)
    cause = cli._root_cause(failure.value)
    assert isinstance(cause, TwilioAPIError | TwilioConnectionError)
    line = cli._one_line(cause)
    assert message in line, line
    if kind in ("truncated", "empty-200"):
        assert "malformed response body" in line, line
    assert "/Conversations" in line and "\n" not in str(cause)
    # Tried the whole budget, then stopped: no data from a broken body was loaded.
    user_attempts = [k for _, p, k in emu.faults.history if "/Conversations" in p]
    assert len(user_attempts) >= FAST_RETRIES["request_max_attempts"]
    database = tmp_path / "test.duckdb"
    if database.exists():
        with duckdb.connect(str(database), read_only=True) as con:
            tables = con.execute(
                "select table_name from information_schema.tables where table_schema = 'twilio'"
            ).fetchall()
        assert ("user_conversations",) not in tables


def test_an_empty_json_object_is_not_an_empty_page(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twilio_emulator import server
    from twilio_emulator.app import Response

    emu = faulty_emulator(start_emulator, 0.0, TRANSIENT)
    run_pipeline(emu, **FAST_RETRIES)
    original = server._fault_response

    def empty_object(kind: Any, retry_after_s: int) -> Any:
        if kind == "empty-200":  # a proxy or gateway answering 200 "{}" instead of the page
            return Response(200, b"{}", "fault")
        return original(kind, retry_after_s)

    monkeypatch.setattr(server, "_fault_response", empty_object)
    service = emu.services()[0]["sid"]
    busiest = max(emu.users(service), key=lambda u: len(emu.user_conversations(service, u["sid"])))
    emu.faults.inject("empty-200", count=1, path_contains=f"{busiest['sid']}/Conversations")
    outcome = run_pipeline(emu, **FAST_RETRIES)
    assert emu.faults.pending() == 0
    assert_exact_mirror(outcome.pipeline, emu)
