"""What an operator sees from `twilio-conversations`: progress while a run goes, Ctrl-C, closed
pipes, errors that say what to do, and exit codes (docs/scheduling.md). Real processes against
the emulator on loopback and real DuckDB files; a point in a run is reached by holding the
emulator's requests (or a load job), never by sleeping."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import duckdb
import pytest
from conftest import free_port
from twilio_emulator import RequestGate

# The console script, with the progress cadence and the retry-announcement threshold set from
# the environment: the product's values (10 s, 5 s) are module constants.
LAUNCHER = """
import os, sys
from twilio_conversations import progress
progress.INTERVAL_S = float(os.environ.get("TEST_PROGRESS_INTERVAL", progress.INTERVAL_S))
progress.ANNOUNCE_WAIT_S = float(os.environ.get("TEST_ANNOUNCE_WAIT", progress.ANNOUNCE_WAIT_S))
blocked = [name for name in os.environ.get("TEST_BLOCK_IMPORTS", "").split(",") if name]

class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
from twilio_conversations.cli import console_main
sys.argv = ["twilio-conversations", *sys.argv[1:]]
console_main()
"""
COMMAND = [sys.executable, "-c", LAUNCHER]

# A dlt destination whose first load job waits until the test writes to the fifo SINK_GATE.
BLOCKING_SINK = """
import os, sys, threading
import dlt

_first = threading.Lock()

@dlt.destination(batch_size=0, loader_file_format="parquet", name="blocking_sink")
def sink(items, table) -> None:
    if _first.acquire(blocking=False):
        sys.stderr.write("sink: loading\\n")
        sys.stderr.flush()
        with open(os.environ["SINK_GATE"]) as gate:
            gate.read(1)
