"""In-memory records of the store.

Memberships (a user in a conversation) are the bulk of the data — a million of them in the scale
test — so they are plain tuples in a per-user list sorted by conversation SID, about 190 bytes
each. Everything a membership row shows about its conversation (names, state, timers, dates) lives
once on the :class:`Conversation`, which is also why a conversation update shows in every
participant's row at once while read-state changes touch only one tuple.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple


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
