"""Twilio's own helper library walks the conversation, participant and message lists (every
page) and reads exactly the emulator's truth, field for field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from twilio_emulator import Emulator, EmulatorConfig, run_emulator

from .conversation_support import CONV_SPEC

twilio_rest = pytest.importorskip("twilio.rest")


@pytest.fixture(scope="module")
def cemu() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


def _client(emu: Emulator) -> Any:
    client = twilio_rest.Client(emu.account_sid, emu.auth_token)
    client.conversations.base_url = emu.base_url
    return client


def _as_row(record: Any, fields: Any) -> dict[str, Any]:
    """The record's attributes named like the truth row's fields, dates back in Twilio's form."""
    out = {}
    for name in fields:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%dT%H:%M:%SZ")
        out[name] = value
    return out


def test_full_walk_of_the_three_lists_with_the_twilio_library(cemu: Emulator) -> None:
    client = _client(cemu)
    seen = {"conversations": 0, "participants": 0, "messages": 0}
    for service in client.conversations.v1.services.list():
        api = client.conversations.v1.services(service.sid)
        truth = cemu.conversations(service.sid)
        conversations = [_as_row(c, truth[0]) for c in api.conversations.stream(page_size=7)]
        assert conversations == truth
        seen["conversations"] += len(truth)
        for conv in truth:
            participants = cemu.participants(service.sid, conv["sid"])
            walked = api.conversations(conv["sid"]).participants.stream(page_size=2)
            fields = participants[0] if participants else {}
            assert [_as_row(p, fields) for p in walked] == participants
            seen["participants"] += len(participants)
            messages = cemu.messages(service.sid, conv["sid"])
            ctx = api.conversations(conv["sid"]).messages
            fields = messages[0] if messages else {}
            assert [_as_row(m, fields) for m in ctx.stream(page_size=40)] == messages
            newest_first = [_as_row(m, fields) for m in ctx.stream(order="desc")]
            assert newest_first == cemu.messages(service.sid, conv["sid"], "desc")
            assert newest_first == messages[::-1]
            seen["messages"] += len(messages)
    assert seen == {
        "conversations": len(cemu.all_conversations()),
        "participants": len(cemu.all_participants()),
        "messages": len(cemu.all_messages()),
    }
    assert seen["conversations"] > 50 and seen["participants"] > 100 and seen["messages"] > 5000


def test_default_service_twins_with_the_twilio_library(cemu: Emulator) -> None:
    client = _client(cemu)
    service = cemu.default_service_sid
    truth = cemu.conversations(service)
    listed = client.conversations.v1.conversations.list(page_size=11)
    assert [c.sid for c in listed] == [c["sid"] for c in truth]
    assert all(c.url.startswith(f"{cemu.base_url}/v1/Conversations/CH") for c in listed)
    conv = max(truth, key=lambda c: len(cemu.participants(service, c["sid"])))["sid"]
    participants = client.conversations.v1.conversations(conv).participants.list()
    assert [p.sid for p in participants] == [p["sid"] for p in cemu.participants(service, conv)]
    messages = client.conversations.v1.conversations(conv).messages.list(order="desc", limit=5)
    assert [m.index for m in messages] == [
        m["index"] for m in cemu.messages(service, conv, "desc")[:5]
    ]


def test_writes_through_the_twilio_library() -> None:
    """Create, edit and delete through the library; the emulator's truth follows."""
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as emu:
        client = _client(emu)
        service = emu.default_service_sid
        api = client.conversations.v1.services(service)
        conv = api.conversations.create(friendly_name="Library test")
        sms = api.conversations(conv.sid).participants.create(
            messaging_binding_address="+15550002222",
            messaging_binding_proxy_address="+15017122661",
        )
        chat = api.conversations(conv.sid).participants.create(identity="lib@example.com")
        message = api.conversations(conv.sid).messages.create(author="+15550002222", body="hi")
        assert message.participant_sid == sms.sid and message.index == 0
        api.conversations(conv.sid).messages(message.sid).update(body="hello")
        assert [m["body"] for m in emu.messages(service, conv.sid)] == ["hello"]
        assert {p["sid"] for p in emu.participants(service, conv.sid)} == {sms.sid, chat.sid}
        assert api.conversations(conv.sid).participants(sms.sid).delete()
        assert api.conversations(conv.sid).messages(message.sid).delete()
        assert [p["sid"] for p in emu.participants(service, conv.sid)] == [chat.sid]
        assert emu.messages(service, conv.sid) == []
        assert api.conversations(conv.sid).delete()
        assert conv.sid not in {c["sid"] for c in emu.conversations(service)}
