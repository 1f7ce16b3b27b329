"""The PII policy end to end: real pipelines against the emulator, into DuckDB.

Expected rows are the emulator's truth with the policy applied here, by the documented rule
(`hmac-sha256:` + HMAC-SHA-256 hex of the UTF-8 text, null stays null; drop = null), never by the
module under test. Raw values are searched for in every file of the pipeline's working dir, in
every text column of every table, in the trace, the state and the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dlt
import pytest
from leaks import leaks_in_destination, leaks_in_files
from mirror import (
    USER_CONVERSATION_KEY,
    assert_user_conversations_mirror,
    assert_users_mirror,
    loaded_rows,
    loaded_table,
    truth_users,
)
from twilio_conversations.runner import make_pipeline, run
from twilio_conversations.views import create_views

KEY = "test-pii-key-0123456789abcdef"
HISTORY = "user_conversations_history"

# Every PII column: hashed or dropped, both kinds in each table.
POLICY = {
    "users": {"identity": "hash", "friendly_name": "hash", "attributes": "drop"},
    "user_conversations": {
        "friendly_name": "drop",
        "unique_name": "hash",
        "attributes": "hash",
        "created_by": "hash",
    },
}


def digest(value: Any) -> Any:
    if value is None:
        return None
    return "hmac-sha256:" + hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def applied(
    records: Iterable[Mapping[str, Any]], policy: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The truth as the policy says it is stored."""
    out = []
    for record in records:
        row = dict(record)
        for column, action in policy.items():
            row[column] = digest(row[column]) if action == "hash" else None
        out.append(row)
    return out


def raw_values(emu: Any) -> set[str]:
    """Every value of a PII column in the truth distinctive enough to search for ("system",
    "{}" and short names would match unrelated text)."""
    values: set[str] = set()
    for user in truth_users(emu):
        values.update(user[c] for c in POLICY["users"] if user[c])
    for row in emu.all_user_conversations():
        values.update(row[c] for c in POLICY["user_conversations"] if row[c])
    return {v for v in values if len(v) >= 8 and v not in ("system",)}


