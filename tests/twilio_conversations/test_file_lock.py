"""A reader holding the DuckDB file (a notebook kernel, a duckdb shell) never fails a run.

The readers are real processes with a read-only DuckDB connection; the runs are real CLI
processes or the runner in this process. Synchronisation is by lines the processes print (the
reader's "holding", the run's "held open by ... (PID n)"), never by sleeping.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cli_process import CLI, cli, emulator_env
from dlt.pipeline import trace as dlt_trace
from mirror import assert_user_conversations_mirror
from twilio_conversations.errors import DestinationLockedError
from twilio_conversations.file_lock import FileAccess, lock_holder

HELD = "held open by"

# A reader as an analyst has one: a read-only connection kept open until told to close.
READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("select count(*) from information_schema.tables").fetchall()
print("holding", flush=True)
sys.stdin.readline()
con.close()
print("closed", flush=True)
"""


class Reader:
    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "holding"

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "closed"
            self.process.wait(timeout=30)


@pytest.fixture
def reader() -> Iterator[Any]:
    readers: list[Reader] = []

    def start(path: Path) -> Reader:
        readers.append(Reader(path))
        return readers[-1]

    yield start
    for r in readers:
        if r.process.poll() is None:
            r.process.kill()
            r.process.wait()


def environment(emu: Any, database: Path, **extra: str) -> dict[str, str]:
    return emulator_env(
        emu,
        DESTINATION__DUCKDB__CREDENTIALS=str(database),
        SOURCES__TWILIO_CONVERSATIONS__BASE_URL=emu.base_url,
        **extra,
    )


def first_load(emu: Any, database: Path, cwd: Path) -> None:
    done = cli("run", "--progress", "none", cwd=cwd, env=environment(emu, database))
    assert done.returncode == 0, done.stderr


# -- the run waits, says who holds the file once, and goes on when it is free ---------------


def test_run_waits_for_a_reader_and_continues_when_it_closes(
    emulator: Any, tmp_path: Path, reader: Any
) -> None:
    database = tmp_path / "held.duckdb"
    first_load(emulator, database, tmp_path)
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="while held")

    holder = reader(database)
    run = subprocess.Popen(
        [*CLI, "run", "--progress", "none"],
        cwd=tmp_path,
        env=environment(emulator, database),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    line = run.stderr.readline()  # the run's first line on stderr: it is waiting
    assert HELD in line and f"(PID {holder.pid})" in line, line
    holder.close()
    stdout, rest = run.communicate(timeout=120)
    assert run.returncode == 0, line + rest
    assert rest.count(HELD) == 0, "the wait is announced once"
    assert "waited         for " in stdout and f"(PID {holder.pid})" in stdout
    pipeline = attach(tmp_path, database)
    assert_user_conversations_mirror(pipeline, emulator.all_user_conversations())


# The CLI, paused as dlt makes a pipeline that has no state yet: it says "made" once the
# working folder is created and goes on when a line arrives on stdin.
PAUSED_AT_CREATION = """
import sys
from dlt.pipeline.pipeline import Pipeline
from twilio_conversations import cli

create = Pipeline._create_pipeline

def paused(self):
    create(self)
    print("made", flush=True)
    sys.stdin.readline()

Pipeline._create_pipeline = paused
sys.exit(cli.main(sys.argv[1:]))
"""


def test_second_run_of_a_new_pipeline_fails_before_it_touches_the_first_runs_folder(
    emulator: Any, tmp_path: Path
) -> None:
    """Two runs of a pipeline that has no state yet, started together in one folder: the second
    fails with one line before it makes its pipeline (dlt wipes the working folder of a
    pipeline without state as it makes it: the first run's, mid-creation). The first goes on
    and loads an exact mirror."""
    database = tmp_path / "new.duckdb"
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_AT_CREATION, "run", "--progress", "none"],
        cwd=tmp_path,
        env=environment(emulator, database),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdin is not None and first.stdout is not None
    assert first.stdout.readline().strip() == "made"  # the hook fired: paused mid-creation
    folder = tmp_path / ".dlt_data" / "pipelines" / "twilio_conversations"
    marker = folder / "made-by-the-first-run"
    marker.write_text("the first run's working folder")

    second = cli("run", "--progress", "none", cwd=tmp_path, env=environment(emulator, database))
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another run" in lines[0], second.stderr
    assert marker.exists(), "the second run wiped the first run's working folder"

    out, err = first.communicate("\n", timeout=120)
    assert first.returncode == 0, err
    assert_user_conversations_mirror(attach(tmp_path, database), emulator.all_user_conversations())


