"""`kill -9` at any point leaves nothing a later run cannot finish: the next run completes and the
destination is an exact mirror without duplicates; and two runs at once do not corrupt it."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from twilio_emulator import RequestGate

from .helpers import (
    CLI,
    FAST_RETRIES,
    HERE,
    assert_exact_mirror,
    change_some_data,
    cli_env,
)

WORKING_DIR = Path("pipelines") / "twilio_conversations"


def pending_packages(tmp_path: Path) -> dict[str, list[str]]:
    """Load packages dlt left behind, by stage (`normalize/extracted`, `load/normalized`); a
    package is a folder (a file beside them is an atomic write that SIGKILL cut short)."""
    root = tmp_path / WORKING_DIR
    stages = {
        "extracted": root / "normalize" / "extracted",
        "normalized": root / "load" / "normalized",
    }
    return {
        stage: sorted(p.name for p in path.iterdir() if p.is_dir()) if path.exists() else []
        for stage, path in stages.items()
    }


def recover_and_check(emu: Any, run_pipeline: Any, change_after_crash: bool = False) -> None:
    """The next run must leave an exact mirror (of the latest truth, when data changed again
    after the crash), and the run after it must find nothing to write: state and destination
    agree."""
    if change_after_crash:
        change_some_data(emu, salt="after-crash")
    recovered = run_pipeline(emu, **FAST_RETRIES)
    assert_exact_mirror(recovered.pipeline, emu)
    assert pending_packages(Path.cwd()) == {"extracted": [], "normalized": []}
    quiet = run_pipeline(emu, **FAST_RETRIES)
    assert quiet.rows_written == {"services": 0, "users": 0, "user_conversations": 0}
    assert quiet.report.users_changed == 0
    assert_exact_mirror(quiet.pipeline, emu)


@pytest.fixture
def small(start_emulator: Any) -> Any:
    return start_emulator(seed=21, services=2, users=12, max_conversations=70)


def crash_cli_at(emu: Any, tmp_path: Path, point: str) -> None:
    """A CLI run SIGKILLed at `point` (see crash_at.py), checked to have died there."""
    marker = tmp_path / "crashed-at"
    result = subprocess.run(
        [CLI[0], str(HERE / "crash_at.py"), point, "run", "--progress", "none"],
        cwd=tmp_path,
        env=cli_env(emu, tmp_path, CRASH_MARKER=str(marker)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert marker.read_text() == point
    left = pending_packages(tmp_path)
    stage = "extracted" if point == "normalize" else "normalized"
    assert len(left[stage]) == 1, left  # the crash happened where intended


@pytest.mark.parametrize("point", ["normalize", "load-copy", "load-merge", "load-complete"])
def test_kill_9_in_normalize_or_load_then_next_run_recovers(
    small: Any, run_pipeline: Any, tmp_path: Path, point: str
) -> None:
    run_pipeline(small, **FAST_RETRIES)
    change_some_data(small)
    crash_cli_at(small, tmp_path, point)
    recover_and_check(small, run_pipeline)


def test_first_run_after_a_crash_also_reads_the_api(
    small: Any, run_pipeline: Any, tmp_path: Path
) -> None:
    run_pipeline(small, **FAST_RETRIES)
    change_some_data(small)
    crash_cli_at(small, tmp_path, "load-complete")
    recover_and_check(small, run_pipeline, change_after_crash=True)


def is_user_conversations(path: str) -> bool:
    """`/v1/Services/{sid}/Users/{sid}/Conversations`: a page of one user's conversations."""
    return "/Users/" in path and path.endswith("/Conversations")


class PassThenHold(RequestGate):
    """Lets the first `passed` pages of users' conversations through and holds every later one
    until `open`; `arrivals` counts them all, the passed ones included."""

    def __init__(self, passed: int) -> None:
        super().__init__(holds=is_user_conversations)
        self._passed = passed

    def hold(self, path: str = "") -> None:
        if is_user_conversations(path):
            with self._cond:
                if self.arrivals < self._passed:
                    self.arrivals += 1
                    self._cond.notify_all()
                    return
        super().hold(path)