"""

INTERRUPTED_IN_EXTRACT = (
    "interrupted: nothing of this run was loaded; the next run starts again from the last "
    "completed load"
)
INTERRUPTED_IN_LOAD = "interrupted: the load did not complete; the next run loads what is missing"


def environment(emu: Any, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        **extra,
    }
    return env


def launch(cwd: Path, env: dict[str, str], *args: str, **popen: Any) -> subprocess.Popen[str]:
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    options.update(popen)
    return subprocess.Popen([*COMMAND, *args], cwd=cwd, env=env, text=True, **options)


def finished(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


class Lines:
    """A stream read line by line in a thread, so a test can wait for a line with a bound."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = 60) -> str:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"the stream ended without the line; got {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def rest(self) -> list[str]:
        self._thread.join(timeout=120)
        while (line := self._queue.get()) is not None:
            self.seen.append(line)
        return self.seen


class HoldFrom(RequestGate):
    """Lets the first `passed` requests through and holds every later one until `open`."""

    def __init__(self, passed: int) -> None:
        super().__init__()
        self._passed = passed

    def hold(self, path: str = "") -> None:
        with self._cond:
            if self.arrivals < self._passed:
                self.arrivals += 1
                return
        super().hold(path)


def loaded_packages(dlt_data_dir: Path) -> list[Path]:
    """The load packages dlt has loaded, in the CLI pipeline's folder."""
    loaded = dlt_data_dir / "pipelines" / "twilio_conversations" / "load" / "loaded"
    return list(loaded.iterdir()) if loaded.exists() else []


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for a condition another process makes true (a file appearing), checked every 20 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def user_count(emu: Any) -> int:
    return sum(len(emu.users(service["sid"])) for service in emu.services())


def table_count(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute(f"select count(*) from twilio.{table}").fetchall()[0][0])


# -- progress ----------------------------------------------------------------------------------


def test_unchanged_rerun_shows_users_requests_and_429s_while_it_goes(
    emulator: Any, tmp_path: Path
) -> None:
    env = environment(emulator, TEST_PROGRESS_INTERVAL="0.01", TEST_ANNOUNCE_WAIT="0")
    first = finished(tmp_path, env, "run", "--progress", "none")
    assert first.returncode == 0, first.stderr
    requests = emulator.stats.snapshot().total
    users = user_count(emulator)

    # The re-run changes nothing; three of its conversation pages get a 429 first, and its very
    # last request (always a conversation page: every service has users) is held, so the
    # counters stand still at known values until the test lets it go.
    emulator.stats.reset()
    emulator.faults.inject("429", count=3, path_contains="/Conversations")
    retried = requests + 3
    gate = emulator.gate = HoldFrom(retried - 1)
    child = launch(tmp_path, env, "run", "--progress", "log")
    out = Lines(child.stdout)  # type: ignore[arg-type]
    try:
        # Both counters stand still once the held request is the only one left: wait for a
        # line with both (the responses are counted before the extract has judged them).
        line = out.wait_for(
            lambda text: (
                f" {retried - 1:,} requests" in text and f"users {users - 1:,} scanned" in text
            )
        )
    finally:
        gate.open()
    stdout = out.rest()
    stderr = child.stderr.read()  # type: ignore[union-attr]
    assert child.wait(timeout=120) == 0, stderr

    assert line.startswith("progress ") and " extract · " in line, line
    # "of N": the re-run knows how many users the destination holds
    assert f"users {users - 1:,} scanned of ~{users:,}, 0 changed" in line, line
    assert "0 rows to write" in line, line
    assert "3 retries (3 x 429)" in line, line
    # A long wait is announced once per reason, not once per retry.
    announced = [text for text in stdout if text.startswith("waiting ")]
    assert len(announced) == 1 and "to retry http://127.0.0.1:" in announced[0], stdout
    assert announced[0].endswith(" after 429 (attempt 1 of 10)"), announced
    assert "  rows written   services 0 · users 0 · user_conversations 0" in stdout
    assert stderr == ""


def test_a_terminal_gets_progress_without_asking(emulator: Any, tmp_path: Path) -> None:
    gate = emulator.gate = RequestGate()
    controller, terminal = pty.openpty()
    child = launch(
        tmp_path,
        environment(emulator, TEST_PROGRESS_INTERVAL="0.01"),
        "run",
        stdout=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        assert gate.wait_for_arrivals(1)  # held: the run cannot end before the test has looked
        while b"\nprogress " not in b"\n" + seen:
            readable, _, _ = select.select([controller], [], [], 60)
            assert readable, f"no progress line on the terminal; got {seen!r}"
            seen += os.read(controller, 4096)
    finally:
        gate.open()
    try:
        while chunk := os.read(controller, 4096):
            seen += chunk
    except OSError:  # EIO: the child closed the terminal
        pass
    os.close(controller)
    stderr = child.stderr.read()  # type: ignore[union-attr]
    assert child.wait(timeout=120) == 0, stderr
    assert b"twilio_conversations: loaded into duckdb" in seen


def test_a_successful_run_off_a_terminal_prints_only_the_summary(
    emulator: Any, tmp_path: Path
) -> None:
    env = environment(emulator, TEST_PROGRESS_INTERVAL="0.01", TEST_ANNOUNCE_WAIT="0")
    done = finished(tmp_path, env, "run")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("twilio_conversations: loaded into duckdb dataset twilio in ")
    assert all(line.startswith("  ") for line in lines[1:]), done.stdout
    assert len(lines) == 6, done.stdout


def test_json_sends_the_progress_lines_to_stderr_and_one_object_to_stdout(
    emulator: Any, tmp_path: Path
) -> None:
    env = environment(emulator, TEST_PROGRESS_INTERVAL="0.01")
    done = finished(tmp_path, env, "run", "--progress", "log", "--json")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    record = json.loads(line)
    assert record["rows_written"]["user_conversations"] == len(emulator.all_user_conversations())
    progress = done.stderr.splitlines()
    assert progress and all(line.startswith("progress ") for line in progress), done.stderr


def test_demo_prints_the_summary_and_queries_without_dlts_progress(tmp_path: Path) -> None:
    done = finished(tmp_path, {**os.environ, "TEST_PROGRESS_INTERVAL": "0.01"}, "demo")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("emulator serving demo data at http://127.0.0.1:")
    assert lines[1].startswith("twilio_conversations: loaded into duckdb dataset twilio in ")
    dlt_progress = re.compile(r"^(-+ (Extract|Normalize|Load) |Resources: |progress )")
    assert not [line for line in lines if dlt_progress.match(line)], done.stdout


def test_filesystem_runs_write_no_dlt_log_lines_and_say_once_that_they_append(
    emulator: Any, tmp_path: Path
) -> None:
    env = environment(emulator, DESTINATION__FILESYSTEM__BUCKET_URL=(tmp_path / "b").as_uri())
    first = finished(tmp_path, env, "run", "--destination", "filesystem")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    appended = [line for line in first.stdout.splitlines() if "appended" in line]
    assert appended == [
        "  appended       services, user_conversations, users: filesystem cannot merge, "
        "changed rows are added "
        "(docs/destinations.md)"
    ], first.stdout
    # Back to DuckDB: dlt warns that the destination differs from the state's; nothing shows.
    switched = finished(tmp_path, env, "run")
    assert switched.returncode == 0, switched.stderr
    assert switched.stderr == ""
    assert "dlt warning" not in switched.stdout


def test_a_failed_run_in_one_log_file_keeps_its_lines_in_order(tmp_path: Path) -> None:
    """cron's `>>log 2>&1`: the retry line (stdout) lands before the error line (stderr)."""
    log = tmp_path / "run.log"
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 31 + "1",
        "TWILIO_AUTH_TOKEN": "token",
        "SOURCES__TWILIO_CONVERSATIONS__REQUEST_MAX_ATTEMPTS": "3",
        "TEST_ANNOUNCE_WAIT": "0",
    }
    env.pop("PYTHONUNBUFFERED", None)  # stdout block-buffered into the file, as under cron
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with log.open("w") as handle:
        code = subprocess.run(
            [*COMMAND, "run", "--progress", "log", "--base-url", refused],
            cwd=tmp_path,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=120,
        ).returncode
    assert code == 1
    lines = log.read_text().splitlines()
    announced = [line for line in lines if line.startswith("waiting ")]
    assert len(announced) == 1, lines
    assert announced[0].endswith("after ConnectionError (attempt 1 of 3)"), announced
    assert re.fullmatch(
        rf"error: could not reach {re.escape(refused)}: connection refused \(3 attempt\(s\) in "
        r"\d+ s\); check that base_url is right and that the server is up \(the emulator: "
        r"`twilio-emulator`; a proxy, if one is configured\)",
        lines[-1],
    ), lines
    assert lines.index(announced[0]) < len(lines) - 1


# -- Ctrl-C and closed pipes ---------------------------------------------------------------------


def test_ctrl_c_while_reading_the_api_prints_one_line_and_exits_130(
    emulator: Any, tmp_path: Path
) -> None:
    gate = emulator.gate = RequestGate()
    child = launch(tmp_path, environment(emulator), "run", "--progress", "none")
    try:
        assert gate.wait_for_arrivals(1)  # the run is extracting: its first request is held
        child.send_signal(signal.SIGINT)
    finally:
        gate.open()
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert stderr.splitlines() == [INTERRUPTED_IN_EXTRACT]
    assert stdout == ""

    # As the line says: the next run starts over and loads everything.
    emulator.gate = None
    again = finished(tmp_path, environment(emulator), "run", "--progress", "none")
    assert again.returncode == 0, again.stderr
    assert "recovered" not in again.stdout
    rows = len(emulator.all_user_conversations())
    assert table_count(tmp_path / "twilio_conversations.duckdb", "user_conversations") == rows


def test_ctrl_c_during_a_load_job_prints_one_line_and_exits_130(
    emulator: Any, tmp_path: Path
) -> None:
    (tmp_path / "blocking_sink.py").write_text(BLOCKING_SINK)
    fifo = tmp_path / "sink.gate"
    os.mkfifo(fifo)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = environment(emulator, PYTHONPATH=path, SINK_GATE=str(fifo))
    child = launch(tmp_path, env, "run", "--destination", "blocking_sink.sink")
    err = Lines(child.stderr)  # type: ignore[arg-type]
    try:
        err.wait_for(lambda line: line == "sink: loading")
        child.send_signal(signal.SIGINT)
    finally:
        with fifo.open("w") as gate:
            gate.write("go")
    stderr = err.rest()
    assert child.wait(timeout=120) == 130, stderr
    assert stderr == ["sink: loading", INTERRUPTED_IN_LOAD]
    assert child.stdout.read() == ""  # type: ignore[union-attr]


def test_ctrl_c_while_the_load_waits_for_the_duckdb_file_and_the_next_run_finishes(
    emulator: Any, tmp_path: Path
) -> None:
    database = tmp_path / "twilio_conversations.duckdb"
    gate = emulator.gate = RequestGate()
    child = launch(tmp_path, environment(emulator), "run", "--progress", "none")
    err = Lines(child.stderr)  # type: ignore[arg-type]
    reader = None
    try:
        assert gate.wait_for_arrivals(1)  # extracting: the state sync is done with the file
        reader = duckdb.connect(str(database))  # an analyst's session holds the file
    finally:
        gate.open()
    try:
        err.wait_for(lambda line: "is held open by" in line)  # the load is waiting
        child.send_signal(signal.SIGINT)
        stderr = err.rest()
        assert child.wait(timeout=120) == 130, stderr
    finally:
        reader.close()
    assert stderr[-1] == INTERRUPTED_IN_LOAD and len(stderr) == 2, stderr

    # As the line says: the next run loads what is missing (after an interrupted first load
    # dlt starts over rather than finishing the package).
    emulator.gate = None
    again = finished(tmp_path, environment(emulator), "run", "--progress", "none")
    assert again.returncode == 0, again.stderr
    rows = len(emulator.all_user_conversations())
    assert table_count(database, "user_conversations") == rows


def test_ctrl_c_after_parts_of_a_run_were_loaded_says_so_and_the_next_run_loads_the_rest(
    emulator: Any, tmp_path: Path
) -> None:
    env = environment(
        emulator,
        SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD="5",
        SOURCES__TWILIO_CONVERSATIONS__KEEP_LOADED_PACKAGES="100",  # to count the parts
        DLT_DATA_DIR=str(tmp_path / "dlt"),
    )
    elsewhere = tmp_path / "measure"
    elsewhere.mkdir()
    measured = finished(elsewhere, {**env, "DLT_DATA_DIR": str(elsewhere / "dlt")}, "run")
    assert measured.returncode == 0, measured.stderr
    requests = emulator.stats.snapshot().total  # of the same first load, in parts of 5 users
    parts = len(loaded_packages(elsewhere / "dlt"))

    emulator.stats.reset()
    gate = emulator.gate = HoldFrom(requests - 1)
    child = launch(tmp_path, env, "run")
    try:
        # The last request is held, so the last part cannot end; the parts before it load (one
        # may still be loading when the request arrives: a part ends where the last fetches
        # drain).
        assert gate.wait_for_arrivals(requests)
        assert parts > 1
        wait_until(lambda: len(loaded_packages(tmp_path / "dlt")) == parts - 1)
        child.send_signal(signal.SIGINT)
    finally:
        gate.open()
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    # One line. Which one depends on the instant the signal lands: in the last part's extract,
    # or while the part before it is still being finished (its file closed, its step ended).
    assert re.fullmatch(
        r"interrupted: [1-9]\d* part\(s\) of this run are loaded; the next run loads the rest\n"
        r"|interrupted after a load: what was loaded stays; the next run goes on from there\n"
        rf"|{INTERRUPTED_IN_LOAD}\n",
        stderr,
    ), stderr

    emulator.gate = None
    again = finished(tmp_path, env, "run")
    assert again.returncode == 0, again.stderr
    rows = len(emulator.all_user_conversations())
    written = re.search(r"user_conversations ([\d,]+)", again.stdout)
    assert written and 0 < int(written.group(1).replace(",", "")) < rows, again.stdout
    assert table_count(tmp_path / "twilio_conversations.duckdb", "user_conversations") == rows


@pytest.mark.parametrize("command", [["demo"], ["run", "--progress", "log"]])
def test_a_reader_that_goes_away_ends_the_output_not_the_run(
    emulator: Any, tmp_path: Path, command: list[str]
) -> None:
    """`twilio-conversations demo | head -3`: no `error: [Errno 32] Broken pipe`."""
    env = environment(emulator, TEST_PROGRESS_INTERVAL="0.01")
    child = launch(tmp_path, env, *command)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()
    child.stdout.close()  # every later write meets a closed pipe
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 0, stderr
    assert stderr == ""


# -- errors that say what to do ------------------------------------------------------------------


def test_unknown_destination_is_bad_configuration_and_names_the_valid_ones(
    tmp_path: Path,
) -> None:
    done = finished(tmp_path, dict(os.environ), "run", "--destination", "duckdbb")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: unknown destination 'duckdbb' (did you mean duckdb?): use one")
    for name in ("duckdb", "postgres", "filesystem", "bigquery", "snowflake"):
        assert f" {name}," in line, line
    assert line.endswith("or the name of a destination configured with a destination_type")


@pytest.mark.parametrize(
    ("destination", "blocked", "env", "extra"),
    [
        (
            "postgres",
            "psycopg2,adbc_driver_postgresql",
            {"DESTINATION__POSTGRES__CREDENTIALS": "postgresql://u:p@127.0.0.1:9/db"},
            "postgres",
        ),
        (
            "filesystem",
            "s3fs,botocore",
            {
                "DESTINATION__FILESYSTEM__BUCKET_URL": "s3://bucket/twilio",
                "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_ACCESS_KEY_ID": "AKIA0000",
                "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_SECRET_ACCESS_KEY": "secret",
            },
            "filesystem",
        ),
    ],
)
def test_a_destination_without_its_driver_names_the_extra(
    emulator: Any,
    tmp_path: Path,
    destination: str,
    blocked: str,
    env: dict[str, str],
    extra: str,
) -> None:
    done = finished(
        tmp_path,
        environment(emulator, TEST_BLOCK_IMPORTS=blocked, **env),
        "run",
        "--destination",
        destination,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: the {destination} destination needs packages that are not installed: "
        f"pip install 'twilio-conversations[{extra}]'"
    ]


def test_dlts_connection_preamble_is_dropped_so_the_reason_comes_first(
    emulator: Any, tmp_path: Path
) -> None:
    database = tmp_path / "twilio_conversations.duckdb"
    database.write_text("not a database")
    # No state sync first, so the full refresh's first step opens the file itself.
    env = environment(emulator, RESTORE_FROM_DESTINATION="false")
    done = finished(tmp_path, env, "run", "--full-refresh", "--progress", "none")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f'error: IO Error: The file "{database}" exists, but it is not a valid DuckDB database '
        "file!"
    ]


