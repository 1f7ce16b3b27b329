"""First loads as users meet them: an empty account, fields null in every record, tables that
hold rows this pipeline's state does not know, and views that cannot be refreshed.

Runs are real CLI processes where the user would read stderr; expected rows and columns come
from the emulator's truth.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cli_process
import dlt
import duckdb
import pytest
from cli_process import emulator_env
from mirror import assert_user_conversations_mirror, loaded_rows, reading

TABLES = ("services", "users", "user_conversations")
VIEWS = ("user_conversation_summary", "service_summary", "stale_conversations")


def cli(emu: Any, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`run` against the emulator."""
    return cli_process.cli(
        "run",
        "--progress",
        "none",
        "--base-url",
        emu.base_url,
        *args,
        cwd=cwd,
        env=emulator_env(emu),
    )


def columns(path: Path, table: str) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'twilio' and table_name = ?",
            [table],
        ).fetchall()
    return {name: str(kind) for name, kind in rows}


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.parametrize("history", [False, True], ids=["mirror", "history"])
def test_empty_account_gets_every_table_typed_and_the_views(
    start_emulator: Any, tmp_path: Path, history: bool
) -> None:
    emu = start_emulator(seed=5, services=2, users=0)
    done = cli(emu, *(["--history"] if history else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "a successful first load prints no warnings"
    database = tmp_path / "twilio_conversations.duckdb"
    tables = TABLES + (("user_conversations_history",) if history else ())
    for table in tables:
        found = columns(database, table)
        assert found, f"{table} was not created"
    conversations = columns(database, "user_conversations")
    # Typed from the hints alone: no row ever reached these columns.
    assert conversations["date_updated"] == "TIMESTAMP WITH TIME ZONE"
    assert conversations["timers__date_closed"] == "TIMESTAMP WITH TIME ZONE"
    assert conversations["unread_messages_count"] == "BIGINT"
    assert conversations["links__participant"] == "VARCHAR"
    assert columns(database, "users")["is_online"] == "BOOLEAN"
    if history:
        assert {"_dlt_valid_from", "_dlt_valid_to"} <= columns(
            database, "user_conversations_history"
        ).keys()
    for view in VIEWS:
        assert query(database, f"select count(*) from twilio.{view}") is not None
    services = query(database, "select chat_service_sid, users from twilio.service_summary")
    assert sorted(services) == sorted((s["sid"], 0) for s in emu.services())

    # Users and conversations that arrive later land in the typed tables.
    service = emu.services()[0]["sid"]
    user = emu.store.create_user(service, "late@example.com")
    conversation = emu.store.create_conversation(service, friendly_name="later")
    emu.store.join(service, user, conversation)
    again = cli(emu, *(["--history"] if history else []), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert query(database, "select count(*) from twilio.user_conversations") == [(1,)]


def test_fields_null_in_every_record_get_their_columns_and_the_views_refresh(
    start_emulator: Any, tmp_path: Path
) -> None:
    emu = start_emulator(seed=5, services=2, users=3, max_conversations=3)
    store = emu.store
    for service in store.services.values():
        service.friendly_name = None
        for user in service.users.values():
            user.friendly_name = None
    for service in emu.services():
        assert service["friendly_name"] is None
    done = cli(emu, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no warning wall for all-null fields"
    database = tmp_path / "twilio_conversations.duckdb"
    assert columns(database, "services")["friendly_name"] == "VARCHAR"
    assert columns(database, "users")["friendly_name"] == "VARCHAR"
    names = query(database, "select distinct service_name from twilio.service_summary")
    assert names == [(None,)]
    summary = query(database, "select count(*) from twilio.user_conversation_summary")
    assert summary == [(sum(len(emu.users(s["sid"])) for s in emu.services()),)]


def test_a_view_that_cannot_be_refreshed_fails_the_run(emulator: Any, tmp_path: Path) -> None:
    assert cli(emulator, cwd=tmp_path).returncode == 0
    database = tmp_path / "twilio_conversations.duckdb"
    with duckdb.connect(str(database)) as con:  # an analyst's table where a view should be
        con.execute("drop view twilio.stale_conversations")
        con.execute("create table twilio.stale_conversations as select 1 as x")
    done = cli(emulator, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the data is loaded, but the views")
    assert "stale_conversations" in lines[0]


# -- the first-load append never duplicates keys -------------------------------------------


def test_state_lost_with_the_destination_kept_gets_no_duplicates(
    emulator: Any, run_pipeline: Any, isolated_dlt: Path
) -> None:
    """Local folder gone and the destination's stored state gone too (a restore of the
    tables only, or a state table someone cleaned up): the rows are there, the state is not."""
    first = run_pipeline(emulator)
    truth = emulator.all_user_conversations()
    assert_user_conversations_mirror(first.pipeline, truth)
    with first.pipeline.sql_client() as client:
        client.execute_sql(f"DELETE FROM {client.make_qualified_table_name('_dlt_pipeline_state')}")
    shutil.rmtree(isolated_dlt / "pipelines")

    second = run_pipeline(emulator)
    assert_user_conversations_mirror(second.pipeline, truth)  # fails on duplicate keys
    assert second.rows_written["user_conversations"] == len(truth)


def test_table_filled_by_another_pipeline_gets_no_duplicates(
    start_emulator: Any, emulator: Any, isolated_dlt: Path
) -> None:
    """Two pipelines writing one dataset (what the demo and `run` used to do in one folder)."""
    from twilio_conversations.credentials import TwilioCredentials
    from twilio_conversations.runner import make_pipeline, run

    database = dlt.destinations.duckdb(str(isolated_dlt / "shared.duckdb"))

    def load(emu: Any, name: str) -> Any:
        credentials = TwilioCredentials()
        credentials.account_sid = emu.account_sid
        credentials.auth_token = emu.auth_token
        pipeline = make_pipeline(
            database, progress=None, pipelines_dir=str(isolated_dlt / "p"), pipeline_name=name
        )
        run(pipeline, source_kwargs={"credentials": credentials, "base_url": emu.base_url})
        return pipeline

    load(emulator, "someone_else")
    pipeline = load(emulator, "twilio_conversations")
    # Same account, so the same keys: a blind append would have doubled every row.
    assert_user_conversations_mirror(pipeline, emulator.all_user_conversations())
    keys = loaded_rows(pipeline, "users", ["sid"])
    assert len(keys) == len({r["sid"] for r in keys})


# What a first load has done by its first request, seen from inside a fresh CLI process: the
# request's send records it and the run goes on (printed at the end).
FIRST_REQUEST_PROBE = """
import json
import sys
import dlt
from twilio_conversations import cli, transport

seen = []
sql_clients = []
send = transport.ApiSession.send
sql_client = dlt.Pipeline.sql_client

def recording(self, request, **kwargs):
    if not seen:
        seen.append(("records imported", "twilio_conversations.records" in sys.modules))
        seen.append(("sql clients in the extract", sql_clients.count("extract")))
    return send(self, request, **kwargs)

def counting(self, *args, **kwargs):
    sql_clients.append("extract" if extracting else "")
    return sql_client(self, *args, **kwargs)

extracting = False
extract = dlt.Pipeline.extract
def marking(self, *args, **kwargs):
    global extracting
    extracting = True
    try:
        return extract(self, *args, **kwargs)
    finally:
        extracting = False

transport.ApiSession.send = recording
dlt.Pipeline.sql_client = counting
dlt.Pipeline.extract = marking
code = cli.main(sys.argv[1:])
print(json.dumps(dict(seen)))
sys.exit(code)
"""


def test_the_first_request_of_a_first_load_waits_for_neither_pyarrow_nor_a_client(
    emulator: Any, tmp_path: Path
) -> None:
    """Start-up: the empty table that gives a first load its typed table is built at the end
    (building it imports pyarrow's compute functions, ~0.15 s), and whether the destination
    can hold the fingerprints is told by its client class, not by building an SQL client
    (~40 ms each, twice): the one SQL client before the first request is the first-load
    claim's. The run is still a mirror."""
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST_PROBE, "run", "--progress", "none"],
        cwd=tmp_path,
        env=emulator_env(emulator, SOURCES__TWILIO_CONVERSATIONS__BASE_URL=emulator.base_url),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"records imported": False, "sql clients in the extract": 1}, seen
    reader = reading(tmp_path / "twilio_conversations.duckdb", tmp_path / "reader")
    assert_user_conversations_mirror(reader, emulator.all_user_conversations())


# -- which loads append ------------------------------------------------------------------------


def disposition(pipeline: Any) -> str:
    """How the last load that wrote user_conversations wrote it (the stored schema keeps it)."""
    return str(pipeline.default_schema.tables["user_conversations"]["write_disposition"])


def join_a_conversation(emu: Any) -> None:
    """A change for the next run to write: a user joins a new conversation."""
    service = emu.services()[0]["sid"]
    user = emu.users(service)[0]["sid"]
    emu.store.join(service, user, emu.store.create_conversation(service, friendly_name="new"))


def test_first_loads_append_and_later_runs_merge_on_every_destination(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    """A first load and a full refresh append (no staging copy); a later run merges. The claim
    each takes is the destination's own, on DuckDB and PostgreSQL alike."""
    truth = emulator.all_user_conversations()
    first = run_pipeline(emulator, **destination)
    assert disposition(first.pipeline) == "append"
    assert_user_conversations_mirror(first.pipeline, truth)
    join_a_conversation(emulator)
    truth = emulator.all_user_conversations()
    again = run_pipeline(emulator, **destination)
    assert again.rows_written["user_conversations"] > 0
    assert disposition(again.pipeline) == "merge"
    refreshed = run_pipeline(emulator, full_refresh=True, **destination)
    assert disposition(refreshed.pipeline) == "append"
    assert refreshed.rows_written["user_conversations"] == len(truth)
    assert_user_conversations_mirror(refreshed.pipeline, truth)


def test_plain_dlt_appends_its_first_load_and_after_a_refresh(
    emulator: Any, isolated_dlt: Path
) -> None:
    """`pipeline.run(twilio_conversations())`, no runner: the source takes the claim itself."""
    from twilio_conversations import twilio_conversations
    from twilio_conversations.credentials import TwilioCredentials

    credentials = TwilioCredentials()
    credentials.account_sid = emulator.account_sid
    credentials.auth_token = emulator.auth_token
    pipeline = dlt.pipeline(
        "plain",
        destination=dlt.destinations.duckdb(str(isolated_dlt / "plain.duckdb")),
        dataset_name="twilio",
        pipelines_dir=str(isolated_dlt / "pipelines"),
    )
    truth = emulator.all_user_conversations()

    def source() -> Any:
        return twilio_conversations(credentials=credentials, base_url=emulator.base_url)

    pipeline.run(source())
    assert disposition(pipeline) == "append"
    join_a_conversation(emulator)
    truth = emulator.all_user_conversations()
    pipeline.run(source())
    assert disposition(pipeline) == "merge"
    pipeline.run(source(), refresh="drop_sources")
    assert disposition(pipeline) == "append"
    assert_user_conversations_mirror(pipeline, truth)
