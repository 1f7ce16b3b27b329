"""Generated history, derived instead of stored: messages and non-user participants.

A conversation of the generated data set says only how many messages it has
(``history_count``) and over which time they were written (``date_created`` ..
``history_end``). Everything else about message ``i`` (SID, author, body, media, attributes)
is a pure function of the conversation SID and ``i``, computed when a page needs it, from one
BLAKE2b digest. A million-row data set has tens of millions of messages; none of them exists
until it is served, and generation does no extra work. The conversation SID already depends on
the data seed, so a seed is still a data set.

Likewise some generated conversations have SMS or WhatsApp participants (no identity, a
messaging binding), derived from the conversation SID when the service's participant index is
first built.

Times. Message ``i`` of ``n`` is written at ``start + ceil((i + 1) * span / n)`` with
``span = history_end - start``: strictly after the conversation was created, the last one at
``history_end`` (before the conversation went inactive, or before the data set's "now").
:func:`history_index_at` is its exact inverse, used to turn a ``LastReadTimestamp`` into an
index.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from .model import Author, Conversation, Message, NonUserParticipant

#: Share of generated conversations with SMS / WhatsApp participants (in 1/256).
_NON_USER_SHARE = 56
#: Share of generated messages sent by "system" rather than a participant (in 1/256).
_SYSTEM_SHARE = 18
#: Share of generated messages that carry media instead of a body (in 1/256).
_MEDIA_SHARE = 8
#: Share of generated messages with attributes other than "{}" (in 1/256).
_ATTRIBUTES_SHARE = 40

BODIES = (
    "Hi! How can I help you today?",
    "Thanks, that works for me.",
    "Could you send me the order number?",
    "I'll check with the team and get back to you.",
    "The delivery is scheduled for tomorrow between 9:00 and 12:00.",
    "Sure 👍",
    "Can we move the meeting to 3pm?",
    "Invoice attached. Let me know if anything is missing.",
    "ok",
    "Great, see you then!",
    "Das Paket ist angekommen, danke!",
    "¿Podemos hablar mañana por la mañana?",
    "我明天再联系你。",
    'The tracking link says "in transit" since Monday.',
    "Line one\nLine two\nLine three",
    "Please reset my password for account #48213.",
    '{"this": "looks like JSON but is a message body"}',
    "Reminder: your appointment is on Friday at 10:30.",
    "Sorry for the delay — we had an outage this morning.",
    "   leading and trailing spaces   ",
    "Can you confirm the address: 12 Rue de la Paix, 75002 Paris?",
    "👋😀🎉",
    "Closing this ticket now. Reply to reopen.",
    "The quick brown fox jumps over the lazy dog. " * 30,
)
ATTRIBUTES = (
    '{"importance": "high"}',
    '{"source": "widget", "tags": ["new"]}',
    '{"reply_to": 3}',
    '{"channel": "email", "subject": "Re: your order"}',
)
MEDIA_TYPES = (
    ("image/jpeg", "photo.jpg"),
    ("image/png", "screenshot.png"),
    ("application/pdf", "invoice.pdf"),
    ("audio/ogg", "voice-note.ogg"),
)
PARTICIPANT_ATTRIBUTES = ("{}", "{}", '{"role": "customer"}', '{"source": "sms-campaign"}')


def _digest(*parts: str) -> bytes:
    return blake2b("/".join(parts).encode(), digest_size=32).digest()


def message_sid(conversation_sid: str, index: int) -> str:
    """The SID of generated message ``index`` (``IM`` + 32 hex)."""
    return "IM" + _digest(conversation_sid, str(index))[:16].hex()


def history_time(conv: Conversation, index: int) -> int:
    """Epoch seconds at which generated message ``index`` was written."""
    n = conv.history_count
    span = conv.history_end - conv.date_created
    return conv.date_created + ((index + 1) * span + n - 1) // n


def history_index_at(conv: Conversation, ts: int) -> int | None:
    """Index of the last generated message written at or before ``ts`` (0 when none yet).

    None when the conversation has no generated history. The inverse of :func:`history_time`.
    """
    n = conv.history_count
    if n == 0:
        return None
    span = max(1, conv.history_end - conv.date_created)
    written = min(n, max(0, (ts - conv.date_created) * n // span))
    return max(0, written - 1)


def message_time(conv: Conversation, index: int | None) -> int | None:
    """When message ``index`` was written (generated or posted), None when there is none."""
    if index is None or index < 0:
        return None
    if index < conv.history_count:
        return history_time(conv, index)
    posted = index - conv.history_count
    return conv.posted_at[posted] if posted < len(conv.posted_at) else None


def delivery(non_chat: int) -> dict[str, Any] | None:
    """Twilio's delivery summary for ``non_chat`` SMS / WhatsApp recipients (None: chat only)."""
    if non_chat == 0:
        return None
    return {
        "total": non_chat,
        "sent": "all",
        "delivered": "all",
        "read": "none",
        "failed": "none",
        "undelivered": "none",
    }


