"""Two first loads into one dataset from two pipeline folders (two containers, a cron job beside
a manual run with another `DLT_DATA_DIR`, two hosts on one volume) never store a row twice.

Both see an empty table; only the one holding the dataset's claim appends, the other refuses
with one line and writes nothing, and its next run merges (`first_load.py`). Each run is a real
process, the CLI's or a plain `pipeline.run(twilio_conversations())`, into one DuckDB file; the
expected rows are the emulator's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mirror import reading
from twilio_emulator import RequestGate

from .helpers import CLI, HERE, assert_exact_mirror, cli_env

# A plain dlt user's script: dlt's own pipeline in the folder argv[1], the source's settings
# from the environment; argv[2] names a crash point of crash_at.py, or "none".
PLAIN_DLT = """
import sys
import dlt

sys.path.insert(0, {here!r})
if sys.argv[2] != "none":
    import crash_at

    crash_at.install(sys.argv[2])
from twilio_conversations import twilio_conversations

pipeline = dlt.pipeline(
    "twilio_conversations",
    destination=dlt.destinations.duckdb({database!r}),
    dataset_name="twilio",
    pipelines_dir=sys.argv[1],
)
print(pipeline.run(twilio_conversations()))
"""


def is_user_conversations(path: str) -> bool:
    return "/Users/" in path and path.endswith("/Conversations")


def start(
    emu: Any, tmp_path: Path, folder: str, how: str, crash: str = "none", **extra: str
) -> Any:
    """A first load from the pipeline folder `tmp_path/folder`, by the CLI or plain dlt, into
    `tmp_path/test.duckdb`."""
    env = cli_env(emu, tmp_path, DLT_DATA_DIR=str(tmp_path / folder), **extra)
    if how == "cli":
        command = [*CLI, "run", "--progress", "none"]
        if crash != "none":
            command = [CLI[0], str(HERE / "crash_at.py"), crash, "run", "--progress", "none"]
            env["CRASH_MARKER"] = str(tmp_path / "crashed-at")
    else:
        script = PLAIN_DLT.format(here=str(HERE), database=str(tmp_path / "test.duckdb"))
        command = [sys.executable, "-c", script, str(tmp_path / folder / "pipelines"), crash]
        env["CRASH_MARKER"] = str(tmp_path / "crashed-at")
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: Any) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def first_to_end(*processes: Any) -> Any:
    """The process that ends first (each is waited for in a thread of its own)."""
    ended = threading.Event()
    first: list[Any] = []
    lock = threading.Lock()

    def wait(process: Any) -> None:
        process.wait(timeout=300)
        with lock:
            first.append(process)
        ended.set()

    for process in processes:
        threading.Thread(target=wait, args=(process,), daemon=True).start()
    assert ended.wait(timeout=300), "neither run ended"
    return first[0]


def keys(tmp_path: Path) -> tuple[int, int]:
    """Rows of user_conversations, and distinct keys among them."""
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        found = con.execute(
            "SELECT count(*), count(DISTINCT (chat_service_sid, user_sid, conversation_sid)) "
            "FROM twilio.user_conversations"
        ).fetchone()
    assert found is not None
    return found[0], found[1]


def assert_refused(code: int, stderr: str, how: str, holder: Path) -> None:
    """The run that found another first load in progress failed and said why, naming it."""
    assert code == 1, stderr
    if how == "cli":
        # One line, after any the wait for the DuckDB file the other run held printed.
        *waits, line = stderr.strip().splitlines()
        assert line.startswith("error: another first load into dataset 'twilio'"), stderr
        assert all("waiting up to" in wait for wait in waits), stderr
    else:  # dlt's traceback, ending with the connector's error
        assert "FirstLoadInProgressError: another first load into dataset 'twilio'" in stderr
    assert str(holder) in stderr, "the line names the pipeline folder holding the first load"


def die(emu: Any, tmp_path: Path, how: str, crash: str, **env: str) -> None:
    """A first load from folder `a` killed at `crash`, in parts of 10 users (the CLI's crash
    comes after the first of six)."""
    parts = {"SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD": "10"}
    code, stderr = finish(start(emu, tmp_path, "a", how, crash, **parts, **env))
    assert code == -9 and (tmp_path / "crashed-at").read_text() == crash, stderr


def assert_loaded_the_mirror(emu: Any, tmp_path: Path, code: int, stderr: str) -> None:
    """The run succeeded, and the file holds every key once and every row the API's."""
    assert code == 0, stderr
    rows, distinct = keys(tmp_path)
    assert rows == distinct == len(emu.all_user_conversations())
    assert_exact_mirror(reading(tmp_path / "test.duckdb", tmp_path / "reader"), emu)