def test_run_that_waits_too_long_fails_with_one_line_and_the_next_run_loads_it(
    emulator: Any, run_pipeline: Any, tmp_path: Path, reader: Any
) -> None:
    """Held from the moment the load starts: extract and normalize ran without the file."""
    database = tmp_path / "test.duckdb"
    first = run_pipeline(emulator)
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="held at load")
    truth = emulator.all_user_conversations()

    hook = HoldAtLoad(lambda: reader(database))
    dlt_trace.TRACKING_MODULES.append(hook)
    try:
        with pytest.raises(DestinationLockedError) as failed:
            run_pipeline(emulator, lock_timeout=0)
    finally:
        dlt_trace.TRACKING_MODULES.remove(hook)
    assert hook.reader is not None
    message = str(failed.value)
    assert "\n" not in message and f"(PID {hook.reader.pid})" in message, message
    assert "lock_timeout" in message
    hook.reader.close()

    # Nothing lost: the package extracted while the file was free is loaded by the next run.
    second = run_pipeline(emulator)
    assert second.recovered_packages == 1
    assert_user_conversations_mirror(second.pipeline, truth)
    assert second.rows_written["user_conversations"] == 0  # already loaded with the package
    assert first.pipeline.pipeline_name == second.pipeline.pipeline_name


def test_reader_that_appears_at_load_is_waited_for(
    emulator: Any, run_pipeline: Any, tmp_path: Path, reader: Any
) -> None:
    database = tmp_path / "test.duckdb"
    run_pipeline(emulator)
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[1]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="reader at load")

    outcome, hook = run_with_a_reader_from(
        "load", lambda: run_pipeline(emulator), lambda: reader(database)
    )
    assert outcome.waited_for_lock is not None and f"(PID {hook.reader.pid})" in (
        outcome.waited_for_lock
    )
    assert outcome.rows_written["user_conversations"] > 0
    assert_user_conversations_mirror(outcome.pipeline, emulator.all_user_conversations())


def test_reader_that_appears_at_extract_holds_up_nothing_before_the_load(
    emulator: Any, run_pipeline: Any, tmp_path: Path, reader: Any
) -> None:
    """The fingerprints a re-run starts from are read before the extract, where the run waits
    for the file: the extract never opens it, so a reader arriving then is met at the load."""
    database = tmp_path / "test.duckdb"
    run_pipeline(emulator)
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[2]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="reader at extract")

    outcome, _ = run_with_a_reader_from(
        "extract", lambda: run_pipeline(emulator), lambda: reader(database)
    )
    assert outcome.rows_written["user_conversations"] > 0
    assert_user_conversations_mirror(outcome.pipeline, emulator.all_user_conversations())