def test_kill_9_during_extract_then_next_run_recovers(
    small: Any, run_pipeline: Any, tmp_path: Path
) -> None:
    run_pipeline(small, **FAST_RETRIES)
    change_some_data(small)
    small.stats.reset()
    # Caught in the middle of the extract for certain: `passed` pages of users' conversations
    # are served, every later one is held at the emulator until the run is dead.
    passed = 6
    gate = small.gate = PassThenHold(passed)
    process = subprocess.Popen(
        [*CLI, "run", "--progress", "none", "--max-workers", "2"],
        cwd=tmp_path,
        env=cli_env(small, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The timeouts guard against a hang only. A held page has arrived, and the pages let
        # through are answered (counted before the answer leaves).
        assert gate.wait_for_arrivals(passed + 1, timeout=60), "the run never reached the gate"
        assert small.stats.wait_for(
            lambda stats: stats.by_route.get("user_conversations", 0) >= passed, timeout=60
        )
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)  # nothing if it has ended
    assert process.wait(timeout=30) == -signal.SIGKILL
    read = small.stats.snapshot().by_route.get("user_conversations", 0)
    gate.open()  # the held requests are answered to a dead client
    small.gate = None
    users = sum(len(small.users(service["sid"])) for service in small.services())
    assert read == passed < users, "killed mid-extract: only the pages let through were read"
    recover_and_check(small, run_pipeline, change_after_crash=True)


def two_cli_runs_at_once(emu: Any, tmp_path: Path) -> list[tuple[int, str, str]]:
    """Two scheduled runs started together on one machine: same pipeline dir, same DuckDB file."""
    emu.latency_ms = 40  # each run's extract takes about a second, so the two overlap
    processes = [
        subprocess.Popen(
            [*CLI, "run", "--progress", "none", "--max-workers", "2"],
            cwd=tmp_path,
            env=cli_env(emu, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    emu.latency_ms = 0
    return results


def test_two_runs_at_once_corrupt_nothing(small: Any, tmp_path: Path, run_pipeline: Any) -> None:
    run_pipeline(small, **FAST_RETRIES)
    change_some_data(small)
    for code, _, err in two_cli_runs_at_once(small, tmp_path):
        assert code in (0, 1), err  # no crash of the interpreter, no hang
    # Whatever each run did, nothing is corrupt: the file opens, the next run completes and
    # leaves an exact mirror, and the run after it finds nothing to write.
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        con.execute("select count(*) from twilio.user_conversations").fetchall()
    change_some_data(small, salt="later")
    after = run_pipeline(small, **FAST_RETRIES)
    assert_exact_mirror(after.pipeline, small)
    quiet = run_pipeline(small, **FAST_RETRIES)
    assert quiet.rows_written["user_conversations"] == 0
    assert_exact_mirror(quiet.pipeline, small)


def test_second_of_two_runs_at_once_waits_or_fails_clearly(small: Any, tmp_path: Path) -> None:
    results = two_cli_runs_at_once(small, tmp_path)
    assert any(code == 0 for code, _, _ in results), results
    for code, _, err in results:
        if code != 0:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "another run" in lines[0], err
            assert "Errno" not in lines[0]


def test_run_lock_is_reentrant_in_its_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    """`exclusive` nests in the thread that holds it (the CLI locks, then `run` locks again),
    and another thread of the same process running the same pipeline meets it."""
    from twilio_conversations.errors import RunInProgressError
    from twilio_conversations.runner import exclusive

    outcome: list[str] = []

    def second_thread() -> None:
        try:
            with exclusive("p", str(tmp_path)):
                outcome.append("ran")
        except RunInProgressError as exc:
            outcome.append(str(exc))

    with exclusive("p", str(tmp_path)), exclusive("p", str(tmp_path)):
        thread = threading.Thread(target=second_thread)
        thread.start()
        thread.join()
    assert len(outcome) == 1 and "another run of pipeline 'p'" in outcome[0], outcome
    second_thread()  # free again once the holder is done
    assert outcome[1:] == ["ran"]


# -- a long run loads in parts -------------------------------------------------------------


def loaded_users(database: Path) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("select distinct user_sid from twilio.user_conversations").fetchall()
    return {user for (user,) in rows}


@pytest.mark.parametrize(
    "driver", [["run", "--progress", "none"], ["load_in_parts"]], ids=["cli", "plain-dlt"]
)
def test_kill_9_at_90_percent_keeps_the_parts_loaded_and_the_next_run_does_the_rest(
    start_emulator: Any, tmp_path: Path, run_pipeline: Any, driver: list[str]
) -> None:
    """1,000 users in parts of 100, by the CLI or by plain dlt's `load_in_parts`: SIGKILL right
    after the 9th part is loaded. Its 900 users' rows are in the destination (the first 900
    whose fetch finished: fetches go on across the parts, so a few of the listing's first 900
    may be in the last part); the next run writes only the other 100 users' rows and leaves an
    exact mirror."""
    emu = start_emulator(seed=5, services=1, users=1000, conversations_per_user=1)
    service = emu.services()[0]["sid"]
    listing = [u["sid"] for u in emu.users(service)]
    marker = tmp_path / "crashed-at"
    result = subprocess.run(
        [CLI[0], str(HERE / "crash_at.py"), "after-part-9", *driver],
        cwd=tmp_path,
        env=cli_env(
            emu,
            tmp_path,
            CRASH_MARKER=str(marker),
            SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD="100",
            # Parts by size only: a part where the last fetches drain needs 5 fetches a worker
            # running and at least as many users decided since the last part, 100 on 20 workers:
            # that is only ever at a size boundary.
            SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS="20",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert marker.read_text() == "after-part-9"
    loaded = loaded_users(tmp_path / "test.duckdb")
    assert len(loaded) == 900 and loaded <= set(listing)

    rest = run_pipeline(emu, **FAST_RETRIES)
    assert rest.rows_written["user_conversations"] == 100
    assert_exact_mirror(rest.pipeline, emu)
    quiet = run_pipeline(emu, **FAST_RETRIES)
    assert quiet.rows_written == {"services": 0, "users": 0, "user_conversations": 0}
