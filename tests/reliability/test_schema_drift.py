"""Schema drift: fields Twilio adds arrive as new columns without failing a run; a type change
evolves the schema too; and a frozen schema contract turns drift into a clear failure that loads
nothing. The emulator's renderer is wrapped in-process to serve the drifted records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from dlt.common.schema.exceptions import DataValidationError
from dlt.pipeline.exceptions import PipelineStepFailed
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    truth_users,
)
from twilio_conversations import twilio_conversations
from twilio_conversations.credentials import TwilioCredentials
from twilio_emulator import render

from .helpers import FAST_RETRIES, assert_exact_mirror

Drift = Callable[[dict[str, Any]], None]


@pytest.fixture
def drift(monkeypatch: pytest.MonkeyPatch) -> Callable[[Drift | None], None]:
    """`drift(fn)`: from now on every user-conversation record the API serves goes through fn."""
    original = render.user_conversation
    current: list[Drift | None] = [None]

    def rendered(*args: Any, **kwargs: Any) -> dict[str, Any]:
        row: dict[str, Any] = original(*args, **kwargs)
        if current[0] is not None:
            current[0](row)
        return row

    monkeypatch.setattr(render, "user_conversation", rendered)

    def set_drift(fn: Drift | None) -> None:
        current[0] = fn

    return set_drift


@pytest.fixture
def small(start_emulator: Any) -> Any:
    return start_emulator(seed=14, services=1, users=6, max_conversations=20)


def columns(tmp_path: Path, table: str = "user_conversations") -> dict[str, str]:
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        return dict(
            con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'twilio' and table_name = ?",
                [table],
            ).fetchall()
        )


def add_fields(row: dict[str, Any]) -> None:
    row["priority"] = 3
    row["routing"] = {"queue": "vip", "weight": 2}


def test_new_fields_become_new_columns_without_failing(
    small: Any, run_pipeline: Any, drift: Any, tmp_path: Path
) -> None:
    run_pipeline(small, **FAST_RETRIES)
    drift(add_fields)
    outcome = run_pipeline(small, **FAST_RETRIES)
    assert_exact_mirror(outcome.pipeline, small)
    # The new fields change every record, so every row is rewritten with them.
    assert outcome.rows_written["user_conversations"] == len(small.all_user_conversations())
    found = columns(tmp_path)
    assert found["priority"] == "BIGINT" and found["routing"] == "JSON", found
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        assert con.execute(
            "select distinct priority, routing->>'queue' from twilio.user_conversations"
        ).fetchall() == [(3, "vip")]


def test_a_new_field_changing_type_evolves_the_schema(
    small: Any, run_pipeline: Any, drift: Any, tmp_path: Path
) -> None:
    drift(add_fields)
    run_pipeline(small, **FAST_RETRIES)
    drift(lambda row: row.update(priority="high"))
    outcome = run_pipeline(small, **FAST_RETRIES)
    assert_exact_mirror(outcome.pipeline, small)
    found = columns(tmp_path)
    assert found["priority"] == "BIGINT" and found["priority__v_text"] == "VARCHAR", found
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        assert con.execute(
            "select distinct priority, priority__v_text from twilio.user_conversations"
        ).fetchall() == [(None, "high")]


def test_a_known_field_changing_type_evolves_the_schema(
    small: Any, run_pipeline: Any, drift: Any, tmp_path: Path
) -> None:
    run_pipeline(small, **FAST_RETRIES)
    drift(lambda row: row.update(unread_messages_count="12"))
    outcome = run_pipeline(small, **FAST_RETRIES)
    assert outcome.rows_written["user_conversations"] == len(small.all_user_conversations())
    assert columns(tmp_path)["unread_messages_count__v_text"] == "VARCHAR"
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        assert con.execute(
            "select distinct unread_messages_count, unread_messages_count__v_text "
            "from twilio.user_conversations"
        ).fetchall() == [(None, "12")]


def run_with_contract(emu: Any, tmp_path: Path, how: str, mode: str) -> dlt.Pipeline:
    """Run with `{"columns": mode}` set the way README documents: `how` is `resource` (an
    apply_hints on user_conversations), `source` (the source's schema_contract) or `run`."""
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = emu.account_sid, emu.auth_token
    pipeline = dlt.pipeline(
        "twilio_conversations",
        destination=dlt.destinations.duckdb(str(tmp_path / "test.duckdb")),
        dataset_name="twilio",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    source = twilio_conversations(credentials=credentials, base_url=emu.base_url, **FAST_RETRIES)
    contract = {"columns": mode}
    options: dict[str, Any] = {}
    if how == "resource":
        source.user_conversations.apply_hints(schema_contract=contract)
    elif how == "source":
        source.schema_contract = contract
    else:
        options["schema_contract"] = contract
    pipeline.run(source, loader_file_format="parquet", **options)
    return pipeline


@pytest.mark.parametrize("how", ["resource", "source", "run"])
def test_frozen_columns_refuse_drift_and_load_nothing(
    small: Any, drift: Any, tmp_path: Path, how: str
) -> None:
    # A frozen contract still lets the first run create the tables.
    pipeline = run_with_contract(small, tmp_path, how, "freeze")
    before = columns(tmp_path)
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        rows_before = sorted(con.execute("select * from twilio.user_conversations").fetchall())
    drift(add_fields)
    with pytest.raises(PipelineStepFailed) as failure:
        run_with_contract(small, tmp_path, how, "freeze")
    assert isinstance(failure.value.__cause__, DataValidationError)
    assert "priority" in str(failure.value.__cause__)
    assert columns(tmp_path) == before
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        assert sorted(con.execute("select * from twilio.user_conversations").fetchall()) == (
            rows_before
        )
    # The refused run advanced no state: once the drift is gone nothing needs writing.
    drift(None)
    pipeline = run_with_contract(small, tmp_path, how, "freeze")
    assert pipeline.last_trace.last_normalize_info.row_counts.get("user_conversations", 0) == 0
    assert_exact_mirror(pipeline, small)


def test_discard_value_drops_new_columns_and_keeps_loading(
    small: Any, drift: Any, tmp_path: Path
) -> None:
    run_with_contract(small, tmp_path, "resource", "discard_value")
    before = columns(tmp_path)
    drift(add_fields)
    pipeline = run_with_contract(small, tmp_path, "resource", "discard_value")
    assert columns(tmp_path) == before
    # The mirror of the API less the discarded fields.
    kept = [
        {k: v for k, v in row.items() if k not in ("priority", "routing")}
        for row in small.all_user_conversations()
    ]
    assert_user_conversations_mirror(pipeline, kept)
    assert_users_mirror(pipeline, truth_users(small))
    assert_services_mirror(pipeline, small.services())
