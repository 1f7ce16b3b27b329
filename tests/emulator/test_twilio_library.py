"""Twilio's own Python helper library, pointed at the emulator, reads exactly the store's rows."""

from __future__ import annotations

from typing import Any

import pytest
from twilio_emulator import Emulator

twilio_rest = pytest.importorskip("twilio.rest")


def _client(emu: Emulator) -> Any:
    client = twilio_rest.Client(emu.account_sid, emu.auth_token)
    client.conversations.base_url = emu.base_url
    return client


def _as_dict(record: Any, fields: list[str]) -> dict[str, Any]:
    return {field: getattr(record, field) for field in fields}


FIELDS = [
    "account_sid",
    "chat_service_sid",
    "conversation_sid",
    "unread_messages_count",
    "last_read_message_index",
    "participant_sid",
    "user_sid",
    "friendly_name",
    "conversation_state",
    "timers",
    "attributes",
    "created_by",
    "notification_level",
    "unique_name",
    "url",
    "links",
]


def test_full_walk_with_the_twilio_library(emu: Emulator) -> None:
    client = _client(emu)
    services = client.conversations.v1.services.list()
    assert [s.sid for s in services] == [s["sid"] for s in emu.services()]
    walked: list[dict[str, Any]] = []
    for service in services:
        users = client.conversations.v1.services(service.sid).users.list(page_size=7)
        assert [u.sid for u in users] == [u["sid"] for u in emu.users(service.sid)]
        for user in users:
            rows = (
                client.conversations.v1.services(service.sid)
                .users(user.sid)
                .user_conversations.stream(page_size=20)
            )
            walked.extend(_as_dict(r, FIELDS) for r in rows)
    truth = [{f: row[f] for f in FIELDS} for row in emu.all_user_conversations()]
    assert len(walked) == len(truth) > 500
    assert walked == truth


def test_dates_parse_as_the_library_expects(emu: Emulator) -> None:
    client = _client(emu)
    service_sid = emu.default_service_sid
    user = emu.users(service_sid)[0]["sid"]
    truth = emu.user_conversations(service_sid, user)
    rows = client.conversations.v1.services(service_sid).users(user).user_conversations.list()
    assert [r.date_updated.strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows] == [
        r["date_updated"] for r in truth
    ]


def test_default_service_twins_with_the_twilio_library(emu: Emulator) -> None:
    client = _client(emu)
    users = client.conversations.v1.users.list()
    assert [u.sid for u in users] == [u["sid"] for u in emu.users(emu.default_service_sid)]
    user = max(users, key=lambda u: len(emu.user_conversations(emu.default_service_sid, u.sid)))
    rows = client.conversations.v1.users(user.sid).user_conversations.list()
    truth = emu.user_conversations(emu.default_service_sid, user.sid)
    assert [r.conversation_sid for r in rows] == [r["conversation_sid"] for r in truth]
    assert len(rows) > 50


def test_library_writes_change_the_store(fresh_emu: Emulator) -> None:
    client = _client(fresh_emu)
    service_sid = fresh_emu.default_service_sid
    service = client.conversations.v1.services(service_sid)
    user = service.users.create(identity="lib@example.com")
    conversation = service.conversations.create(friendly_name="via library")
    service.conversations(conversation.sid).participants.create(identity="lib@example.com")
    service.conversations(conversation.sid).messages.create(author="system", body="hello")
    updated = (
        service.users(user.sid)
        .user_conversations(conversation.sid)
        .update(last_read_message_index=0)
    )
    assert updated.unread_messages_count == 0
    service.conversations(conversation.sid).messages.create(author="system", body="again")
    rows = fresh_emu.user_conversations(service_sid, user.sid)
    assert [(r["conversation_sid"], r["unread_messages_count"]) for r in rows] == [
        (conversation.sid, 1)
    ]
    assert service.users(user.sid).user_conversations(conversation.sid).delete() is True
    assert fresh_emu.user_conversations(service_sid, user.sid) == []
