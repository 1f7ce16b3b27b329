"""Write endpoints and their effect on user-conversation rows, especially date_updated."""

from __future__ import annotations

from typing import Any

import pytest
from twilio_emulator import Emulator, TwilioError
from twilio_emulator.model import iso

from .helpers import session_for


def _row(emu: Emulator, service_sid: str, user: str, conversation: str) -> dict[str, Any]:
    rows = [
        r
        for r in emu.user_conversations(service_sid, user)
        if r["conversation_sid"] == conversation
    ]
    assert len(rows) == 1
    return rows[0]


@pytest.fixture
def setup(fresh_emu: Emulator) -> tuple[Emulator, str, str, str, str]:
    """A conversation with two members (``alice`` and ``bob``) and 5 messages."""
    store = fresh_emu.store
    service_sid = fresh_emu.default_service_sid
    alice = store.create_user(service_sid, "alice@example.com", friendly_name="Alice")
    bob = store.create_user(service_sid, "bob@example.com")
    conversation = store.create_conversation(service_sid, friendly_name="Project X")
    store.join(service_sid, alice, conversation)
    store.join(service_sid, bob, conversation)
    for _ in range(5):
        store.post_message(service_sid, conversation, author_identity=None)
    return fresh_emu, service_sid, alice, bob, conversation


def test_read_state_over_http_keeps_date_updated(
    setup: tuple[Emulator, str, str, str, str],
) -> None:
    emu, service_sid, alice, _, conversation = setup
    before = _row(emu, service_sid, alice, conversation)
    assert before["last_read_message_index"] is None and before["unread_messages_count"] is None
    url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{alice}/Conversations/{conversation}"
    with session_for(emu) as session:
        response = session.post(
            url, data={"LastReadMessageIndex": "1", "NotificationLevel": "muted"}
        )
    assert response.status_code == 200
    after = response.json()
    assert after == _row(emu, service_sid, alice, conversation)
    assert after["last_read_message_index"] == 1
    assert after["unread_messages_count"] == 3  # indices 2, 3, 4
    assert after["notification_level"] == "muted"
    assert after["date_updated"] == before["date_updated"]