def pipeline_in(tmp_path: Path) -> dlt.Pipeline:
    return make_pipeline(
        dlt.destinations.duckdb(str(tmp_path / "test.duckdb")),
        "twilio",
        progress="log",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def source_kwargs(emu: Any, **extra: Any) -> dict[str, Any]:
    from twilio_conversations.credentials import TwilioCredentials

    credentials = TwilioCredentials()
    credentials.account_sid = emu.account_sid
    credentials.auth_token = emu.auth_token
    return {"credentials": credentials, "base_url": emu.base_url, **extra}


def test_hashed_and_dropped_values_reach_no_file_table_view_log_trace_or_state(
    start_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = start_emulator(seed=5, services=2, users=10, max_conversations=60)
    values = raw_values(emu)
    assert len(values) > 100  # identities, names, unique names, attributes
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)
    # Resolved by dlt, as a scheduled run resolves them: the key must not show in dlt's trace.
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__PII", json.dumps(POLICY))
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__PII_HASH_KEY", KEY)
    pipeline = pipeline_in(tmp_path)
    outcome = run(pipeline, source_kwargs=source_kwargs(emu, history=True))
    assert outcome.report.users_scanned == 20
    assert "user_conversation_summary" in create_views(pipeline)  # searched with the tables

    texts = {
        "trace": str(pipeline.last_trace),
        "trace json": json.dumps(pipeline.last_trace.asdict(), default=str, ensure_ascii=False),
        "state": json.dumps(pipeline.state, default=str, ensure_ascii=False),
        "logs": caplog.text,
        "output": "".join(capsys.readouterr()),
    }
    assert "DEBUG" in caplog.text
    assert [(n, v) for n, t in texts.items() for v in values if v in t] == []
    assert KEY not in "".join(texts.values())
    assert leaks_in_files(tmp_path, values | {KEY}) == []
    assert leaks_in_destination(tmp_path / "test.duckdb", values | {KEY}) == []

    # What is stored is the truth with the policy applied, row by row.
    assert_users_mirror(pipeline, applied(truth_users(emu), POLICY["users"]))
    truth = applied(emu.all_user_conversations(), POLICY["user_conversations"])
    rows = assert_user_conversations_mirror(pipeline, truth)
    history = loaded_table(pipeline, HISTORY, USER_CONVERSATION_KEY)[0]
    assert len(history) == rows


def test_views_show_hashed_identities_with_the_right_counts(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = start_emulator(seed=6, services=2, users=8, max_conversations=30)
    policy = {"users.identity": "hash", "users.friendly_name": "drop"}
    outcome = run_pipeline(emu, pii=policy, pii_hash_key=KEY)
    create_views(outcome.pipeline)
    summary = {
        (r["chat_service_sid"], r["user_sid"]): r
        for r in loaded_rows(outcome.pipeline, "user_conversation_summary")
    }
    expected = {}
    memberships: dict[tuple[str, str], int] = {}
    for row in emu.all_user_conversations():
        key = (row["chat_service_sid"], row["user_sid"])
        memberships[key] = memberships.get(key, 0) + 1
    for user in truth_users(emu):
        key = (user["chat_service_sid"], user["sid"])
        expected[key] = (digest(user["identity"]), memberships.get(key, 0))
    assert {k: (r["identity"], r["conversations"]) for k, r in summary.items()} == expected


def versions(pipeline: dlt.Pipeline) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in loaded_rows(pipeline, HISTORY):
        by_key.setdefault(tuple(row[k] for k in USER_CONVERSATION_KEY), []).append(row)
    return by_key


def test_a_policy_change_rewrites_the_rows_once_and_history_gains_one_version(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = start_emulator(seed=7, services=1, users=10, max_conversations=40)
    first = run_pipeline(emu, history=True)
    users = truth_users(emu)
    truth = emu.all_user_conversations()
    assert first.report.users_changed == 10
    first_loads = {r["load_id"] for r in loaded_rows(first.pipeline, "_dlt_loads", ["load_id"])}

    # keep -> hash: every user is rewritten (every identity is set), every conversation row
    # whose unique_name is set gets a new version, the others keep their one version.
    policy = {"users.identity": "hash", "user_conversations.unique_name": "hash"}
    changed = run_pipeline(emu, history=True, pii=policy, pii_hash_key=KEY)
    pipeline = changed.pipeline
    assert_users_mirror(pipeline, applied(users, {"identity": "hash"}))
    assert_user_conversations_mirror(pipeline, applied(truth, {"unique_name": "hash"}))
    named = {tuple(r[k] for k in USER_CONVERSATION_KEY): r["unique_name"] for r in truth}
    assert any(named.values()) and not all(named.values())
    after_change = versions(pipeline)
    assert set(after_change) == set(named)
    for key, rows in after_change.items():
        current = [r for r in rows if r["_dlt_valid_to"] is None]
        assert [r["unique_name"] for r in current] == [digest(named[key])], key
        retired = [r["unique_name"] for r in rows if r["_dlt_valid_to"] is not None]
        assert retired == ([named[key]] if named[key] else []), key
    # Users whose partition holds a unique_name are rewritten; every user record is.
    assert changed.report.users_changed == len({r["user_sid"] for r in truth if r["unique_name"]})
    (users_load,) = load_ids_of(pipeline, "users")
    assert users_load not in first_loads

    # The run after the change-run writes nothing: no duplicate version, no rewrite.
    again = run_pipeline(emu, history=True, pii=policy, pii_hash_key=KEY)
    assert again.report.users_changed == 0
    assert versions(again.pipeline) == after_change
    assert_users_mirror(again.pipeline, applied(users, {"identity": "hash"}))


def load_ids_of(pipeline: dlt.Pipeline, table: str) -> set[str]:
    return {r["_dlt_load_id"] for r in loaded_rows(pipeline, table, ["_dlt_load_id"])}
