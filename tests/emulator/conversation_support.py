"""Shared by the tests of the conversation, participant and message endpoints; `validate`,
`properties` and `META_KEYS` by every spec test of the emulator (test_schema.py too)."""

from __future__ import annotations

from typing import Any

import requests
from twilio_emulator import DataSpec, Emulator

#: Small enough to compare every row, big enough for every kind: 96 conversations (some
#: without messages, many with more than 100), 230 participants (SMS and WhatsApp ones among
#: them) and about 8,000 messages (media, "system" ones, delivery summaries).
CONV_SPEC = DataSpec(seed=3, services=2, users=10, max_conversations=24)

TWILIO = "https://conversations.twilio.com"

SCHEMAS = {
    # key -> (service-scoped schema, default-service twin schema)
    "conversations": (
        "conversations.v1.service.service_conversation",
        "conversations.v1.conversation",
    ),
    "participants": (
        "conversations.v1.service.service_conversation.service_conversation_participant",
        "conversations.v1.conversation.conversation_participant",
    ),
    "messages": (
        "conversations.v1.service.service_conversation.service_conversation_message",
        "conversations.v1.conversation.conversation_message",
    ),
}
META_KEYS = {
    "page",
    "page_size",
    "first_page_url",
    "previous_page_url",
    "url",
    "next_page_url",
    "key",
}


def validate(openapi: Any, emu: Emulator, response: requests.Response) -> None:
    """Validate ``response`` against the spec as if it came from Twilio's host."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    url = response.request.url
    method = response.request.method
    assert url is not None and method is not None
    as_twilio = requests.Request(method, TWILIO + url[len(emu.base_url) :])
    openapi.validate_response(RequestsOpenAPIRequest(as_twilio), RequestsOpenAPIResponse(response))


def properties(spec: dict[str, Any], name: str) -> set[str]:
    return set(spec["components"]["schemas"][name]["properties"])


def by_sid(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["sid"]: row for row in rows}


def interesting_conversations(emu: Emulator, service_sid: str) -> list[str]:
    """Conversations of every kind: most messages, none, SMS / WhatsApp participants, most
    participants."""
    convs = [c["sid"] for c in emu.conversations(service_sid)]
    counts = {c: len(emu.messages(service_sid, c)) for c in convs}
    parts = {c: emu.participants(service_sid, c) for c in convs}
    chosen = [
        max(convs, key=counts.__getitem__),
        min(convs, key=counts.__getitem__),
        max(convs, key=lambda c: len(parts[c])),
    ]
    chosen += [c for c in convs if any(p["messaging_binding"] for p in parts[c])][:2]
    return list(dict.fromkeys(chosen))