@pytest.mark.parametrize("how", ["cli", "plain_dlt"])
def test_two_first_loads_at_once_store_every_row_once(
    start_emulator: Any, tmp_path: Path, how: str
) -> None:
    """Both start on an empty dataset; the users' conversations are held at the emulator until
    one of them has ended, so they are certainly at once. One appends, the other refuses; run
    again once the first has finished, it merges: every key once, every row the API's.

    The CLI's two start together (each waits while the other holds the DuckDB file). Plain
    dlt's second starts once the first fetches conversations: two plain dlt processes opening
    one DuckDB file at the same instant fail on DuckDB's own file lock, whichever that is."""
    emu = start_emulator(seed=7, services=2, users=30, max_conversations=5)
    gate = emu.gate = RequestGate(holds=is_user_conversations)
    a = start(emu, tmp_path, "a", how)
    if how == "plain_dlt":
        assert gate.wait_for_arrivals(1, timeout=120), "the first load never fetched"
    b = start(emu, tmp_path, "b", how)
    loser = first_to_end(a, b)
    winner, winner_folder = (b, "b") if loser is a else (a, "a")
    loser_folder = "a" if loser is a else "b"
    code, stderr = finish(loser)
    assert_refused(code, stderr, how, tmp_path / winner_folder)
    assert winner.poll() is None, "the first load that holds the claim is still held at the gate"

    gate.open()
    code, stderr = finish(winner)
    assert code == 0, stderr
    rows, distinct = keys(tmp_path)
    assert rows == distinct == len(emu.all_user_conversations())

    assert_loaded_the_mirror(emu, tmp_path, *finish(start(emu, tmp_path, loser_folder, how)))


@pytest.mark.parametrize(
    ("how", "crash"), [("cli", "after-part-1"), ("plain_dlt", "load-complete")]
)
def test_a_first_load_that_died_holds_the_dataset_until_its_pipeline_runs_again(
    start_emulator: Any, tmp_path: Path, how: str, crash: str
) -> None:
    """A first load killed with part of its rows loaded (the CLI after its first part; plain
    dlt with every job done but the load not recorded): another folder's run refuses rather
    than merge beside appends still to come; once the dead one's pipeline has run again, it
    merges."""
    emu = start_emulator(seed=7, services=2, users=30, max_conversations=5)
    die(emu, tmp_path, how, crash)
    rows, distinct = keys(tmp_path)
    assert 0 < rows == distinct
    if how == "cli":
        assert rows < len(emu.all_user_conversations())

    code, stderr = finish(start(emu, tmp_path, "b", how))
    assert_refused(code, stderr, how, tmp_path / "a")
    rows, distinct = keys(tmp_path)
    assert rows == distinct

    code, stderr = finish(start(emu, tmp_path, "a", how))
    assert code == 0, stderr
    assert_loaded_the_mirror(emu, tmp_path, *finish(start(emu, tmp_path, "b", how)))


@pytest.mark.parametrize(
    ("how", "crash"), [("cli", "after-part-1"), ("plain_dlt", "load-complete")]
)
def test_a_retry_with_the_same_first_load_holder_finishes_a_first_load_that_died(
    start_emulator: Any, tmp_path: Path, how: str, crash: str
) -> None:
    """Workers that keep nothing between runs (Airflow gives each task a fresh folder): the
    first load dies, and its retry, in another folder with the same `first_load_holder`, is the
    same writer: it finishes the load instead of refusing, every key once."""
    emu = start_emulator(seed=7, services=2, users=30, max_conversations=5)
    holder = {"SOURCES__TWILIO_CONVERSATIONS__FIRST_LOAD_HOLDER": "orchestrator:twilio"}
    die(emu, tmp_path, how, crash, **holder)
    assert_loaded_the_mirror(emu, tmp_path, *finish(start(emu, tmp_path, "b", how, **holder)))
