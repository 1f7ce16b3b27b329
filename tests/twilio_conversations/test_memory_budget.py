"""DuckDB's memory budgets (first loads, merging loads): which settings the load step's DuckDB
really gets.

A spy plugged into dlt's step hooks opens the destination as the load step is about to, and
asks DuckDB for its settings; no timing or memory figure is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.pipeline import trace as dlt_trace
from duckdb_settings import DEFAULTS, DuckDbSettingsAtLoad, duckdb_settings
from mirror import assert_user_conversations_mirror
from twilio_conversations import loading

BUDGET = dict(loading.FIRST_LOAD_DUCKDB_CONFIG)
MERGE_BUDGET = dict(loading.MERGE_DUCKDB_CONFIG)


@pytest.mark.parametrize("configured", ["factory", "environment"])
def test_first_load_runs_in_its_budget_and_a_merging_run_in_the_merge_budget(
    emulator: Any,
    run_pipeline: Any,
    settings_at_load: DuckDbSettingsAtLoad,
    isolated_dlt: Path,
    monkeypatch: pytest.MonkeyPatch,
    configured: str,
) -> None:
    database = isolated_dlt / "test.duckdb"
    if configured == "environment":  # as the CLI and the benchmarks configure it
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(database))
        destination: Any = "duckdb"
    else:
        destination = dlt.destinations.duckdb(str(database))
    first = run_pipeline(emulator, destination=destination)
    assert_user_conversations_mirror(first.pipeline, emulator.all_user_conversations())
    assert settings_at_load.seen == [duckdb_settings(BUDGET)]

    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="budget test")
    second = run_pipeline(emulator, destination=destination)
    assert second.rows_written["user_conversations"] > 0
    assert_user_conversations_mirror(second.pipeline, emulator.all_user_conversations())
    # The merge gets its own budget: the first load's did not stick to the pipeline.
    assert settings_at_load.seen[1:] == [duckdb_settings(MERGE_BUDGET)]
    assert duckdb_settings(MERGE_BUDGET) != DEFAULTS


def test_a_crashed_runs_leftover_package_is_loaded_in_the_merge_budget(
    emulator: Any,
    run_pipeline: Any,
    settings_at_load: DuckDbSettingsAtLoad,
    isolated_dlt: Path,
) -> None:
    """A run that died after normalize leaves a package merging into the tables; the next run
    loads it before its own extract, in the merge budget (not DuckDB's defaults), and the mirror
    is exact."""
    from twilio_conversations import twilio_conversations

    destination = dlt.destinations.duckdb(str(isolated_dlt / "test.duckdb"))
    first = run_pipeline(emulator, destination=destination)
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="left behind")
    # The crashed run: extract and normalize, never load.
    credentials = {"account_sid": emulator.account_sid, "auth_token": emulator.auth_token}
    first.pipeline.extract(
        twilio_conversations(base_url=emulator.base_url, credentials=credentials)
    )
    first.pipeline.normalize()
    assert first.pipeline.list_normalized_load_packages()

    recovered = run_pipeline(emulator, destination=destination)
    assert recovered.recovered_packages == 1
    assert settings_at_load.seen[:2] == [duckdb_settings(BUDGET), duckdb_settings(MERGE_BUDGET)]
    assert_user_conversations_mirror(recovered.pipeline, emulator.all_user_conversations())


def test_configured_global_config_replaces_the_budget(
    emulator: Any,
    run_pipeline: Any,
    settings_at_load: DuckDbSettingsAtLoad,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "1GB"}')
    first = run_pipeline(emulator)
    assert_user_conversations_mirror(first.pipeline, emulator.all_user_conversations())
    assert settings_at_load.seen == [(duckdb_settings({"memory_limit": "1GB"})[0], DEFAULTS[1])]


def test_history_first_load_is_a_merge(
    emulator: Any, run_pipeline: Any, settings_at_load: DuckDbSettingsAtLoad
) -> None:
    """History merges (`scd2`) every row even on a first load."""
    run_pipeline(emulator, history=True)
    assert settings_at_load.seen == [duckdb_settings(MERGE_BUDGET)]


def test_full_refresh_is_budgeted(
    emulator: Any, run_pipeline: Any, settings_at_load: DuckDbSettingsAtLoad
) -> None:
    run_pipeline(emulator)
    refreshed = run_pipeline(emulator, full_refresh=True)
    assert_user_conversations_mirror(refreshed.pipeline, emulator.all_user_conversations())
    assert settings_at_load.seen == [duckdb_settings(BUDGET)] * 2


def test_load_out_of_memory_in_the_budget_is_finished_with_defaults(
    emulator: Any,
    run_pipeline: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A budget too small for any insert stands in for a first load too big for 64 MB.
    monkeypatch.setattr(loading, "FIRST_LOAD_DUCKDB_CONFIG", {"memory_limit": "1MB", "threads": 1})
    truth = emulator.all_user_conversations()
    first = run_pipeline(emulator)
    assert "ran out of its memory budget" in caplog.text
    assert first.rows_written["user_conversations"] == len(truth)
    assert_user_conversations_mirror(first.pipeline, truth)
    second = run_pipeline(emulator)
    assert second.rows_written == {"services": 0, "users": 0, "user_conversations": 0}


def test_merge_out_of_memory_in_the_budget_is_finished_with_defaults(
    emulator: Any,
    run_pipeline: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A merge too big for its budget (1 MB stands in for more than ~25,000 rows in 128 MB)
    fails inside DuckDB's transaction; loading the package again with the defaults merges
    each row once: no duplicate from the copy into staging that ran before it."""
    run_pipeline(emulator)
    service = emulator.services()[0]["sid"]
    for user in emulator.users(service)[:3]:
        for row in emulator.user_conversations(service, user["sid"])[:2]:
            emulator.store.update_conversation(
                service, row["conversation_sid"], friendly_name=f"renamed for {user['sid']}"
            )
    monkeypatch.setattr(loading, "MERGE_DUCKDB_CONFIG", {"memory_limit": "1MB"})
    truth = emulator.all_user_conversations()
    second = run_pipeline(emulator)
    assert "ran out of its memory budget" in caplog.text
    assert second.rows_written["user_conversations"] > 0
    assert_user_conversations_mirror(second.pipeline, truth)  # fails on duplicate keys
    third = run_pipeline(emulator)
    assert third.rows_written == {"services": 0, "users": 0, "user_conversations": 0}


class OpensDuringTheLoad:
    """A dlt tracking module plus a wrapper of `duckdb.connect`: counts the opens of `database`
    from the end of each normalize (the load is next) to the end of the load, and each load's
    jobs."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.counting = False
        self.opens: list[int] = []
        self.jobs: list[int] = []

    def connect(self, connect: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            path = kwargs.get("database", args[0] if args else None)
            if self.counting and path is not None and Path(str(path)) == self.database:
                self.opens[-1] += 1
            return connect(*args, **kwargs)

        return counted

    def on_start_trace(self, *args: Any) -> None:
        pass

    def on_start_trace_step(self, *args: Any) -> None:
        pass

    def on_end_trace_step(self, trace: Any, step: Any, pipeline: Any, info: Any, *_: Any) -> None:
        if step.step == "normalize":
            self.counting = True
            self.opens.append(0)
        elif step.step == "load":
            self.counting = False
            self.jobs.append(sum(len(p.jobs["completed_jobs"]) for p in info.load_packages))

    def on_end_trace(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("global_config", [None, '{"memory_limit": "1GB"}'])
def test_a_load_opens_the_database_file_once_for_all_its_jobs(
    emulator: Any,
    run_pipeline: Any,
    isolated_dlt: Path,
    monkeypatch: pytest.MonkeyPatch,
    global_config: str | None,
) -> None:
    """dlt opens and closes the file for each job; the runner holds it open for the load's
    jobs, in the budget or the configured settings alike, and closes it checkpointed (no
    write-ahead log left for a reader to replay)."""
    import duckdb

    if global_config:
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", global_config)
    database = isolated_dlt / "test.duckdb"
    spy = OpensDuringTheLoad(database)
    monkeypatch.setattr(duckdb, "connect", spy.connect(duckdb.connect))
    monkeypatch.setattr(dlt_trace, "TRACKING_MODULES", [*dlt_trace.TRACKING_MODULES, spy])
    first = run_pipeline(emulator, destination=dlt.destinations.duckdb(str(database)))
    assert_user_conversations_mirror(first.pipeline, emulator.all_user_conversations())

    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]["sid"]
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    emulator.store.update_conversation(service, conversation, friendly_name="opened once")
    second = run_pipeline(emulator, destination=dlt.destinations.duckdb(str(database)))
    assert_user_conversations_mirror(second.pipeline, emulator.all_user_conversations())

    assert len(spy.jobs) == 2 and min(spy.jobs) > 3, spy.jobs  # several jobs a load
    assert spy.opens == [1, 1]
    assert not Path(f"{database}.wal").exists()


class SessionSettingAtLoad(DuckDbSettingsAtLoad):
    """Records DuckDB's `default_order` as each load starts (a session setting)."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if step == "load":
            with pipeline.sql_client() as client:
                rows = client.execute_sql("select current_setting('default_order')")
            self.orders.append(str(rows[0][0]))


@pytest.mark.parametrize("configured", ["factory", "environment"])
def test_the_file_opened_for_the_load_keeps_the_configured_connection_settings(
    emulator: Any,
    run_pipeline: Any,
    monkeypatch: pytest.MonkeyPatch,
    isolated_dlt: Path,
    configured: str,
) -> None:
    """The load's connection is opened by the runner, with the settings configured for
    dlt's own (here `local_config`, which each borrowed connection gets)."""
    spy = SessionSettingAtLoad()
    monkeypatch.setattr(dlt_trace, "TRACKING_MODULES", [*dlt_trace.TRACKING_MODULES, spy])
    local_config = {"default_order": "DESC"}
    database = str(isolated_dlt / "test.duckdb")
    if configured == "environment":
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", database)
        monkeypatch.setenv(
            "DESTINATION__DUCKDB__CREDENTIALS__LOCAL_CONFIG", json.dumps(local_config)
        )
        destination: Any = "duckdb"
    else:
        credentials = {"database": database, "local_config": local_config}
        destination = dlt.destinations.duckdb(credentials)
    first = run_pipeline(emulator, destination=destination)
    assert_user_conversations_mirror(first.pipeline, emulator.all_user_conversations())
    assert [order.lower()[:4] for order in spy.orders] == ["desc"]  # "desc" or "descending"
