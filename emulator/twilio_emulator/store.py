"""The emulator's state and every mutation Twilio's API allows on it.

One re-entrant lock guards everything: mutations take it, and the HTTP layer holds it while it
slices and renders a page, so a page is always a consistent snapshot. Pages are small (≤1000
rows) so the lock is held for well under a millisecond.

A logical clock starts at the data set's "now" and moves at least one second per mutation, so
second-precision timestamps of successive changes always differ and are always newer than the
generated data.

``date_updated`` semantics follow Twilio (see docs/emulator.md): it belongs to the conversation.
Read-state changes, joins, leaves and new messages do not move it; conversation updates do.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter

from .config import DataSpec
from .errors import NotFound, TwilioError, bad_request, conflict
from .generator import generate_services
from .model import Conversation, Membership, Service, User
from .sids import CONVERSATION, MESSAGE, PARTICIPANT, ROLE, SERVICE, USER, make_sid

CONVERSATION_STATES = ("active", "inactive", "closed")
NOTIFICATION_LEVELS = ("default", "muted")
_conv_key = itemgetter(0)


@dataclass(frozen=True)
class PostedMessage:
    """What :meth:`Store.post_message` created."""

    sid: str
    index: int
    date_created: int


class Store:
    """Services, users, conversations and memberships, thread-safe behind :attr:`lock`."""

    def __init__(self, account_sid: str, services: list[Service], now: int, seed: int = 0) -> None:
        self.account_sid = account_sid
        self.lock = threading.RLock()
        self.generated_at = now
        self._clock = now
        self._rng = random.Random(f"store-mutations-{seed}")
        #: Secret for page-token signatures; derived from the seed so tokens are reproducible.
        self.token_secret = hashlib.sha256(f"page-token-{seed}".encode()).digest()
        self.services: dict[str, Service] = {s.sid: s for s in services}
        self.service_sids: list[str] = sorted(self.services)
        defaults = [s for s in services if s.is_default]
        if len(defaults) != 1:
            raise ValueError("exactly one service must be the default service")
        self.default_service_sid = defaults[0].sid

    @classmethod
    def generate(cls, spec: DataSpec, account_sid: str) -> Store:
        """A store filled with the deterministic data set described by ``spec``."""
        services, now = generate_services(spec)
        return cls(account_sid, services, now, seed=spec.seed)

    # ----------------------------------------------------------------- clock and lookups

    def now(self) -> int:
        """The logical clock (epoch seconds)."""
        return self._clock

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def service(self, service_sid: str) -> Service:
        """The service with this SID, or 404."""
        try:
            return self.services[service_sid]
        except KeyError:
            raise NotFound(f"/Services/{service_sid}") from None

    def user(self, service_sid: str, user_sid_or_identity: str) -> User:
        """A user by SID or by identity (case-sensitive), or 404."""
        service = self.service(service_sid)
        user = service.users.get(user_sid_or_identity) or service.users_by_identity.get(
            user_sid_or_identity
        )
        if user is None:
            raise NotFound(f"/Services/{service_sid}/Users/{user_sid_or_identity}")
        return user

    def conversation(self, service_sid: str, sid_or_unique_name: str) -> Conversation:
        """A conversation by SID or unique name, or 404."""
        service = self.service(service_sid)
        conv = service.conversations.get(sid_or_unique_name)
        if conv is None:
            conv = service.conversations_by_unique_name.get(sid_or_unique_name)
        if conv is None:
            raise NotFound(f"/Services/{service_sid}/Conversations/{sid_or_unique_name}")
        return conv

    @staticmethod
    def _position(user: User, conversation_sid: str) -> int:
        """Index of the user's membership in the conversation, or -1."""
        members = user.memberships
        i = bisect.bisect_left(members, conversation_sid, key=_conv_key)
        if i < len(members) and members[i].conversation_sid == conversation_sid:
            return i
        return -1

    def membership(
        self, service_sid: str, user_sid_or_identity: str, conversation_sid: str
    ) -> tuple[User, Conversation, Membership]:
        """The user, conversation and membership, or 404 when the user is not a participant."""
        with self.lock:
            user = self.user(service_sid, user_sid_or_identity)
            conv = self.conversation(service_sid, conversation_sid)
            i = self._position(user, conv.sid)
            if i < 0:
                raise NotFound(
                    f"/Services/{service_sid}/Users/{user_sid_or_identity}"
                    f"/Conversations/{conversation_sid}"
                )
            return user, conv, user.memberships[i]

    def iter_memberships(self) -> Iterator[tuple[Service, User, Membership, Conversation]]:
        """Every membership of every service in SID order (caller should hold the lock)."""
        for service_sid in self.service_sids:
            service = self.services[service_sid]
            for user_sid in service.user_sids:
                user = service.users[user_sid]
                for m in user.memberships:
                    yield service, user, m, service.conversations[m.conversation_sid]

    def membership_count(self) -> int:
        """Number of user-conversation rows over all services."""
        with self.lock:
            return sum(len(u.memberships) for s in self.services.values() for u in s.users.values())

    # ----------------------------------------------------------------- user conversations

    def set_read_state(
        self,
        service_sid: str,
        user_sid: str,
        conversation_sid: str,
        *,
        notification_level: str | None = None,
        last_read_message_index: int | None = None,
        last_read_timestamp: int | None = None,
    ) -> Membership:
        """Change a user's read state in a conversation; the conversation's date_updated stays.

        ``last_read_timestamp`` (epoch seconds) marks as read every message posted up to then.
        """
        if notification_level is not None and notification_level not in NOTIFICATION_LEVELS:
            raise bad_request(20001, f"Invalid NotificationLevel: {notification_level}")
        with self.lock:
            user, conv, old = self.membership(service_sid, user_sid, conversation_sid)
            self._tick()
            last_read = old.last_read_message_index
            if last_read_timestamp is not None:
                last_read = self._index_at(conv, last_read_timestamp)
            if last_read_message_index is not None:
                last_read = last_read_message_index
            muted = old.muted if notification_level is None else notification_level == "muted"
            new = Membership(old.conversation_sid, old.participant_sid, muted, last_read)
            user.memberships[self._position(user, conv.sid)] = new
            return new

    def _index_at(self, conv: Conversation, ts: int) -> int | None:
        """Index of the last message posted at or before ``ts``.

        API-posted messages carry their timestamps; generated history is spread evenly between
        the conversation's creation and the data set's "now".
        """
        posted = bisect.bisect_right(conv.posted_at, ts)
        if posted:
            return conv.history_count + posted - 1
        if conv.history_count == 0:
            return None
        if ts >= self.generated_at:
            return conv.history_count - 1
        span = max(1, self.generated_at - conv.date_created)
        share = max(0, ts - conv.date_created) / span
        return max(0, int(conv.history_count * share) - 1)

    def leave(self, service_sid: str, user_sid: str, conversation_sid: str) -> None:
        """The user leaves: their participant is removed and the row disappears."""
        with self.lock:
            user, conv, _ = self.membership(service_sid, user_sid, conversation_sid)
            self._tick()
            del user.memberships[self._position(user, conv.sid)]

    def join(self, service_sid: str, user_sid: str, conversation_sid: str) -> str:
        """Add the user as a participant; their row shows the conversation's existing dates."""
        with self.lock:
            user = self.user(service_sid, user_sid)
            conv = self.conversation(service_sid, conversation_sid)
            if self._position(user, conv.sid) >= 0:
                raise conflict(50433, "Participant already exists")
            self._tick()
            participant_sid = make_sid(PARTICIPANT, self._rng)
            bisect.insort(
                user.memberships,
                Membership(conv.sid, participant_sid, False, None),
                key=_conv_key,
            )
            return participant_sid

    # ----------------------------------------------------------------- conversations

    def create_conversation(
        self,
        service_sid: str,
        friendly_name: str | None = None,
        unique_name: str | None = None,
        attributes: str | None = None,
        state: str = "active",
        created_by: str = "system",
    ) -> str:
        """A new conversation without participants or messages."""
        self._check_state(state)
        with self.lock:
            service = self.service(service_sid)
            if unique_name and unique_name in service.conversations_by_unique_name:
                raise conflict(50353, "Conversation with provided unique name already exists")
            now = self._tick()
            conv = Conversation(
                sid=make_sid(CONVERSATION, self._rng),
                friendly_name=friendly_name,
                unique_name=unique_name or None,
                attributes=attributes if attributes is not None else "{}",
                state=state,
                created_by=created_by,
                date_created=now,
                date_updated=now,
                date_inactive=None,
                date_closed=None,
                message_count=0,
            )
            self._set_timers(conv, state, now)
            service.conversations[conv.sid] = conv
            if conv.unique_name:
                service.conversations_by_unique_name[conv.unique_name] = conv
            return conv.sid

    def update_conversation(
        self,
        service_sid: str,
        conversation_sid: str,
        *,
        friendly_name: str | None = None,
        unique_name: str | None = None,
        attributes: str | None = None,
        state: str | None = None,
    ) -> Conversation:
        """Update a conversation; moves its date_updated, visible in every participant's row."""
        if state is not None:
            self._check_state(state)
        with self.lock:
            service = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            if unique_name is not None and unique_name != conv.unique_name:
                other = service.conversations_by_unique_name.get(unique_name)
                if other is not None and other is not conv:
                    raise conflict(50353, "Conversation with provided unique name already exists")
                if conv.unique_name:
                    service.conversations_by_unique_name.pop(conv.unique_name, None)
                conv.unique_name = unique_name or None
                if conv.unique_name:
                    service.conversations_by_unique_name[conv.unique_name] = conv
            now = self._tick()
            if friendly_name is not None:
                conv.friendly_name = friendly_name
            if attributes is not None:
                conv.attributes = attributes
            if state is not None and state != conv.state:
                conv.state = state
                self._set_timers(conv, state, now)
            conv.date_updated = now
            return conv

    @staticmethod
    def _check_state(state: str) -> None:
        if state not in CONVERSATION_STATES:
            raise bad_request(20001, f"Invalid State: {state}")

    @staticmethod
    def _set_timers(conv: Conversation, state: str, now: int) -> None:
        if state == "active":
            conv.date_inactive = conv.date_closed = None
        elif state == "inactive":
            conv.date_inactive, conv.date_closed = now, now + 86_400
        else:
            conv.date_inactive = conv.date_inactive or now
            conv.date_closed = now

    def post_message(
        self,
        service_sid: str,
        conversation_sid: str,
        author_identity: str | None = None,
        body: str | None = None,
    ) -> PostedMessage:
        """Append a message; returns its SID, index and timestamp.

        Other participants' unread counts grow (they derive from the message count); the
        author, when a participant, has read their own message. date_updated does not move.
        The body is not kept: the emulator only counts messages.
        """
        with self.lock:
            service = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            now = self._tick()
            index = conv.message_count
            conv.message_count += 1
            conv.posted_at.append(now)
            author = service.users_by_identity.get(author_identity) if author_identity else None
            if author is not None:
                i = self._position(author, conv.sid)
                if i >= 0:
                    author.memberships[i] = author.memberships[i]._replace(
                        last_read_message_index=index
                    )
            return PostedMessage(make_sid(MESSAGE, self._rng), index, now)

    # ----------------------------------------------------------------- users and services

    def create_user(
        self,
        service_sid: str,
        identity: str,
        friendly_name: str | None = None,
        attributes: str | None = None,
    ) -> str:
        """A new user without conversations; identities are unique per service."""
        if not identity or len(identity) > 256:
            raise bad_request(20001, "Identity must be 1 to 256 characters")
        with self.lock:
            service = self.service(service_sid)
            if identity in service.users_by_identity:
                raise conflict(50201, "User already exists")
            now = self._tick()
            user = User(
                sid=make_sid(USER, self._rng),
                identity=identity,
                friendly_name=friendly_name,
                attributes=attributes if attributes is not None else "{}",
                role_sid=service.role_sid,
                date_created=now,
                date_updated=now,
            )
            service.users[user.sid] = user
            service.users_by_identity[identity] = user
            bisect.insort(service.user_sids, user.sid)
            return user.sid

    def delete_user(self, service_sid: str, user_sid: str) -> None:
        """Remove a user and with them all their memberships."""
        with self.lock:
            service = self.service(service_sid)
            user = self.user(service_sid, user_sid)
            self._tick()
            del service.users[user.sid]
            del service.users_by_identity[user.identity]
            del service.user_sids[bisect.bisect_left(service.user_sids, user.sid)]

    def create_service(self, friendly_name: str) -> str:
        """A new, empty, non-default service."""
        if not friendly_name:
            raise TwilioError(
                400, 20001, "Missing required parameter FriendlyName in the post body"
            )
        with self.lock:
            now = self._tick()
            service = Service(
                sid=make_sid(SERVICE, self._rng),
                friendly_name=friendly_name,
                date_created=now,
                date_updated=now,
                is_default=False,
                role_sid=make_sid(ROLE, self._rng),
            )
            self.services[service.sid] = service
            bisect.insort(self.service_sids, service.sid)
            return service.sid
