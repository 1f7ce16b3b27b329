"""Writes change what the conversation, participant and message lists serve, and the
user-conversation rows with them: one truth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twilio_emulator import Emulator, EmulatorConfig, TwilioError, run_emulator
from twilio_emulator.model import iso
from twilio_writes import TwilioWrites

from .conversation_support import CONV_SPEC, by_sid, interesting_conversations
from .helpers import session_for

NOT_FOUND = "The requested resource {} was not found"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


@pytest.fixture
def api(emu: Emulator) -> TwilioWrites:
    return TwilioWrites(emu)


def _busy(emu: Emulator) -> tuple[str, str]:
    """(service, conversation) with the most messages and users among its participants."""
    service = emu.default_service_sid
    convs = interesting_conversations(emu, service)
    conv = max(
        convs,
        key=lambda c: (
            sum(1 for p in emu.participants(service, c) if p["identity"]),
            len(emu.messages(service, c)),
        ),
    )
    return service, conv


def _row(emu: Emulator, service: str, user: str, conv: str) -> dict[str, Any] | None:
    rows = [r for r in emu.user_conversations(service, user) if r["conversation_sid"] == conv]
    return rows[0] if rows else None


def _conversation(emu: Emulator, service: str, conv: str) -> dict[str, Any]:
    return by_sid(emu.conversations(service))[conv]


def test_a_user_joining_and_leaving_shows_as_a_participant(
    emu: Emulator, api: TwilioWrites
) -> None:
    service, conv = _busy(emu)
    before = _conversation(emu, service, conv)
    history = emu.messages(service, conv)
    user = emu.store.create_user(service, "joiner@example.com")
    api.join(service, conv, "joiner@example.com")
    row = _row(emu, service, user, conv)
    assert row is not None
    participant = by_sid(emu.participants(service, conv))[row["participant_sid"]]
    assert participant["identity"] == "joiner@example.com"
    assert participant["last_read_message_index"] is None is participant["last_read_timestamp"]
    assert participant["date_created"] == participant["date_updated"] == iso(emu.store.now())
    assert row["links"]["participant"] == participant["url"]
    # Participant update = read state of the row; the participant's date_updated moves.
    api.update_participant(service, conv, participant["sid"], LastReadMessageIndex="3")
    after = by_sid(emu.participants(service, conv))[participant["sid"]]
    row = _row(emu, service, user, conv)
    assert row is not None
    assert after["last_read_message_index"] == 3 == row["last_read_message_index"]
    assert after["last_read_timestamp"] == history[3]["date_created"]
    assert after["date_updated"] > participant["date_updated"]
    # Removing the participant is the user leaving: the row goes too.
    api.remove_participant(service, conv, participant["sid"])
    assert participant["sid"] not in by_sid(emu.participants(service, conv))
    assert _row(emu, service, user, conv) is None
    # Joins and leaves do not move the conversation's date_updated, nor change its history.
    assert _conversation(emu, service, conv) == before
    assert emu.messages(service, conv) == history


def test_leave_over_the_user_endpoint_removes_the_participant(
    emu: Emulator, api: TwilioWrites
) -> None:
    service, conv = _busy(emu)
    history = emu.messages(service, conv)
    chat = [p for p in emu.participants(service, conv) if p["identity"]]
    leaver = chat[0]
    authored = [m for m in history if m["participant_sid"] == leaver["sid"]]
    assert authored, "the busiest conversation's first participant wrote something"
    api.leave(service, leaver["identity"], conv)
    assert leaver["sid"] not in by_sid(emu.participants(service, conv))
    # As on Twilio, their messages stay, still naming them.
    assert emu.messages(service, conv) == history
    emu.store.delete_user(service, chat[1]["identity"])
    assert chat[1]["sid"] not in by_sid(emu.participants(service, conv))
    assert emu.messages(service, conv) == history


def test_read_state_over_the_user_endpoint_is_the_participants(
    emu: Emulator, api: TwilioWrites
) -> None:
    service, conv = _busy(emu)
    participant = next(p for p in emu.participants(service, conv) if p["identity"])
    history = emu.messages(service, conv)
    api.set_read_state(service, participant["identity"], conv, LastReadMessageIndex="1")
    after = by_sid(emu.participants(service, conv))[participant["sid"]]
    assert after["last_read_message_index"] == 1
    assert after["last_read_timestamp"] == history[1]["date_created"]
    assert after["date_updated"] == iso(emu.store.now())
    # LastReadTimestamp of message 7 marks messages up to 7 as read.
    api.set_read_state(
        service, participant["identity"], conv, LastReadTimestamp=history[7]["date_created"]
    )
    assert (
        by_sid(emu.participants(service, conv))[participant["sid"]]["last_read_message_index"] == 7
    )


def test_sms_and_whatsapp_participants(emu: Emulator, api: TwilioWrites) -> None:
    service, conv = _busy(emu)
    before = emu.participants(service, conv)
    history = emu.messages(service, conv)
    sms = api.add_sms_participant(service, conv, "+15557654321", "+15017122661")
    whatsapp = api.add_sms_participant(
        service, conv, "whatsapp:+447700900123", "whatsapp:+15017122661"
    )
    added = by_sid(emu.participants(service, conv))
    assert len(added) == len(before) + 2
    assert added[sms]["identity"] is None and added[sms]["messaging_binding"] == {
        "type": "sms",
        "address": "+15557654321",
        "proxy_address": "+15017122661",
    }
    assert added[whatsapp]["messaging_binding"]["type"] == "whatsapp"
    base = f"{emu.base_url}/v1/Services/{service}/Conversations/{conv}/Participants"
    with session_for(emu) as session:
        duplicate = session.post(
            base,
            data={
                "MessagingBinding.Address": "+15557654321",
                "MessagingBinding.ProxyAddress": "+1",
            },
        )
        assert duplicate.status_code == 409 and duplicate.json()["code"] == 50416
        no_proxy = session.post(base, data={"MessagingBinding.Address": "+15550000000"})
        assert no_proxy.status_code == 400 and no_proxy.json()["code"] == 20001
        both = session.post(base, data={"Identity": "x", "MessagingBinding.Address": "+1555"})
        assert both.status_code == 400
        neither = session.post(base, data={})
        assert neither.status_code == 400 and neither.json()["code"] == 20001
    # An SMS participant writes: the message names it, and SMS delivery is summarised.
    message = api.post_message(service, conv, "+15557654321", "via SMS")
    row = emu.messages(service, conv)[-1]
    assert row["sid"] == message and row["participant_sid"] == sms
    assert row["delivery"] is not None and row["delivery"]["total"] >= 2
    api.remove_participant(service, conv, sms)
    api.remove_participant(service, conv, whatsapp)
    assert emu.participants(service, conv) == before
    assert emu.messages(service, conv)[: len(history)] == history


def test_post_edit_and_delete_messages(emu: Emulator, api: TwilioWrites) -> None:
    service, conv = _busy(emu)
    conversation = _conversation(emu, service, conv)
    history = emu.messages(service, conv)
    n = len(history)
    author = next(p for p in emu.participants(service, conv) if p["identity"])
    posted = api.post_message(service, conv, author["identity"], "first post")
    asc = emu.messages(service, conv)
    assert asc[:-1] == history and asc[-1]["sid"] == posted
    assert asc[-1]["index"] == n and asc[-1]["participant_sid"] == author["sid"]
    assert emu.messages(service, conv, "desc")[0] == asc[-1]
    # Edit a generated message and the posted one: body and date_updated change, nothing else.
    middle = history[n // 2]
    api.edit_message(service, conv, middle["sid"], Body="edited", Attributes='{"edited": true}')
    api.edit_message(service, conv, posted, Body="second thoughts")
    edited = by_sid(emu.messages(service, conv))
    assert edited[middle["sid"]]["body"] == "edited"
    assert edited[middle["sid"]]["attributes"] == '{"edited": true}'
    assert edited[middle["sid"]]["date_updated"] > middle["date_updated"]
    assert edited[middle["sid"]]["date_created"] == middle["date_created"]
    assert {
        k: v
        for k, v in edited[middle["sid"]].items()
        if k not in ("body", "attributes", "date_updated")
    } == {k: v for k, v in middle.items() if k not in ("body", "attributes", "date_updated")}
    assert edited[posted]["body"] == "second thoughts"
    assert edited[posted]["date_updated"] > edited[posted]["date_created"]
    # Delete one in the middle and the posted one: later indices do not change.
    api.delete_message(service, conv, middle["sid"])
    api.delete_message(service, conv, posted)
    remaining = emu.messages(service, conv)
    assert [m["index"] for m in remaining] == [i for i in range(n) if i != n // 2]
    assert remaining == [m for m in history if m["index"] != n // 2]
    with session_for(emu) as session:
        gone = session.get(middle["url"])
        assert gone.status_code == 404 and gone.json()["code"] == 20404
        assert session.delete(middle["url"]).status_code == 404
    # Indices are never reused; none of this moved the conversation's date_updated.
    api.post_message(service, conv, "system", "after deletes")
    assert emu.messages(service, conv)[-1]["index"] == n + 1
    assert _conversation(emu, service, conv)["date_updated"] == conversation["date_updated"]


def test_new_messages_grow_unread_counts_consistently(emu: Emulator, api: TwilioWrites) -> None:
    service, conv = _busy(emu)
    readers = [p for p in emu.participants(service, conv) if p["identity"]]
    for p in readers:
        api.set_read_state(service, p["identity"], conv, LastReadMessageIndex="0")
    api.post_message(service, conv, readers[0]["identity"])
    last = emu.messages(service, conv)[-1]["index"]
    for p in readers:
        row = _row(emu, service, p["identity"], conv)
        assert row is not None
        participant = by_sid(emu.participants(service, conv))[p["sid"]]
        assert row["last_read_message_index"] == participant["last_read_message_index"]
        expected_unread = 0 if p is readers[0] else min(1000, last)
        assert row["unread_messages_count"] == expected_unread


def test_closing_a_conversation(emu: Emulator, api: TwilioWrites) -> None:
    service = emu.default_service_sid
    conv = next(c for c in emu.conversations(service) if c["state"] == "active")
    user = emu.store.create_user(service, "closer@example.com")
    api.join(service, conv["sid"], "closer@example.com")
    api.update_conversation(service, conv["sid"], State="closed")
    closed = _conversation(emu, service, conv["sid"])
    assert closed["state"] == "closed" and set(closed["timers"]) == {"date_inactive", "date_closed"}
    assert closed["date_updated"] > conv["date_updated"]
    row = _row(emu, service, user, conv["sid"])
    assert row is not None and row["conversation_state"] == "closed"
    assert row["date_updated"] == closed["date_updated"]
    assert [c for c in emu.conversations(service) if c["sid"] == conv["sid"]] == [closed]


def test_removing_a_conversation(emu: Emulator, api: TwilioWrites) -> None:
    service, conv = _busy(emu)
    conversation = _conversation(emu, service, conv)
    members = [p for p in emu.participants(service, conv) if p["identity"]]
    message = emu.messages(service, conv)[0]
    participant = emu.participants(service, conv)[0]
    api.delete_conversation(service, conv)
    assert conv not in by_sid(emu.conversations(service))
    assert conv not in {p["conversation_sid"] for p in emu.all_participants()}
    assert conv not in {r["conversation_sid"] for r in emu.all_user_conversations()}
    for p in members:
        assert _row(emu, service, p["identity"], conv) is None
    with session_for(emu) as session:
        for url, path in (
            (conversation["url"], f"/Services/{service}/Conversations/{conv}"),
            (
                conversation["links"]["participants"],
                f"/Services/{service}/Conversations/{conv}/Participants",
            ),
            (
                conversation["links"]["messages"],
                f"/Services/{service}/Conversations/{conv}/Messages",
            ),
            (message["url"], f"/Services/{service}/Conversations/{conv}/Messages/{message['sid']}"),
            (
                participant["url"],
                f"/Services/{service}/Conversations/{conv}/Participants/{participant['sid']}",
            ),
            (f"{emu.base_url}/v1/Conversations/{conv}", f"/Conversations/{conv}"),
        ):
            response = session.get(url)
            assert response.status_code == 404
            assert response.json() == {
                "code": 20404,
                "message": NOT_FOUND.format(path),
                "more_info": "https://www.twilio.com/docs/errors/20404",
                "status": 404,
            }
        assert session.delete(conversation["url"]).status_code == 404
    with pytest.raises(TwilioError) as err:
        emu.store.conversation(service, conv)
    assert err.value.status == 404 and err.value.code == 20404
    # Its unique name is free again.
    if conversation["unique_name"]:
        created = api.create_conversation(service, UniqueName=conversation["unique_name"])
        assert created != conv


def test_writes_over_the_default_service_twins(emu: Emulator) -> None:
    service, conv = _busy(emu)
    base = f"{emu.base_url}/v1/Conversations/{conv}"
    with session_for(emu) as session:
        created = session.post(f"{base}/Messages", data={"Body": "twin", "Author": "system"})
        assert created.status_code == 201
        body = created.json()
        assert "chat_service_sid" not in body and body["url"] == f"{base}/Messages/{body['sid']}"
        edited = session.post(body["url"], data={"Body": "twin edited"})
        assert edited.status_code == 200 and edited.json()["body"] == "twin edited"
        assert session.delete(body["url"]).status_code == 204
    assert body["sid"] not in by_sid(emu.messages(service, conv))


def test_store_api_errors(emu: Emulator) -> None:
    store = emu.store
    service, conv = _busy(emu)
    missing = "IM" + "0" * 32
    calls: list[Callable[[], object]] = [
        lambda: store.message(service, conv, missing),
        lambda: store.update_message(service, conv, missing, body="x"),
        lambda: store.delete_message(service, conv, missing),
        lambda: store.participant(service, conv, "MB" + "0" * 32),
        lambda: store.remove_participant(service, conv, "MB" + "0" * 32),
        lambda: store.delete_conversation(service, "CH" + "0" * 32),
    ]
    for call in calls:
        with pytest.raises(TwilioError) as err:
            call()
        assert err.value.status == 404
    with pytest.raises(TwilioError) as err:
        store.messages(service, conv, order="sideways")
    assert err.value.status == 400