def test_last_read_timestamp_marks_messages_up_to_then(
    setup: tuple[Emulator, str, str, str, str],
) -> None:
    emu, service_sid, alice, _, conversation = setup
    url = f"{emu.base_url}/v1/Users/{alice}/Conversations/{conversation}"
    with session_for(emu) as session:
        response = session.post(url, data={"LastReadTimestamp": "2100-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert response.json()["last_read_message_index"] == 4
    assert response.json()["unread_messages_count"] == 0


def test_unread_count_is_capped_at_1000(setup: tuple[Emulator, str, str, str, str]) -> None:
    emu, service_sid, alice, _, conversation = setup
    emu.store.set_read_state(service_sid, alice, conversation, last_read_message_index=0)
    with emu.store.lock:
        emu.store.conversation(service_sid, conversation).message_count = 5000
    assert _row(emu, service_sid, alice, conversation)["unread_messages_count"] == 1000


def test_new_message_grows_others_unread_not_date_updated(
    setup: tuple[Emulator, str, str, str, str],
) -> None:
    emu, service_sid, alice, bob, conversation = setup
    for user in (alice, bob):
        emu.store.set_read_state(service_sid, user, conversation, last_read_message_index=4)
    before = _row(emu, service_sid, bob, conversation)
    url = f"{emu.base_url}/v1/Services/{service_sid}/Conversations/{conversation}/Messages"
    with session_for(emu) as session:
        response = session.post(url, data={"Body": "hi", "Author": "alice@example.com"})
    assert response.status_code == 201
    assert response.json()["index"] == 5 and response.json()["sid"].startswith("IM")
    bob_after = _row(emu, service_sid, bob, conversation)
    alice_after = _row(emu, service_sid, alice, conversation)
    assert bob_after["unread_messages_count"] == before["unread_messages_count"] + 1 == 1
    assert alice_after["unread_messages_count"] == 0  # the author read their own message
    assert bob_after["date_updated"] == before["date_updated"]


def test_conversation_update_moves_date_updated_in_every_row(
    setup: tuple[Emulator, str, str, str, str],
) -> None:
    emu, service_sid, alice, bob, conversation = setup
    before = _row(emu, service_sid, alice, conversation)
    url = f"{emu.base_url}/v1/Services/{service_sid}/Conversations/{conversation}"
    with session_for(emu) as session:
        response = session.post(url, data={"FriendlyName": "Renamed", "State": "inactive"})
    assert response.status_code == 200
    assert response.json()["state"] == "inactive"
    for user in (alice, bob):
        row = _row(emu, service_sid, user, conversation)
        assert row["friendly_name"] == "Renamed"
        assert row["conversation_state"] == "inactive"
        assert set(row["timers"]) == {"date_inactive", "date_closed"}
        assert row["date_updated"] > before["date_updated"]
    # Back to active: timers are empty again.
    emu.store.update_conversation(service_sid, conversation, state="active")
    assert _row(emu, service_sid, alice, conversation)["timers"] == {}


def test_every_mutation_is_at_least_a_second_later(fresh_emu: Emulator) -> None:
    store = fresh_emu.store
    service_sid = fresh_emu.default_service_sid
    conversation = store.create_conversation(service_sid)
    stamps = []
    generated = max(r["date_updated"] for r in fresh_emu.all_user_conversations())
    for _ in range(3):
        updated = store.update_conversation(service_sid, conversation, attributes="{}")
        stamps.append(updated.date_updated)
        store.post_message(service_sid, conversation)
    # Strictly increasing with gaps (a message in between), all newer than generated data.
    assert stamps[0] < stamps[1] < stamps[2] and stamps[1] - stamps[0] >= 2
    assert iso(stamps[0]) > generated


def test_join_over_http_shows_the_old_date_updated(fresh_emu: Emulator) -> None:
    emu = fresh_emu
    service_sid = emu.default_service_sid
    store = emu.store
    with store.lock:
        service = store.services[service_sid]
        old = next(c for c in service.conversations.values() if c.date_updated < store.generated_at)
        old_sid = old.sid
    user = store.create_user(service_sid, "newbie@example.com")
    url = f"{emu.base_url}/v1/Services/{service_sid}/Conversations/{old_sid}/Participants"
    with session_for(emu) as session:
        response = session.post(url, data={"Identity": "newbie@example.com"})
        again = session.post(url, data={"Identity": "newbie@example.com"})
    assert response.status_code == 201
    assert (
        response.json()["sid"].startswith("MB")
        and response.json()["identity"] == "newbie@example.com"
    )
    row = _row(emu, service_sid, user, old_sid)
    assert row["participant_sid"] == response.json()["sid"]
    assert row["date_updated"] == iso(old.date_updated)
    assert row["last_read_message_index"] is None
    assert again.status_code == 409 and again.json()["code"] == 50433


def test_join_with_unknown_identity_creates_the_user(fresh_emu: Emulator) -> None:
    service_sid = fresh_emu.default_service_sid
    conversation = fresh_emu.store.create_conversation(service_sid)
    url = f"{fresh_emu.base_url}/v1/Conversations/{conversation}/Participants"
    with session_for(fresh_emu) as session:
        assert session.post(url, data={"Identity": "auto@example.com"}).status_code == 201
        user = session.get(f"{fresh_emu.base_url}/v1/Users/auto%40example.com").json()
    assert [
        r["conversation_sid"] for r in fresh_emu.user_conversations(service_sid, user["sid"])
    ] == [conversation]


def test_leave_over_http_removes_the_row(setup: tuple[Emulator, str, str, str, str]) -> None:
    emu, service_sid, alice, bob, conversation = setup
    url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{alice}/Conversations/{conversation}"
    with session_for(emu) as session:
        response = session.delete(url)
        assert response.status_code == 204 and response.content == b""
        again = session.delete(url)
    assert again.status_code == 404
    assert conversation not in {
        r["conversation_sid"] for r in emu.user_conversations(service_sid, alice)
    }
    assert _row(emu, service_sid, bob, conversation)["conversation_sid"] == conversation


def test_create_and_delete_user_over_http(fresh_emu: Emulator) -> None:
    service_sid = fresh_emu.default_service_sid
    base = f"{fresh_emu.base_url}/v1/Services/{service_sid}/Users"
    with session_for(fresh_emu) as session:
        created = session.post(
            base,
            data={"Identity": "zed@example.com", "FriendlyName": "Zed", "Attributes": '{"a":1}'},
        )
        assert created.status_code == 201
        user = created.json()
        assert user["identity"] == "zed@example.com" and user["attributes"] == '{"a":1}'
        assert user in fresh_emu.users(service_sid)
        duplicate = session.post(base, data={"Identity": "zed@example.com"})
        assert duplicate.status_code == 409
        missing = session.post(base, data={"FriendlyName": "no identity"})
        assert missing.status_code == 400 and missing.json()["code"] == 20001
        assert session.delete(f"{base}/{user['sid']}").status_code == 204
        assert session.get(f"{base}/{user['sid']}").status_code == 404
        assert session.get(f"{base}/{user['sid']}/Conversations").status_code == 404


def test_create_conversation_and_service_over_http(fresh_emu: Emulator) -> None:
    service_sid = fresh_emu.default_service_sid
    with session_for(fresh_emu) as session:
        created = session.post(
            f"{fresh_emu.base_url}/v1/Services/{service_sid}/Conversations",
            data={"FriendlyName": "New", "UniqueName": "new-one"},
        )
        assert created.status_code == 201
        conv = created.json()
        assert conv["sid"].startswith("CH") and conv["state"] == "active" and conv["timers"] == {}
        by_name = session.get(
            f"{fresh_emu.base_url}/v1/Services/{service_sid}/Conversations/new-one"
        )
        assert by_name.json()["sid"] == conv["sid"]
        service = session.post(f"{fresh_emu.base_url}/v1/Services", data={"FriendlyName": "Extra"})
        assert service.status_code == 201
    assert service.json()["sid"] in {s["sid"] for s in fresh_emu.services()}
    assert fresh_emu.users(service.json()["sid"]) == []


def test_store_errors_are_twilio_errors(fresh_emu: Emulator) -> None:
    store = fresh_emu.store
    service_sid = fresh_emu.default_service_sid
    with pytest.raises(TwilioError) as err:
        store.leave(service_sid, "US" + "0" * 32, "CH" + "0" * 32)
    assert err.value.status == 404
    conversation = store.create_conversation(service_sid)
    with pytest.raises(TwilioError) as err:
        store.update_conversation(service_sid, conversation, state="sleeping")
    assert err.value.status == 400
    with pytest.raises(TwilioError):
        store.set_read_state(service_sid, "US" + "0" * 32, conversation, notification_level="loud")


def test_invalid_write_fields_are_400(setup: tuple[Emulator, str, str, str, str]) -> None:
    emu, service_sid, alice, _, conversation = setup
    url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{alice}/Conversations/{conversation}"
    with session_for(emu) as session:
        for data in (
            {"LastReadMessageIndex": "x"},
            {"LastReadTimestamp": "yesterday"},
            {"NotificationLevel": "loud"},
        ):
            response = session.post(url, data=data)
            assert response.status_code == 400, data
            assert response.json()["more_info"].startswith("https://www.twilio.com/docs/errors/")
