"""The ready-made views agree with numbers computed from the emulator's truth, on DuckDB and
PostgreSQL, and stay right after the data changes and the views are created again."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dlt
import pytest
from twilio_conversations.views import EXAMPLE_QUERIES, VIEWS, create_views

VIEW_NAMES = list(VIEWS)


# -- truth -------------------------------------------------------------------------------------


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _unread(row: dict[str, Any]) -> int:
    """Twilio's unread count is null until the read horizon is set: unknown, counted as 0."""
    count: int | None = row["unread_messages_count"]
    return count or 0


def expected_user_summary(emu: Any) -> dict[tuple[str, str], dict[str, Any]]:
    services = {s["sid"]: s["friendly_name"] for s in emu.services()}
    rows_by_user: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in emu.all_user_conversations():
        rows_by_user[(row["chat_service_sid"], row["user_sid"])].append(row)
    expected = {}
    for service_sid, service_name in services.items():
        for user in emu.users(service_sid):
            rows = rows_by_user.get((service_sid, user["sid"]), [])
            states = [r["conversation_state"] for r in rows]
            expected[(service_sid, user["sid"])] = {
                "service_name": service_name,
                "identity": user["identity"],
                "conversations": len(rows),
                "active_conversations": states.count("active"),
                "inactive_conversations": states.count("inactive"),
                "closed_conversations": states.count("closed"),
                "muted_conversations": sum(r["notification_level"] == "muted" for r in rows),
                "conversations_with_unread": sum(_unread(r) > 0 for r in rows),
                "never_read_conversations": sum(r["last_read_message_index"] is None for r in rows),
                "total_unread": sum(_unread(r) for r in rows),
                "last_date_updated": max((_ts(r["date_updated"]) for r in rows), default=None),
            }
    return expected


def expected_service_summary(emu: Any) -> dict[str, dict[str, Any]]:
    rows_by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in emu.all_user_conversations():
        rows_by_service[row["chat_service_sid"]].append(row)
    expected = {}
    for service in emu.services():
        rows = rows_by_service.get(service["sid"], [])
        state_of = {r["conversation_sid"]: r["conversation_state"] for r in rows}
        expected[service["sid"]] = {
            "service_name": service["friendly_name"],
            "users": len(emu.users(service["sid"])),
            "users_with_conversations": len({r["user_sid"] for r in rows}),
            "conversations": len(state_of),
            "active_conversations": list(state_of.values()).count("active"),
            "inactive_conversations": list(state_of.values()).count("inactive"),
            "closed_conversations": list(state_of.values()).count("closed"),
            "memberships": len(rows),
            "muted_memberships": sum(r["notification_level"] == "muted" for r in rows),
            "never_read_memberships": sum(r["last_read_message_index"] is None for r in rows),
            "total_unread": sum(_unread(r) for r in rows),
            "last_date_updated": max((_ts(r["date_updated"]) for r in rows), default=None),
        }
    return expected


