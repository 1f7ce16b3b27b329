"""`load_in_parts`, the public call of a plain dlt user (and of the Airflow and Dagster recipes):
a run loaded in parts, each into DuckDB in its memory budget, the first load appended, and an
exact mirror at the end. No runner, no CLI: a `dlt.pipeline` made the dlt way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
from duckdb_settings import duckdb_settings
from mirror import loaded_rows
from reliability.helpers import assert_exact_mirror, attach, change_some_data
from twilio_conversations import load_in_parts, loading, user_conversations
from twilio_conversations.credentials import TwilioCredentials

PART = 40


def source_kwargs(emu: Any) -> dict[str, Any]:
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = emu.account_sid, emu.auth_token
    return {"credentials": credentials, "base_url": emu.base_url, "max_workers": 4}


def staged_tables(pipeline: dlt.Pipeline) -> set[str]:
    """Tables of the staging dataset, where dlt stages what it merges."""
    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            "select table_name from information_schema.tables where table_schema = ?",
            f"{pipeline.dataset_name}_staging",
        )
    return {name for (name,) in rows}


def test_a_plain_dlt_pipeline_loads_a_run_in_parts_each_in_its_budget(
    start_emulator: Any,
    isolated_dlt: Path,
    settings_at_load: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = start_emulator(seed=12, services=2, users=90, conversations_per_user=2)
    # Parts by size only (the part cut where the last fetches drain: test_parts.py).
    monkeypatch.setattr(user_conversations, "DRAIN_ROUNDS", 10_000)
    pipeline = attach(isolated_dlt)

    first = load_in_parts(pipeline, users_per_load=PART, **source_kwargs(emu))

    # A part every PART users of a service, and the last one with the end of the scan.
    cuts = sum((len(emu.users(s["sid"])) - 1) // PART for s in emu.services())
    assert len(first.load_ids) == cuts + 1 > 2
    loads = loaded_rows(pipeline, "_dlt_loads", ["load_id", "status"])
    assert sorted(row["load_id"] for row in loads if row["status"] == 0) == sorted(first.load_ids)
    assert_exact_mirror(pipeline, emu)
    # A first load appends its user conversations, part after part: nothing staged for them.
    assert "user_conversations" not in staged_tables(pipeline)
    assert settings_at_load.seen == [duckdb_settings(loading.FIRST_LOAD_DUCKDB_CONFIG)] * len(
        first.load_ids
    )

    change_some_data(emu)
    later = load_in_parts(pipeline, users_per_load=PART, **source_kwargs(emu))
    assert later.row_counts["user_conversations"] > 0
    assert_exact_mirror(pipeline, emu)
    merges = settings_at_load.seen[len(first.load_ids) :]
    assert merges == [duckdb_settings(loading.MERGE_DUCKDB_CONFIG)] * len(later.load_ids)


def test_without_a_part_size_the_run_is_one_package(emulator: Any, isolated_dlt: Path) -> None:
    pipeline = attach(isolated_dlt)
    loaded = load_in_parts(pipeline, users_per_load=0, **source_kwargs(emulator))
    assert len(loaded.load_ids) == 1
    assert_exact_mirror(pipeline, emulator)


@pytest.mark.parametrize(
    "variable",
    [
        "SOURCES__TWILIO_CONVERSATIONS__FIRST_LOAD_HOLDER",
        # the source's own subsection, where dlt looks first for a source's arguments
        "SOURCES__TWILIO_CONVERSATIONS__TWILIO_CONVERSATIONS__FIRST_LOAD_HOLDER",
    ],
    ids=["section", "source-subsection"],
)
def test_the_first_load_claim_belongs_to_the_holder_configured_wherever_dlt_finds_it(
    emulator: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "orchestrator:twilio")
    pipeline = attach(isolated_dlt)
    load_in_parts(pipeline, **source_kwargs(emulator))
    with pipeline.sql_client() as client:
        claim = client.make_qualified_table_name("_first_load_claim")
        [(holder,)] = client.execute_sql(f"SELECT holder FROM {claim}")
    assert "orchestrator:twilio" in holder
    assert_exact_mirror(pipeline, emulator)


def test_the_pipeline_folder_keeps_only_the_newest_loaded_packages_run_after_run(
    start_emulator: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt keeps every loaded package; a scheduled job's disk would grow with each run. After
    each of many runs (each writing some changes, in parts) at most the newest few are left, and
    none with `keep_loaded_packages = 0`; the destination stays an exact mirror."""
    emu = start_emulator(seed=5, services=2, users=30, max_conversations=5)
    pipeline = attach(isolated_dlt)
    load_ids: list[str] = []
    for run in range(6):
        if run:
            change_some_data(emu, salt=f"run {run}")
        load_ids += load_in_parts(pipeline, users_per_load=10, **source_kwargs(emu)).load_ids
        kept = pipeline.list_completed_load_packages()
        assert sorted(kept) == sorted(load_ids)[-3:]  # the default: the newest 3
        assert_exact_mirror(pipeline, emu)
    assert len(load_ids) > 6  # in parts: more packages than runs
    folder = Path(pipeline.working_dir) / "load" / "loaded"
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)  # the files, not a list

    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__KEEP_LOADED_PACKAGES", "0")
    change_some_data(emu, salt="last run")
    load_in_parts(pipeline, users_per_load=10, **source_kwargs(emu))
    assert pipeline.list_completed_load_packages() == []
    assert_exact_mirror(pipeline, emu)


def test_fewer_loaded_packages_than_are_kept_are_all_kept(
    emulator: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(user_conversations, "DRAIN_ROUNDS", 10_000)  # parts by size only
    # A part every 5 users of a service, and the last one: one package fewer than kept.
    packages = sum((len(emulator.users(s["sid"])) - 1) // 5 for s in emulator.services()) + 1
    pipeline = attach(isolated_dlt)
    loaded = load_in_parts(
        pipeline, users_per_load=5, keep_loaded_packages=packages + 1, **source_kwargs(emulator)
    )
    assert len(loaded.load_ids) == packages > 1
    assert sorted(pipeline.list_completed_load_packages()) == sorted(loaded.load_ids)