def generated_message(conv: Conversation, index: int, authors: tuple[Author, ...]) -> Message:
    """Generated message ``index`` of ``conv``, written by one of ``authors`` (or "system")."""
    d = _digest(conv.sid, str(index))
    ts = history_time(conv, index)
    author, participant_sid = "system", None
    if d[16] >= _SYSTEM_SHARE:
        present = [a for a in authors if a.joined <= ts]
        if present:
            chosen = present[int.from_bytes(d[17:19]) % len(present)]
            author, participant_sid = chosen.name, chosen.participant_sid
    body: str | None = BODIES[int.from_bytes(d[19:21]) % len(BODIES)]
    media: list[dict[str, Any]] | None = None
    if d[21] < _MEDIA_SHARE:
        content_type, filename = MEDIA_TYPES[d[22] % len(MEDIA_TYPES)]
        body = None
        media = [
            {
                "sid": "ME" + d[:16][::-1].hex(),
                "size": 1024 + int.from_bytes(d[23:26]) % 2_000_000,
                "content_type": content_type,
                "filename": filename,
            }
        ]
    attributes = "{}"
    if d[26] < _ATTRIBUTES_SHARE:
        attributes = ATTRIBUTES[d[27] % len(ATTRIBUTES)]
    return Message(
        sid="IM" + d[:16].hex(),
        index=index,
        author=author,
        body=body,
        media=media,
        attributes=attributes,
        participant_sid=participant_sid,
        date_created=ts,
        date_updated=ts,
        delivery=delivery(sum(1 for a in authors if not a.chat)),
    )


def _number(d: bytes, offset: int) -> str:
    """Seven digits from the digest (a fictional 555 number's tail)."""
    return f"{int.from_bytes(d[offset : offset + 4]) % 10_000_000:07d}"


def generated_non_users(conv: Conversation, proxy_suffix: str) -> list[NonUserParticipant]:
    """The SMS / WhatsApp participants a generated conversation has (most have none).

    ``proxy_suffix`` (seven digits) makes the service's Twilio number, the proxy address.
    """
    # The conversation SID is random already: its last byte decides, no digest needed.
    if not conv.generated or int(conv.sid[-2:], 16) >= _NON_USER_SHARE:
        return []
    d = _digest(conv.sid, "non-user-participants")
    count = 1 + d[1] % 2
    out = []
    for k in range(count):
        whatsapp = d[2 + k] < 80
        address = f"+1555{_number(d, 4 + 4 * k)}"
        proxy = f"+1501{proxy_suffix}"
        if whatsapp:
            address, proxy = f"whatsapp:{address}", f"whatsapp:{proxy}"
        out.append(
            NonUserParticipant(
                sid="MB" + _digest(conv.sid, "non-user", str(k))[:16].hex(),
                binding={
                    "type": "whatsapp" if whatsapp else "sms",
                    "address": address,
                    "proxy_address": proxy,
                },
                attributes=PARTICIPANT_ATTRIBUTES[d[12 + k] % len(PARTICIPANT_ATTRIBUTES)],
                date_created=conv.date_created,
                date_updated=conv.date_created,
            )
        )
    return out
