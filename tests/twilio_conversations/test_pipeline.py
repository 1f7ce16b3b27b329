"""End-to-end: the real source over loopback against the emulator, into a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    load_ids,
    truth_users,
)
from twilio_conversations.window import UpdatedWindow


def users_by_conversation_count(emu: Any) -> dict[int, list[tuple[str, str]]]:
    counts: dict[int, list[tuple[str, str]]] = {}
    for service in emu.services():
        for user in emu.users(service["sid"]):
            n = len(emu.user_conversations(service["sid"], user["sid"]))
            counts.setdefault(n, []).append((service["sid"], user["sid"]))
    return counts


def test_first_load_mirrors_api_and_second_run_writes_nothing(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    truth = emulator.all_user_conversations()
    counts = users_by_conversation_count(emulator)
    assert max(counts) > 50, "the fixture must page through some users' lists"
    assert 0 in counts, "the fixture must have users without conversations"
    users, services = truth_users(emulator), emulator.services()

    first = run_pipeline(emulator, **destination)
    assert first.rows_written["user_conversations"] == len(truth)
    assert assert_user_conversations_mirror(first.pipeline, truth) == len(truth)
    assert assert_users_mirror(first.pipeline, users) == len(users)
    assert assert_services_mirror(first.pipeline, services) == len(services)
    assert first.report.users_scanned == len(users)
    loads_after_first = load_ids(first.pipeline, "user_conversations")
    assert loads_after_first == {first.load_info.loads_ids[0]}

    second = run_pipeline(emulator, **destination)
    assert second.rows_written == {"services": 0, "users": 0, "user_conversations": 0}
    assert second.report.users_scanned == len(users)
    assert load_ids(second.pipeline, "user_conversations") == loads_after_first
    assert_user_conversations_mirror(second.pipeline, truth)
    assert_users_mirror(second.pipeline, users)
    assert_services_mirror(second.pipeline, services)


def test_typed_schema(emulator: Any, run_pipeline: Any) -> None:
    outcome = run_pipeline(emulator)
    columns = outcome.pipeline.default_schema.get_table_columns("user_conversations")
    types = {name: col.get("data_type") for name, col in columns.items()}
    for name in ("date_created", "date_updated", "timers__date_inactive", "timers__date_closed"):
        assert types[name] == "timestamp", name
    assert types["unread_messages_count"] == "bigint"
    assert types["last_read_message_index"] == "bigint"
    assert types["conversation_state"] == "text"
    assert types["attributes"] == "text"
    assert types["attributes_json"] == "json"
    assert {"links__participant", "links__conversation"} <= types.keys()
    key = [n for n, c in columns.items() if c.get("primary_key")]
    assert sorted(key) == ["chat_service_sid", "conversation_sid", "user_sid"]


def test_users_with_older_conversations_than_an_earlier_users_newest_all_load(
    start_emulator: Any, run_pipeline: Any
) -> None:
    """The naive child-resource cursor keeps one cursor for all users and drops these rows."""
    emu = start_emulator(seed=3, services=1, users=0)
    service_sid = emu.services()[0]["sid"]
    store = emu.store
    old = [store.create_conversation(service_sid, friendly_name=f"old {i}") for i in range(3)]
    early = store.create_user(service_sid, "a-early@example.com")
    late = store.create_user(service_sid, "z-late@example.com")
    for conversation in old:
        store.join(service_sid, late, conversation)
    newest = store.create_conversation(service_sid, friendly_name="newest")
    store.join(service_sid, early, newest)  # the first user listed has the newest date_updated
    truth = emu.all_user_conversations()
    assert len(truth) == 4

    first = run_pipeline(emu)
    assert assert_user_conversations_mirror(first.pipeline, truth) == 4

    # The late user joins another old conversation: its date_updated is older than the newest
    # value any cursor has seen, and it must still arrive.
    older = store.create_conversation(service_sid, friendly_name="older still")
    store.update_conversation(service_sid, newest, friendly_name="newest, renamed")
    store.join(service_sid, late, older)
    second = run_pipeline(emu)
    assert assert_user_conversations_mirror(second.pipeline, emu.all_user_conversations()) == 5


def test_date_updated_window(emulator: Any, run_pipeline: Any) -> None:
    truth = emulator.all_user_conversations()
    stamps = sorted(r["date_updated"] for r in truth)
    start, end = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    window = UpdatedWindow.from_config(start, end)
    outcome = run_pipeline(emulator, start_date=start, end_date=end)
    loaded = assert_user_conversations_mirror(outcome.pipeline, truth, window)
    assert 0 < loaded < len(truth)
    # Widening the window to everything brings the rest in.
    wider = run_pipeline(emulator)
    assert assert_user_conversations_mirror(wider.pipeline, truth) == len(truth)
    assert outcome.pipeline.state["sources"]["twilio_conversations"]["resources"][
        "user_conversations"
    ]["date_updated_cursor"] == max(stamps)


def test_configured_services_and_users(emulator: Any, run_pipeline: Any) -> None:
    service = emulator.services()[1]["sid"]
    users = emulator.users(service)
    by_count = sorted(users, key=lambda u: -len(emulator.user_conversations(service, u["sid"])))
    chosen_sid, chosen_identity = by_count[0]["sid"], by_count[1]["identity"]
    outcome = run_pipeline(
        emulator, service_sids=[service], user_sids=[chosen_sid, chosen_identity]
    )
    expected = emulator.user_conversations(service, chosen_sid) + emulator.user_conversations(
        service, by_count[1]["sid"]
    )
    assert_user_conversations_mirror(outcome.pipeline, expected)
    assert assert_users_mirror(outcome.pipeline, by_count[:2]) == 2
    assert assert_services_mirror(outcome.pipeline, emulator.services()[1:2]) == 1


def test_identity_with_reserved_characters(start_emulator: Any, run_pipeline: Any) -> None:
    emu = start_emulator(seed=5, services=1, users=0)
    service_sid = emu.services()[0]["sid"]
    identity = "a/b?c#d%e ü+x@example.com"
    user = emu.store.create_user(service_sid, identity)
    conversation = emu.store.create_conversation(service_sid, friendly_name="odd identity")
    emu.store.join(service_sid, user, conversation)
    outcome = run_pipeline(emu, user_sids=[identity])
    assert_user_conversations_mirror(outcome.pipeline, emu.all_user_conversations())
    assert outcome.report.users_scanned == 1


def test_unknown_configured_user_is_reported_not_fatal(emulator: Any, run_pipeline: Any) -> None:
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]
    outcome = run_pipeline(
        emulator, service_sids=[service], user_sids=[user["sid"], "nobody@example.com"]
    )
    assert outcome.report.unresolved_users == ["nobody@example.com"]
    assert_user_conversations_mirror(
        outcome.pipeline, emulator.user_conversations(service, user["sid"])
    )


def test_user_vanishing_between_listing_and_reading_is_skipped(
    emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twilio_conversations import discovery

    service = emulator.services()[0]["sid"]
    victim = max(
        emulator.users(service), key=lambda u: len(emulator.user_conversations(service, u["sid"]))
    )
    original = discovery._Listing.take

    def list_then_delete(self: Any) -> Any:
        batch = original(self)
        if any(user["sid"] == victim["sid"] for user in batch) and any(
            u["sid"] == victim["sid"] for u in emulator.users(service)
        ):
            emulator.store.delete_user(service, victim["sid"])  # gone once listed
        return batch

    monkeypatch.setattr(discovery._Listing, "take", list_then_delete)
    outcome = run_pipeline(emulator)
    assert [(s.service_sid, s.user) for s in outcome.report.skipped] == [(service, victim["sid"])]
    assert "404" in outcome.report.skipped[0].reason
    assert_user_conversations_mirror(outcome.pipeline, emulator.all_user_conversations())


def test_the_listing_never_runs_far_ahead_of_the_conversation_fetches(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user listing is read by a thread of its own, ahead of the fetches by a bounded
    amount: users are never listed while no conversation fetch is submitted (at 100 ms a page,
    seconds of idle workers), nor held in memory far ahead of them.

    At most 2 pages and 4 users per worker ahead of the users taken, which are at most 4 per
    worker ahead of those finished, with what covers a part's pause, `LISTING_READ_AHEAD` and
    `FETCH_AHEAD_PER_WORKER`, set to 0 and 4 here; so before page p + 1 is requested at least
    page_size * p - 2 * page_size - 8 * workers - 1 conversation requests were sent. The `users`
    rows, written from the same listing, are the API's."""
    from urllib.parse import urlsplit

    from twilio_conversations import discovery, transport, user_conversations

    emu = start_emulator(seed=5, services=1, users=60, max_conversations=3)
    service = emu.services()[0]["sid"]
    page_size, workers = 5, 1
    sent: list[str] = []
    original = transport.ApiSession.send

    def recording(self: Any, request: Any, **kwargs: Any) -> Any:
        sent.append(urlsplit(request.url).path)
        return original(self, request, **kwargs)

    monkeypatch.setattr(transport.ApiSession, "send", recording)
    # A batch every few users, as a large account has one every ~150 (5,000 rows).
    monkeypatch.setattr(user_conversations, "ARROW_BATCH_ROWS", 4)
    monkeypatch.setattr(discovery, "LISTING_READ_AHEAD", 0)
    monkeypatch.setattr(user_conversations, "FETCH_AHEAD_PER_WORKER", 4)
    for run in ("first load", "re-run"):
        sent.clear()
        if run == "re-run":  # new users, listed among the others: `users` has rows to write
            for n in range(6):
                emu.store.create_user(service, f"newcomer-{n}")
        outcome = run_pipeline(emu, page_size=page_size, max_workers=workers)
        listing = [i for i, path in enumerate(sent) if path == f"/v1/Services/{service}/Users"]
        assert len(listing) >= len(emu.users(service)) // page_size, "the listing is paged"
        for page, position in enumerate(listing[1:], start=1):
            before = sum(1 for path in sent[:position] if path.endswith("/Conversations"))
            assert before >= page_size * (page - 2) - 8 * workers - 1, (
                f"{run}: listing page {page + 1} was read after only {before} conversation "
                "requests: the listing ran ahead of the fetches"
            )
        assert outcome.report.users_scanned == len(emu.users(service))
        assert_users_mirror(outcome.pipeline, truth_users(emu))
        assert_user_conversations_mirror(outcome.pipeline, emu.all_user_conversations())