def test_a_base_url_with_a_path_is_refused_quoting_what_was_given(tmp_path: Path) -> None:
    env = {**os.environ, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t"}
    done = finished(tmp_path, env, "run", "--base-url", "http://127.0.0.1:8080/v1")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "http://127.0.0.1:8080/v1" in line, line


def test_the_cron_recipes_lock_file_leaves_the_checkout_clean() -> None:
    repository = Path(__file__).parents[2]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".cron.lock"], cwd=repository, capture_output=True
    )
    assert ignored.returncode == 0, "deploy/cron's flock creates .cron.lock in the checkout"


def test_progress_line_says_of_how_many_users_where_a_total_is_known() -> None:
    from twilio_conversations.progress import progress_line
    from twilio_conversations.report import RunReport

    report = RunReport(users_scanned=1234, users_changed=5, users_known=6000)
    assert progress_line(report, None, 20.0).startswith(
        "progress 20 s  starting · users 1,234 scanned of ~6,000, 5 changed · "
    )
    # A guess (what the destination held after the last run), never shown once it is wrong.
    beyond = RunReport(users_scanned=2500, users_changed=5, users_known=120)
    assert progress_line(beyond, None, 20.0).startswith(
        "progress 20 s  starting · users 2,500 scanned, 5 changed · "
    )


def test_progress_line_says_which_part_of_the_run_is_loading() -> None:
    from twilio_conversations.progress import StepCounter, progress_line
    from twilio_conversations.report import RunReport

    steps = StepCounter()
    report = RunReport()
    with steps("Load"):  # a load before the run's first extract: an earlier run's package
        assert progress_line(report, steps, 1.0).startswith("progress 1 s  load · ")
    for part in (1, 2):
        for step in ("Extract", "Normalize", "Load"):
            with steps(step):
                line = progress_line(report, steps, 1.0)
                assert line.startswith(f"progress 1 s  part {part}: {step.lower()} · "), line
