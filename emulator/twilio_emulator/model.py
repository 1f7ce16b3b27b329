"""In-memory records of the store.

Memberships (a user in a conversation) are the bulk of the data — a million of them in the scale
test — so they are plain tuples in a per-user list sorted by conversation SID, about 190 bytes
each. Everything a membership row shows about its conversation (names, state, timers, dates) lives
once on the :class:`Conversation`, which is also why a conversation update shows in every
participant's row at once while read-state changes touch only one tuple.

Conversations, participants and messages are one truth with those rows:

* a user's :class:`Membership` *is* their participant of the conversation (same SID, same read
  horizon); :class:`Roster` is the per-conversation index of participants (users and non-user
  SMS / WhatsApp participants), built per service on first need, not at generation;
* messages are not stored: generated history is *derived* from the conversation (index ``i`` of
  ``history_count``, see :mod:`twilio_emulator.history`); only what the API changed is kept in
  :class:`ConversationChanges` (posted, edited, deleted messages, touched participants).
"""

from __future__ import annotations

import bisect
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple


class Membership(NamedTuple):
    """One user's place in one conversation (what ``/Users/{US}/Conversations`` lists)."""

    conversation_sid: str
    participant_sid: str
    muted: bool
    #: None until the read position is set; unread count is then also None.
    last_read_message_index: int | None


@dataclass(slots=True)
class Conversation:
    """A conversation of a service. Timestamps are integer epoch seconds."""

    sid: str
    friendly_name: str | None
    unique_name: str | None
    attributes: str
    state: str
    created_by: str
    date_created: int
    date_updated: int
    date_inactive: int | None
    date_closed: int | None
    #: Messages have indices 0..message_count-1; the emulator keeps counts, not bodies.
    message_count: int
    #: Epoch seconds of messages posted through the API (generated history has none).
    posted_at: list[int] = field(default_factory=list)
    #: Number of generated messages (posted_at covers the ones after them).
    history_count: int = 0
    #: Generated history is spread evenly over (date_created, history_end]; 0 when none.
    history_end: int = 0
    #: Made by the generator (then it may have derived non-user participants and history).
    generated: bool = False
    #: What the API changed about its messages and participants (None: nothing yet).
    changes: ConversationChanges | None = None

    def unread(self, last_read: int | None) -> int | None:
        """Unread count for a participant whose read horizon is ``last_read`` (capped at 1000)."""
        if last_read is None:
            return None
        return min(1000, max(0, self.message_count - 1 - last_read))


@dataclass(slots=True)
class User:
    """A user of a service with their memberships sorted by conversation SID."""

    sid: str
    identity: str
    friendly_name: str | None
    attributes: str
    role_sid: str
    date_created: int
    date_updated: int
    memberships: list[Membership] = field(default_factory=list)


@dataclass(slots=True)
class Service:
    """A Conversations service with its users (sorted SID list + indexes) and conversations."""

    sid: str
    friendly_name: str
    date_created: int
    date_updated: int
    is_default: bool
    role_sid: str
    user_sids: list[str] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)
    users_by_identity: dict[str, User] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    conversations_by_unique_name: dict[str, Conversation] = field(default_factory=dict)
    #: Conversation SIDs, sorted (the order of ``GET /Services/{IS}/Conversations``).
    conversation_sids: list[str] = field(default_factory=list)
    #: Participants per conversation SID; None until first needed (see ``Store._rosters``).
    rosters: dict[str, Roster] | None = None


