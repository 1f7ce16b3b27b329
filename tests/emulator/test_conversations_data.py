"""Conversations, participants and messages are one truth with the user-conversation rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, Store, run_emulator
from twilio_emulator.history import history_index_at, history_time
from twilio_emulator.model import iso

from .conversation_support import CONV_SPEC, by_sid


@pytest.fixture(scope="module")
def cemu() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


def _messages_by_conversation(emu: Emulator) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in emu.all_messages():
        out.setdefault(m["conversation_sid"], []).append(m)
    return out


def test_a_user_in_a_conversation_is_its_participant(cemu: Emulator) -> None:
    rows = cemu.all_user_conversations()
    participants = by_sid(cemu.all_participants())
    messages = {(m["conversation_sid"], m["index"]): m for m in cemu.all_messages()}
    identities = {u["sid"]: u["identity"] for s in cemu.services() for u in cemu.users(s["sid"])}
    assert len(rows) > 100
    for row in rows:
        p = participants[row["participant_sid"]]
        assert p["conversation_sid"] == row["conversation_sid"]
        assert p["chat_service_sid"] == row["chat_service_sid"]
        assert p["identity"] == identities[row["user_sid"]]
        assert p["messaging_binding"] is None
        assert p["last_read_message_index"] == row["last_read_message_index"]
        assert p["url"] == row["links"]["participant"]
        if row["last_read_message_index"] is None:
            assert p["last_read_timestamp"] is None
        else:
            read = messages[(row["conversation_sid"], row["last_read_message_index"])]
            assert p["last_read_timestamp"] == read["date_created"]
            # A participant that joined later may have read older messages; its last change
            # is whichever came last, joining or reading.
            assert p["date_updated"] == max(p["date_created"], p["last_read_timestamp"])
    # Conversely, every chat participant is a user's row.
    chat = [p for p in participants.values() if p["identity"] is not None]
    assert {p["sid"] for p in chat} == {r["participant_sid"] for r in rows}


def test_message_indices_agree_with_unread_counts(cemu: Emulator) -> None:
    by_conv = _messages_by_conversation(cemu)
    checked = 0
    for row in cemu.all_user_conversations():
        indices = [m["index"] for m in by_conv.get(row["conversation_sid"], [])]
        assert indices == list(range(len(indices)))
        if row["last_read_message_index"] is not None:
            last = indices[-1]
            assert row["unread_messages_count"] == min(1000, last - row["last_read_message_index"])
            checked += 1
    assert checked > 50


def test_conversations_are_the_rows_conversations(cemu: Emulator) -> None:
    conversations = by_sid(cemu.all_conversations())
    fields = {
        "friendly_name": "friendly_name",
        "conversation_state": "state",
        "timers": "timers",
        "attributes": "attributes",
        "date_created": "date_created",
        "date_updated": "date_updated",
        "unique_name": "unique_name",
        "chat_service_sid": "chat_service_sid",
    }
    for row in cemu.all_user_conversations():
        conv = conversations[row["conversation_sid"]]
        assert {k: row[k] for k in fields} == {k: conv[v] for k, v in fields.items()}
        assert row["links"]["conversation"] == conv["url"]
    # Conversations nobody is in are listed too.
    assert len(conversations) > len({r["conversation_sid"] for r in cemu.all_user_conversations()})


def test_messages_are_realistic_and_consistent(cemu: Emulator) -> None:
    now = iso(cemu.store.now())
    conversations = by_sid(cemu.all_conversations())
    participants = by_sid(cemu.all_participants())
    messages = cemu.all_messages()
    assert len(messages) > 5000
    for m in messages:
        conv = conversations[m["conversation_sid"]]
        assert conv["date_created"] < m["date_created"] == m["date_updated"] < now
        if conv["state"] != "active":
            assert m["date_created"] <= conv["timers"]["date_inactive"]
        if m["participant_sid"] is None:
            assert m["author"] == "system"
        else:
            author = participants[m["participant_sid"]]
            assert author["conversation_sid"] == m["conversation_sid"]
            name = author["identity"] or author["messaging_binding"]["address"]
            assert m["author"] == name
            assert author["date_created"] <= m["date_created"]
        assert (m["body"] is None) == (m["media"] is not None)
    by_conv = _messages_by_conversation(cemu)
    for rows in by_conv.values():
        assert [r["date_created"] for r in rows] == sorted(r["date_created"] for r in rows)
    assert Counter(m["author"] == "system" for m in messages)[True] > 100
    assert sum(1 for m in messages if m["media"]) > 20
    assert any(m["delivery"] for m in messages) and any(m["attributes"] != "{}" for m in messages)
    assert len({m["sid"] for m in messages}) == len(messages)


def test_some_participants_are_sms_or_whatsapp(cemu: Emulator) -> None:
    participants = cemu.all_participants()
    kinds = Counter((p["messaging_binding"] or {}).get("type", "chat") for p in participants)
    assert kinds["sms"] > 0 and kinds["whatsapp"] > 0 and kinds["chat"] > kinds["sms"]
    for p in participants:
        binding = p["messaging_binding"]
        assert (p["identity"] is None) == (binding is not None)
        assert p["role_sid"].startswith("RL") and p["sid"].startswith("MB")
        if binding is not None:
            assert set(binding) == {"type", "address", "proxy_address"}
            prefix = "whatsapp:+" if binding["type"] == "whatsapp" else "+"
            assert binding["address"].startswith(prefix)
            assert binding["proxy_address"].startswith(prefix)
            assert p["last_read_message_index"] is None
    # A service's SMS participants talk to its one Twilio number.
    for service in cemu.services():
        proxies = {
            p["messaging_binding"]["proxy_address"].removeprefix("whatsapp:")
            for p in participants
            if p["chat_service_sid"] == service["sid"] and p["messaging_binding"]
        }
        assert len(proxies) <= 1


def test_messages_with_sms_participants_have_a_delivery_summary(cemu: Emulator) -> None:
    participants = cemu.all_participants()
    non_chat = Counter(p["conversation_sid"] for p in participants if p["messaging_binding"])
    for m in cemu.all_messages():
        n = non_chat.get(m["conversation_sid"], 0)
        if n:
            assert m["delivery"] is not None and m["delivery"]["total"] == n
        else:
            assert m["delivery"] is None


def _everything(spec: DataSpec) -> tuple[Any, ...]:
    emu = Emulator(EmulatorConfig(data=spec, public_url="http://emulator.test"))
    return emu.all_conversations(), emu.all_participants(), emu.all_messages()


def test_same_seed_same_conversations_participants_messages() -> None:
    spec = DataSpec(seed=21, services=1, users=6, max_conversations=15)
    first = _everything(spec)
    assert first == _everything(spec)
    other = _everything(DataSpec(seed=22, services=1, users=6, max_conversations=15))
    for mine, theirs in zip(first, other, strict=True):
        assert mine and theirs
        assert {r["sid"] for r in mine}.isdisjoint({r["sid"] for r in theirs})


def test_history_timestamps_and_their_inverse() -> None:
    store = Store.generate(
        DataSpec(seed=4, services=1, users=20, max_conversations=40), "AC" + "2" * 32
    )
    checked = 0
    with store.lock:
        for conv in store.services[store.default_service_sid].conversations.values():
            n = conv.history_count
            times = [history_time(conv, i) for i in range(n)]
            assert times == sorted(times)
            assert all(conv.date_created < t <= conv.history_end < store.now() for t in times)
            for i, t in enumerate(times):
                assert history_index_at(conv, t) == i
                checked += 1
            if n:
                assert history_index_at(conv, conv.date_created) == 0
                assert history_index_at(conv, store.now() + 10**6) == n - 1
    assert checked > 1000


def test_single_fetches_equal_the_list_rows(cemu: Emulator) -> None:
    service = cemu.default_service_sid
    conversation = max(
        cemu.conversations(service), key=lambda c: len(cemu.participants(service, c["sid"]))
    )["sid"]
    store = cemu.store
    for view in store.participant_views(service, conversation):
        assert store.participant(service, conversation, view.sid) == view
        if view.identity is not None:
            assert store.participant(service, conversation, view.identity) == view
    for m in store.messages(service, conversation):
        assert store.message(service, conversation, m.sid) == m
