"""Every scheduled run leaves an exact mirror of the API and writes only what changed.

One scenario applies every kind of change through the emulator's real write endpoints, then
compares the destination with the emulator's truth row by row, on DuckDB and on PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from changes_scenario import apply_every_change, expected_writes, memberships
from mirror import assert_user_conversations_mirror, load_ids, loaded_rows
from twilio_writes import TwilioWrites


def test_three_runs_mirror_and_write_only_changes(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    first = run_pipeline(emulator, **destination)
    truth = emulator.all_user_conversations()
    assert first.rows_written["user_conversations"] == len(truth)
    assert_user_conversations_mirror(first.pipeline, truth)

    scenario = apply_every_change(emulator)
    second = run_pipeline(emulator, **destination)
    assert_user_conversations_mirror(second.pipeline, emulator.all_user_conversations())
    # A deletion marker per emptied or deleted user: rows deleted, not rows written.
    markers = len(scenario.emptied_users) + len(scenario.deleted_users)
    assert (
        second.rows_written["user_conversations"] == expected_writes(emulator, scenario) - markers
    )
    assert second.rows_deleted["user_conversations"] == markers
    assert second.rows_deleted["users"] == len(scenario.deleted_users)
    assert second.report.users_changed == len(scenario.changed_users | scenario.emptied_users)
    assert second.report.users_removed == 1
    loaded_users = {
        (r["chat_service_sid"], r["sid"]) for r in loaded_rows(second.pipeline, "users")
    }
    assert not scenario.deleted_users & loaded_users
    truth_users = {
        (s["sid"], u["sid"]) for s in emulator.services() for u in emulator.users(s["sid"])
    }
    assert loaded_users == truth_users
    loads = load_ids(second.pipeline, "user_conversations")

    third = run_pipeline(emulator, **destination)
    assert third.rows_written == {"services": 0, "users": 0, "user_conversations": 0}
    assert load_ids(third.pipeline, "user_conversations") == loads
    assert_user_conversations_mirror(third.pipeline, emulator.all_user_conversations())
    print(
        "rows written per run:",
        [r.rows_written["user_conversations"] for r in (first, second, third)],
    )


def test_unscanned_and_skipped_users_are_left_untouched(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = TwilioWrites(emulator)
    service = emulator.services()[0]["sid"]
    rows = memberships(emulator, service)
    busy = sorted((sid for sid in rows if rows[sid]), key=lambda s: -len(rows[s]))
    scanned, unscanned = busy[0], busy[1]
    first = run_pipeline(emulator, **destination)
    before = {
        k: v
        for k, v in loaded_user_conversations_by_user(first.pipeline).items()
        if k[1] == unscanned
    }

    # The unscanned user leaves a conversation and is then filtered out of the run by config.
    api.leave(service, unscanned, rows[unscanned][0]["conversation_sid"])
    api.set_read_state(
        service, scanned, rows[scanned][0]["conversation_sid"], LastReadMessageIndex=0
    )
    second = run_pipeline(emulator, user_sids=[scanned], **destination)
    assert second.report.users_scanned == 1
    after = loaded_user_conversations_by_user(second.pipeline)
    assert {k: v for k, v in after.items() if k[1] == unscanned} == before
    mine = emulator.user_conversations(service, scanned)
    got = {k for k in after if k[1] == scanned}
    assert got == {(service, scanned, r["conversation_sid"]) for r in mine}

    # A user skipped after a 404 keeps its rows too, and is not taken for deleted.
    from twilio_conversations import client as client_module

    original = client_module.TwilioClient.iter_pages

    def vanish_for_unscanned(self: Any, path: str, key: str, *args: Any, **kwargs: Any) -> Any:
        if f"/Users/{unscanned}/Conversations" in path:
            raise client_module.TwilioAPIError(
                404, 20404, "The requested resource was not found", path
            )
        return original(self, path, key, *args, **kwargs)

    monkeypatch.setattr(client_module.TwilioClient, "iter_pages", vanish_for_unscanned)
    third = run_pipeline(emulator, **destination)
    assert [s.user for s in third.report.skipped] == [unscanned]
    assert {
        k: v
        for k, v in loaded_user_conversations_by_user(third.pipeline).items()
        if k[1] == unscanned
    } == before


def loaded_user_conversations_by_user(pipeline: Any) -> dict[tuple[str, str, str], Any]:
    rows = loaded_rows(
        pipeline,
        "user_conversations",
        [
            "chat_service_sid",
            "user_sid",
            "conversation_sid",
            "unread_messages_count",
            "_dlt_load_id",
        ],
    )
    return {(r["chat_service_sid"], r["user_sid"], r["conversation_sid"]): r for r in rows}


def test_history_mode_keeps_versions_and_closes_removals(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    first = run_pipeline(emulator, history=True, **destination)
    n_first = len(emulator.all_user_conversations())
    assert first.rows_written["user_conversations_history"] == n_first

    before = {
        (r["chat_service_sid"], r["user_sid"], r["conversation_sid"]): r
        for r in emulator.all_user_conversations()
    }
    scenario = apply_every_change(emulator)
    second = run_pipeline(emulator, history=True, **destination)
    truth = emulator.all_user_conversations()
    assert_user_conversations_mirror(second.pipeline, truth)
    after = {(r["chat_service_sid"], r["user_sid"], r["conversation_sid"]): r for r in truth}

    history = loaded_rows(
        second.pipeline,
        "user_conversations_history",
        [
            "chat_service_sid",
            "user_sid",
            "conversation_sid",
            "unread_messages_count",
            "_dlt_valid_to",
        ],
    )
    current = [r for r in history if r["_dlt_valid_to"] is None]
    retired = [r for r in history if r["_dlt_valid_to"] is not None]
    # The current versions are exactly the mirror.
    assert sorted(
        (r["chat_service_sid"], r["user_sid"], r["conversation_sid"]) for r in current
    ) == sorted(after)
    # A version was closed for every row that changed or disappeared, and for nothing else.
    changed_or_gone = {k for k, r in before.items() if k not in after or after[k] != r}
    assert Counter(
        (r["chat_service_sid"], r["user_sid"], r["conversation_sid"]) for r in retired
    ) == Counter(changed_or_gone)
    assert all(
        (r["chat_service_sid"], r["user_sid"])
        not in scenario.deleted_users | scenario.emptied_users
        for r in current
    )

    # Users not scanned keep their current versions.
    third = run_pipeline(emulator, history=True, user_sids=["nobody@example.com"], **destination)
    assert third.rows_written["user_conversations_history"] == 0
    still = loaded_rows(third.pipeline, "user_conversations_history", ["_dlt_valid_to"])
    assert sum(r["_dlt_valid_to"] is None for r in still) == len(after)