class Roster:
    """The participants of one conversation, sorted by participant SID.

    Two parallel lists (SIDs, owners) rather than a list of tuples: at a million memberships
    that is 16 bytes per participant instead of 64. An owner is the user's SID (a chat
    participant, whose read state lives in the user's :class:`Membership`) or the
    :class:`NonUserParticipant` itself.
    """

    __slots__ = ("owners", "ready", "sids")

    def __init__(self, ready: bool = True) -> None:
        self.sids: list[str] = []
        self.owners: list[str | NonUserParticipant] = []
        #: False while freshly built: not yet sorted, derived participants not yet added
        #: (``Store._roster`` finishes it on first use).
        self.ready = ready

    def finish(self, extra: list[NonUserParticipant]) -> None:
        """Add ``extra`` participants and sort: the roster is then ready for use."""
        sids, owners = self.sids, self.owners
        for p in extra:
            sids.append(p.sid)
            owners.append(p)
        if len(sids) > 1:
            order = sorted(range(len(sids)), key=sids.__getitem__)
            self.sids = [sids[i] for i in order]
            self.owners = [owners[i] for i in order]
        self.ready = True

    def find(self, sid: str) -> int:
        """Position of participant ``sid``, or -1."""
        i = bisect.bisect_left(self.sids, sid)
        return i if i < len(self.sids) and self.sids[i] == sid else -1

    def add(self, sid: str, owner: str | NonUserParticipant) -> None:
        i = bisect.bisect_left(self.sids, sid)
        self.sids.insert(i, sid)
        self.owners.insert(i, owner)

    def remove(self, sid: str) -> None:
        i = self.find(sid)
        if i >= 0:
            del self.sids[i]
            del self.owners[i]

    def __len__(self) -> int:
        return len(self.sids)


@dataclass(slots=True)
class NonUserParticipant:
    """An SMS / WhatsApp participant: no identity, a messaging binding instead."""

    sid: str
    #: ``{"type": "sms"|"whatsapp", "address": ..., "proxy_address": ...}``
    binding: dict[str, str]
    attributes: str
    date_created: int
    date_updated: int
    last_read_message_index: int | None = None


@dataclass(slots=True)
class ParticipantState:
    """What the API changed about a user's participant (its read state is the membership's)."""

    date_created: int
    date_updated: int
    attributes: str = "{}"


class Author(NamedTuple):
    """Who may have written a generated message: a participant when history was made."""

    participant_sid: str
    #: Identity of a user, address of a non-user participant (what ``author`` shows).
    name: str
    joined: int
    chat: bool


@dataclass(slots=True)
class Message:
    """One message as served (derived for generated history, stored once the API touched it)."""

    sid: str
    index: int
    author: str
    body: str | None
    media: list[dict[str, Any]] | None
    attributes: str
    participant_sid: str | None
    date_created: int
    date_updated: int
    delivery: dict[str, Any] | None


@dataclass(slots=True)
class ConversationChanges:
    """The API's changes to a conversation's messages and participants."""

    #: Messages posted through the API and not deleted, in index order.
    posted: list[Message] = field(default_factory=list)
    #: Generated messages edited through the API, by index.
    edited: dict[int, Message] = field(default_factory=dict)
    #: Generated messages deleted through the API (their indices are never reused).
    deleted: set[int] = field(default_factory=set)
    #: User participants joined or changed through the API, by participant SID.
    participants: dict[str, ParticipantState] = field(default_factory=dict)
    #: The generated history's possible authors, frozen before the roster first changed.
    authors: tuple[Author, ...] | None = None


@dataclass(frozen=True, slots=True)
class ParticipantView:
    """A participant as served, whichever kind (see ``Store.participant_views``)."""

    sid: str
    conversation_sid: str
    identity: str | None
    attributes: str
    messaging_binding: dict[str, str] | None
    role_sid: str
    date_created: int
    date_updated: int
    last_read_message_index: int | None
    last_read_timestamp: int | None


@lru_cache(maxsize=4096)
def derived_sid(prefix: str, *parts: str) -> str:
    """A SID that is a pure function of ``parts`` (e.g. a service's conversation role)."""
    digest = hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
    return f"{prefix}{digest}"


@lru_cache(maxsize=1 << 16)
def iso(ts: int) -> str:
    """Twilio's timestamp format: ISO 8601, UTC, whole seconds (``2015-07-30T20:00:00Z``).

    Cached: a page repeats few distinct timestamps and formatting was a quarter of its cost.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_iso(value: str) -> int:
    """Parse Twilio's ISO 8601 timestamp (``Z`` or an offset) into epoch seconds."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {value!r}")
    return int(dt.timestamp())


def participant_role_sid(service_sid: str) -> str:
    """The conversation-scoped role of a service's participants (Twilio's "channel user")."""
    return derived_sid("RL", service_sid, "conversation-participant-role")


def messaging_service_sid(service_sid: str) -> str:
    """The Messaging Service (MG…) a service's conversations send SMS / WhatsApp through."""
    return derived_sid("MG", service_sid, "messaging-service")