@pytest.mark.parametrize("how", ["flag", "config"])
def test_cli_gives_up_with_exit_1_and_one_error_line(
    emulator: Any, tmp_path: Path, reader: Any, how: str
) -> None:
    """`--lock-timeout 0`, or `lock_timeout` from the config (here its environment form)."""
    database = tmp_path / "held.duckdb"
    first_load(emulator, database, tmp_path)
    holder = reader(database)
    flag = ["--lock-timeout", "0"] if how == "flag" else []
    extra = {"SOURCES__TWILIO_CONVERSATIONS__LOCK_TIMEOUT": "0"} if how == "config" else {}
    done = cli(
        "run",
        "--progress",
        "none",
        *flag,
        cwd=tmp_path,
        env=environment(emulator, database, **extra),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and f"(PID {holder.pid})" in errors[0], done.stderr
    assert "after 0 s (lock_timeout)" in errors[0], done.stderr
    assert len(lines) == 2 and HELD in lines[0], done.stderr  # the wait, then the verdict
    holder.close()


# -- FileAccess on its own: a fake clock, a fake file ---------------------------------------

CONFLICT = (
    'IO Error: Could not set lock on file "/x.duckdb": Conflicting lock is held in '
    "/usr/bin/python3 (PID 4242). However, you would be able to open this database in "
    "read-only mode"
)


class FakeFile:
    """Held for `held_checks` probes, then free; a clock that only the sleeps move."""

    def __init__(self, held_checks: int) -> None:
        self.held_checks = held_checks
        self.now = 0.0
        self.probes = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def check(self, path: str) -> None:
        self.probes += 1
        if self.probes <= self.held_checks:
            raise duckdb.IOException(CONFLICT)


def test_holder_is_read_from_duckdbs_message_and_its_causes() -> None:
    try:
        try:
            raise duckdb.IOException(CONFLICT)
        except duckdb.IOException as inner:
            raise RuntimeError("load failed") from inner
    except RuntimeError as outer:
        assert lock_holder(outer) == "/usr/bin/python3 (PID 4242)"
    assert lock_holder(RuntimeError("Could not set lock on file x")) == "another process"
    assert lock_holder(ValueError("nothing to do with locks")) is None


def test_step_is_retried_once_the_file_is_free(caplog: pytest.LogCaptureFixture) -> None:
    file = FakeFile(held_checks=3)
    access = FileAccess("/x.duckdb", 60, clock=file.clock, sleep=file.sleep, check=file.check)
    calls = []

    def step() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.IOException(CONFLICT)
        return "loaded"

    with caplog.at_level(logging.WARNING, "twilio_conversations"):
        assert access.call(step) == "loaded"
    assert len(calls) == 2 and file.probes == 4  # three held probes, then a free one
    assert access.waited_for == "/usr/bin/python3 (PID 4242)"
    waits = [r for r in caplog.records if HELD in r.getMessage()]
    assert len(waits) == 1, "announced once, however long the wait"


def test_wait_is_bounded_across_steps() -> None:
    file = FakeFile(held_checks=10**6)
    access = FileAccess("/x.duckdb", 5, clock=file.clock, sleep=file.sleep, check=file.check)

    def held() -> None:
        raise duckdb.IOException(CONFLICT)

    with pytest.raises(DestinationLockedError, match=r"after 5 s \(lock_timeout\)"):
        access.call(held)
    assert 5 <= file.now <= 5.5


def test_other_errors_and_other_destinations_are_not_waited_for() -> None:
    file = FakeFile(held_checks=0)
    access = FileAccess("/x.duckdb", 60, clock=file.clock, sleep=file.sleep, check=file.check)
    with pytest.raises(ValueError):
        access.call(lambda: (_ for _ in ()).throw(ValueError("boom")))
    remote = FileAccess(None, 60, clock=file.clock, sleep=file.sleep, check=file.check)
    with pytest.raises(duckdb.IOException):
        remote.call(lambda: (_ for _ in ()).throw(duckdb.IOException(CONFLICT)))
    assert file.probes == 0


# -- helpers ---------------------------------------------------------------------------------


class HoldAtLoad:
    """A dlt tracking module that starts a reader as the run first reaches `step`: "extract" as
    the extract starts, "load" as normalize ends, just before the load opens the file (which it
    does before dlt's load step starts, to hold it for all of the step's jobs)."""

    def __init__(self, start_reader: Any, step: str = "load") -> None:
        self.start_reader = start_reader
        self.step = step
        self.reader: Reader | None = None

    def on_start_trace(self, trace: Any, step: str, pipeline: Any) -> None:
        pass

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if self.step != "load" and step == self.step:
            self.start()

    def on_end_trace_step(self, trace: Any, step: Any, *args: Any) -> None:
        if self.step == "load" and step.step == "normalize":
            self.start()

    def on_end_trace(self, *args: Any) -> None:
        pass

    def start(self) -> None:
        if self.reader is None:
            self.reader = self.start_reader()


class CloseWhenAnnounced(logging.Handler):
    """Closes the reader (from another thread, as an analyst would) once the run says it waits."""

    def __init__(self, hook: HoldAtLoad) -> None:
        super().__init__(logging.WARNING)
        self.hook = hook
        self.fired = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if HELD in record.getMessage() and not self.fired.is_set():
            self.fired.set()
            assert self.hook.reader is not None
            threading.Thread(target=self.hook.reader.close).start()


def run_with_a_reader_from(step: str, run: Any, start_reader: Any) -> tuple[Any, HoldAtLoad]:
    """`run()` with a reader started as its first `step` starts and closed once the run says it
    waits; checks that both happened."""
    hook = HoldAtLoad(start_reader, step=step)
    announced = CloseWhenAnnounced(hook)
    logging.getLogger("twilio_conversations").addHandler(announced)
    dlt_trace.TRACKING_MODULES.append(hook)
    try:
        outcome = run()
    finally:
        dlt_trace.TRACKING_MODULES.remove(hook)
        logging.getLogger("twilio_conversations").removeHandler(announced)
    assert hook.reader is not None and announced.fired.is_set()
    return outcome, hook


def attach(cwd: Path, database: Path) -> Any:
    import dlt

    return dlt.pipeline(
        "twilio_conversations",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="twilio",
        pipelines_dir=str(cwd / "attached"),
    )