def expected_stale(emu: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    identities = {
        (s["sid"], u["sid"]): u["identity"] for s in emu.services() for u in emu.users(s["sid"])
    }
    service_names = {s["sid"]: s["friendly_name"] for s in emu.services()}
    expected = {}
    for row in emu.all_user_conversations():
        state = row["conversation_state"]
        if state not in ("inactive", "closed") or _unread(row) <= 0:
            continue
        timers = row["timers"]
        since = timers.get("date_closed") if state == "closed" else None
        since = since or timers.get("date_inactive") or row["date_updated"]
        key = (row["chat_service_sid"], row["user_sid"], row["conversation_sid"])
        expected[key] = {
            "identity": identities[(row["chat_service_sid"], row["user_sid"])],
            "service_name": service_names[row["chat_service_sid"]],
            "conversation_state": state,
            "unread_messages_count": row["unread_messages_count"],
            "stale_since": _ts(since),
        }
    return expected


# -- what the views say ------------------------------------------------------------------------


def query(pipeline: dlt.Pipeline, sql: str) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client, client.execute_query(sql) as cursor:
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def view_rows(pipeline: dlt.Pipeline, view: str) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(view)
    return query(pipeline, f"SELECT * FROM {qualified}")


def _pick(row: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in fields}


def assert_views_match_truth(pipeline: dlt.Pipeline, emu: Any) -> None:
    users = expected_user_summary(emu)
    got_users = {
        (r["chat_service_sid"], r["user_sid"]): r
        for r in view_rows(pipeline, "user_conversation_summary")
    }
    assert got_users.keys() == users.keys()
    for key, want in users.items():
        assert _pick(got_users[key], want) == want, key

    services = expected_service_summary(emu)
    got_services = {r["chat_service_sid"]: r for r in view_rows(pipeline, "service_summary")}
    assert got_services.keys() == services.keys()
    for key, want in services.items():
        assert _pick(got_services[key], want) == want, key

    stale = expected_stale(emu)
    assert stale, "the test data should have unread messages in quiet conversations"
    got_stale = {
        (r["chat_service_sid"], r["user_sid"], r["conversation_sid"]): r
        for r in view_rows(pipeline, "stale_conversations")
    }
    assert got_stale.keys() == stale.keys()
    for key, want in stale.items():
        assert _pick(got_stale[key], want) == want, key


def assert_example_queries_run(pipeline: dlt.Pipeline, emu: Any) -> None:
    results = {title: query(pipeline, sql) for title, sql in EXAMPLE_QUERIES.items()}
    assert all(results.values()), results
    top = results["Users with the most unread messages"][0]
    assert top["total_unread"] == max(
        u["total_unread"] for u in expected_user_summary(emu).values()
    )
    services = results["Services at a glance"]
    assert len(services) == len(emu.services())


# -- tests -------------------------------------------------------------------------------------


def test_views_on_duckdb_match_truth_and_follow_changes(emulator: Any, run_pipeline: Any) -> None:
    service_sid = emulator.default_service_sid
    emulator.store.create_user(service_sid, "no.conversations@example.com")  # zero row
    outcome = run_pipeline(emulator)
    assert outcome.views == VIEW_NAMES  # the runner refreshes them after every load
    assert create_views(outcome.pipeline) == VIEW_NAMES
    assert_views_match_truth(outcome.pipeline, emulator)
    assert_example_queries_run(outcome.pipeline, emulator)

    # Change the data: close a conversation, mute and re-read memberships, drop a user.
    rows = emulator.all_user_conversations()
    active = next(r for r in rows if r["conversation_state"] == "active")
    emulator.store.update_conversation(
        active["chat_service_sid"], active["conversation_sid"], state="closed"
    )
    unread = next(r for r in rows if _unread(r) > 0)
    emulator.store.set_read_state(
        unread["chat_service_sid"],
        unread["user_sid"],
        unread["conversation_sid"],
        notification_level="muted",
        last_read_message_index=None,
    )
    victim = max(emulator.users(service_sid), key=lambda u: u["sid"])
    emulator.store.delete_user(service_sid, victim["sid"])

    outcome = run_pipeline(emulator)
    assert create_views(outcome.pipeline) == VIEW_NAMES  # replacing works too
    assert_views_match_truth(outcome.pipeline, emulator)


def test_unsupported_destination_creates_nothing(tmp_path: Any) -> None:
    pipeline = dlt.pipeline(
        "views_filesystem",
        destination=dlt.destinations.filesystem(str(tmp_path / "files")),
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    assert create_views(pipeline) == []


def test_view_sql_is_kept_as_constants() -> None:
    for name, sql in VIEWS.items():
        assert "{user_conversations}" in sql, name
        assert sql.lstrip().upper().startswith("SELECT"), name


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh database per test, so views and tables of other tests never meet these."""
    import psycopg2

    name = f"views_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        # trust authentication ignores the password, but dlt insists on one
        server = postgres_server.rsplit("/", 1)[0].replace("postgres@", "postgres:unused@")
        yield f"{server}/{name}"
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


@pytest.mark.postgres
def test_views_on_postgres_match_truth(
    emulator: Any, run_pipeline: Any, postgres_database: str
) -> None:
    destination = dlt.destinations.postgres(postgres_database)
    outcome = run_pipeline(emulator, destination=destination)
    with outcome.pipeline.sql_client() as client:
        # An older view of the same name with other columns: CREATE OR REPLACE VIEW alone
        # cannot change columns on PostgreSQL, create_views must still replace it.
        qualified = client.make_qualified_table_name("service_summary")
        client.execute_sql(f"DROP VIEW IF EXISTS {qualified}")  # the runner made the current one
        client.execute_sql(f"CREATE VIEW {qualified} AS SELECT 1 AS old_column")
    assert create_views(outcome.pipeline) == VIEW_NAMES
    assert create_views(outcome.pipeline) == VIEW_NAMES
    assert_views_match_truth(outcome.pipeline, emulator)
    assert_example_queries_run(outcome.pipeline, emulator)


def test_plain_dlt_load_then_create_views(
    emulator: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's Python way: dlt's own `pipeline.run`, credentials from Twilio's variables, then
    the one call that gives Python, Dagster and Airflow users the views the CLI creates."""
    from dlt.destinations.exceptions import DatabaseUndefinedRelation
    from twilio_conversations import twilio_conversations

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__BASE_URL", emulator.base_url)
    pipeline = dlt.pipeline(
        "twilio_conversations",
        destination=dlt.destinations.duckdb(str(tmp_path / "plain.duckdb")),
        dataset_name="twilio",
    )
    pipeline.run(twilio_conversations(), loader_file_format="parquet")
    with pytest.raises(DatabaseUndefinedRelation):  # dlt alone creates tables, not views
        view_rows(pipeline, "user_conversation_summary")

    assert create_views(pipeline) == VIEW_NAMES
    assert_views_match_truth(pipeline, emulator)
    assert_example_queries_run(pipeline, emulator)
