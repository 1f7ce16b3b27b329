"""The emulator's state and every mutation Twilio's API allows on it.

One re-entrant lock guards everything: mutations take it, and the HTTP layer holds it while it
slices and renders a page, so a page is always a consistent snapshot. Pages are small (≤1000
rows) so the lock is held for well under a millisecond.

A logical clock starts at the data set's "now" and moves at least one second per mutation, so
second-precision timestamps of successive changes always differ and are always newer than the
generated data.

``date_updated`` semantics follow Twilio (see docs/emulator.md): it belongs to the conversation.
Read-state changes, joins, leaves and new messages do not move it; conversation updates do.
A participant's own ``date_updated`` moves when it is changed (read state, attributes), a
message's when it is edited.

Participants are indexed per conversation (:class:`Roster`) on first need, per service: listing
participants or messages, or any write that changes who is in a conversation, builds the whole
service's index in one pass over its memberships (about a second for a million). Writes keep it
up to date from then on. Before the first change to a generated conversation's participants, the
possible authors of its generated history are frozen, so that history never changes afterwards.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter

from .config import DataSpec
from .errors import NotFound, TwilioError, bad_request, conflict, missing_param
from .generator import generate_services
from .history import (
    delivery,
    generated_message,
    generated_non_users,
    history_index_at,
    message_sid,
    message_time,
)
from .model import (
    Author,
    Conversation,
    ConversationChanges,
    Membership,
    Message,
    NonUserParticipant,
    ParticipantState,
    ParticipantView,
    Roster,
    Service,
    User,
    derived_sid,
    participant_role_sid,
)
from .sids import CONVERSATION, MESSAGE, PARTICIPANT, ROLE, SERVICE, USER, make_sid

CONVERSATION_STATES = ("active", "inactive", "closed")
NOTIFICATION_LEVELS = ("default", "muted")
_conv_key = itemgetter(0)
_message_index = attrgetter("index")
MESSAGE_ORDERS = ("asc", "desc")
#: Binding types by address prefix; an address without one is a phone number (SMS).
_BINDING_PREFIXES = (("whatsapp:", "whatsapp"), ("messenger:", "messenger"), ("rcs:", "rcs"))


def _proxy_suffix(service_sid: str) -> str:
    """Seven digits of the service's Twilio number (the proxy address of its SMS participants)."""
    return f"{int(derived_sid('PN', service_sid, 'proxy')[2:], 16) % 10_000_000:07d}"


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
        for svc in services:
            # A pre-built service may come without its sorted conversation list.
            if len(svc.conversation_sids) != len(svc.conversations):
                svc.conversation_sids = sorted(svc.conversations)
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
            now = self._tick()
            last_read = self._read_horizon(
                conv, old.last_read_message_index, last_read_message_index, last_read_timestamp
            )
            muted = old.muted if notification_level is None else notification_level == "muted"
            new = Membership(old.conversation_sid, old.participant_sid, muted, last_read)
            user.memberships[self._position(user, conv.sid)] = new
            # The same participant, seen from /Conversations/{CH}/Participants, was updated.
            self._participant_state(conv, user, old.participant_sid).date_updated = now
            return new

    def _read_horizon(
        self, conv: Conversation, old: int | None, index: int | None, ts: int | None
    ) -> int | None:
        """The read horizon after a write of ``LastReadMessageIndex`` / ``LastReadTimestamp``."""
        last_read = old
        if ts is not None:
            last_read = self._index_at(conv, ts)
        if index is not None:
            last_read = index
        return last_read

    def _index_at(self, conv: Conversation, ts: int) -> int | None:
        """Index of the last message posted at or before ``ts``.

        API-posted messages carry their timestamps; generated history's are derived (see
        :func:`twilio_emulator.history.history_time`; this is its inverse).
        """
        posted = bisect.bisect_right(conv.posted_at, ts)
        if posted:
            return conv.history_count + posted - 1
        return history_index_at(conv, ts)

    def leave(self, service_sid: str, user_sid: str, conversation_sid: str) -> None:
        """The user leaves: their participant is removed and the row disappears."""
        with self.lock:
            user, conv, m = self.membership(service_sid, user_sid, conversation_sid)
            svc = self.service(service_sid)
            self._freeze_authors(svc, conv)
            roster = self._roster(svc, conv)
            self._tick()
            del user.memberships[self._position(user, conv.sid)]
            roster.remove(m.participant_sid)
            if conv.changes is not None:
                conv.changes.participants.pop(m.participant_sid, None)

    def join(
        self,
        service_sid: str,
        user_sid: str,
        conversation_sid: str,
        attributes: str | None = None,
    ) -> str:
        """Add the user as a participant; their row shows the conversation's existing dates."""
        with self.lock:
            svc = self.service(service_sid)
            user = self.user(service_sid, user_sid)
            conv = self.conversation(service_sid, conversation_sid)
            if self._position(user, conv.sid) >= 0:
                raise conflict(50433, "Participant already exists")
            self._freeze_authors(svc, conv)
            roster = self._roster(svc, conv)
            now = self._tick()
            participant_sid = make_sid(PARTICIPANT, self._rng)
            bisect.insort(
                user.memberships,
                Membership(conv.sid, participant_sid, False, None),
                key=_conv_key,
            )
            roster.add(participant_sid, user.sid)
            self._changes(conv).participants[participant_sid] = ParticipantState(
                now, now, attributes if attributes is not None else "{}"
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
            bisect.insort(service.conversation_sids, conv.sid)
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

    def delete_conversation(self, service_sid: str, conversation_sid: str) -> None:
        """Remove a conversation with its participants and messages (then it is 404).

        Its users' rows for it disappear, as when they leave.
        """
        with self.lock:
            service = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            roster = self._rosters(service).pop(conv.sid, None)
            self._tick()
            for owner in roster.owners if roster is not None else ():
                if isinstance(owner, str):
                    user = service.users[owner]
                    del user.memberships[self._position(user, conv.sid)]
            del service.conversations[conv.sid]
            if conv.unique_name:
                service.conversations_by_unique_name.pop(conv.unique_name, None)
            sids = service.conversation_sids
            del sids[bisect.bisect_left(sids, conv.sid)]

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
        attributes: str | None = None,
    ) -> PostedMessage:
        """Append a message; returns its SID, index and timestamp.

        Other participants' unread counts grow (they derive from the message count); the
        author, when a participant, has read their own message. date_updated does not move.
        ``author_identity`` is a user's identity or a non-user participant's address (None:
        "system"); when it is a participant, the message shows its ``participant_sid``.
        """
        with self.lock:
            service = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            now = self._tick()
            index = conv.message_count
            conv.message_count += 1
            conv.posted_at.append(now)
            participant_sid: str | None = None
            author = service.users_by_identity.get(author_identity) if author_identity else None
            if author is not None:
                i = self._position(author, conv.sid)
                if i >= 0:
                    participant_sid = author.memberships[i].participant_sid
                    author.memberships[i] = author.memberships[i]._replace(
                        last_read_message_index=index
                    )
            non_users = self._non_users(service, conv)
            if participant_sid is None and author_identity:
                participant_sid = next(
                    (p.sid for p in non_users if p.binding.get("address") == author_identity),
                    None,
                )
            message = Message(
                sid=make_sid(MESSAGE, self._rng),
                index=index,
                author=author_identity or "system",
                body=body,
                media=None,
                attributes=attributes if attributes is not None else "{}",
                participant_sid=participant_sid,
                date_created=now,
                date_updated=now,
                delivery=delivery(len(non_users)),
            )
            self._changes(conv).posted.append(message)
            return PostedMessage(message.sid, index, now)

    def update_message(
        self,
        service_sid: str,
        conversation_sid: str,
        message_sid: str,
        *,
        body: str | None = None,
        attributes: str | None = None,
        author: str | None = None,
    ) -> Message:
        """Edit a message: its ``date_updated`` moves (the conversation's does not)."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            index = self._find_message(svc, conv, message_sid)
            now = self._tick()
            if index < conv.history_count:
                changes = self._changes(conv)
                message = changes.edited.get(index)
                if message is None:
                    message = generated_message(conv, index, self._authors(svc, conv))
                    changes.edited[index] = message
            else:
                message = self._message_at(svc, conv, index, ())
            if body is not None:
                message.body = body
            if attributes is not None:
                message.attributes = attributes
            if author is not None:
                message.author = author
            message.date_updated = now
            return message

    def delete_message(self, service_sid: str, conversation_sid: str, message_sid: str) -> None:
        """Remove a message; the indices of later messages do not change, none is reused."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            index = self._find_message(svc, conv, message_sid)
            self._tick()
            changes = self._changes(conv)
            if index < conv.history_count:
                changes.deleted.add(index)
                changes.edited.pop(index, None)
            else:
                posted = changes.posted
                del posted[bisect.bisect_left(posted, index, key=_message_index)]

    # ----------------------------------------------------------------- messages (reads)

    def message_indices(self, service_sid: str, conversation_sid: str) -> Sequence[int]:
        """Indices of the conversation's messages, ascending (deleted ones are gone)."""
        with self.lock:
            conv = self.conversation(service_sid, conversation_sid)
            changes = conv.changes
            if changes is None:
                return range(conv.history_count)
            deleted = changes.deleted
            indices = [i for i in range(conv.history_count) if i not in deleted]
            indices.extend(m.index for m in changes.posted)
            return indices

    def messages_at(
        self, service_sid: str, conversation_sid: str, indices: Sequence[int]
    ) -> list[Message]:
        """The messages with these (existing) indices, in the order given."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            history = conv.history_count
            authors = self._authors(svc, conv) if any(i < history for i in indices) else ()
            return [self._message_at(svc, conv, i, authors) for i in indices]

    def messages(
        self, service_sid: str, conversation_sid: str, order: str = "asc"
    ) -> list[Message]:
        """Every message of a conversation, by index (``order`` "asc" or "desc")."""
        if order not in MESSAGE_ORDERS:
            raise bad_request(20001, f"Invalid Order: {order}")
        with self.lock:
            indices = list(self.message_indices(service_sid, conversation_sid))
            if order == "desc":
                indices.reverse()
            return self.messages_at(service_sid, conversation_sid, indices)

    def message(self, service_sid: str, conversation_sid: str, message_sid: str) -> Message:
        """One message by SID, or 404."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            index = self._find_message(svc, conv, message_sid)
            authors = self._authors(svc, conv) if index < conv.history_count else ()
            return self._message_at(svc, conv, index, authors)

    def _find_message(self, svc: Service, conv: Conversation, sid: str) -> int:
        """Index of the message ``sid`` of ``conv``, or 404."""
        changes = conv.changes
        if changes is not None:
            for message in changes.posted:
                if message.sid == sid:
                    return message.index
        if len(sid) == 34 and sid.startswith(MESSAGE):
            deleted = changes.deleted if changes is not None else frozenset()
            for i in range(conv.history_count):
                if message_sid(conv.sid, i) == sid and i not in deleted:
                    return i
        raise NotFound(f"/Services/{svc.sid}/Conversations/{conv.sid}/Messages/{sid}")

    def _message_at(
        self, svc: Service, conv: Conversation, index: int, authors: tuple[Author, ...]
    ) -> Message:
        """The existing message ``index`` (``authors``: see :meth:`_authors`)."""
        changes = conv.changes
        if index < conv.history_count:
            if changes is not None:
                edited = changes.edited.get(index)
                if edited is not None:
                    return edited
            return generated_message(conv, index, authors)
        assert changes is not None, "posted messages live in the conversation's changes"
        posted = changes.posted
        return posted[bisect.bisect_left(posted, index, key=_message_index)]

    # ----------------------------------------------------------------- participants

    def _rosters(self, svc: Service) -> dict[str, Roster]:
        """The service's participant index, built on first need in one pass."""
        rosters = svc.rosters
        if rosters is not None:
            return rosters
        # As in the generator: the build makes no cycles, and the collector, run again and again
        # over a million memberships while it builds, would take most of its time.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            rosters = self._build_rosters(svc)
        finally:
            if was_enabled:
                gc.enable()
        svc.rosters = rosters
        return rosters

    @staticmethod
    def _build_rosters(svc: Service) -> dict[str, Roster]:
        """One pass over the memberships; each roster is finished when first used."""
        rosters = {sid: Roster(ready=False) for sid in svc.conversations}
        users = svc.users
        for user_sid in svc.user_sids:
            for m in users[user_sid].memberships:
                roster = rosters[m[0]]
                roster.sids.append(m[1])
                roster.owners.append(user_sid)
        return rosters

    def _roster(self, svc: Service, conv: Conversation) -> Roster:
        """The conversation's participants, sorted, its derived SMS / WhatsApp ones included."""
        rosters = self._rosters(svc)
        roster = rosters.get(conv.sid)
        if roster is None:
            roster = rosters[conv.sid] = Roster()
        elif not roster.ready:
            roster.finish(generated_non_users(conv, _proxy_suffix(svc.sid)))
        return roster

    def _non_users(self, svc: Service, conv: Conversation) -> list[NonUserParticipant]:
        """The conversation's SMS / WhatsApp participants (without building the index)."""
        if svc.rosters is None:
            # Nothing changed any roster yet: they are the generated ones.
            return generated_non_users(conv, _proxy_suffix(svc.sid))
        roster = self._roster(svc, conv)
        return [p for p in roster.owners if isinstance(p, NonUserParticipant)]

    @staticmethod
    def _changes(conv: Conversation) -> ConversationChanges:
        if conv.changes is None:
            conv.changes = ConversationChanges()
        return conv.changes

    @staticmethod
    def _joined(conv: Conversation, user: User) -> int:
        """When a generated user participant joined: with the conversation, or once created."""
        return max(conv.date_created, user.date_created)

    def _participant_state(self, conv: Conversation, user: User, sid: str) -> ParticipantState:
        """The API-changed state of a user's participant, created from the generated one."""
        changes = self._changes(conv)
        state = changes.participants.get(sid)
        if state is None:
            joined = self._joined(conv, user)
            state = changes.participants[sid] = ParticipantState(joined, joined)
        return state

    def _authors(self, svc: Service, conv: Conversation) -> tuple[Author, ...]:
        """Who may have written the generated history: its participants as generated."""
        changes = conv.changes
        if changes is not None and changes.authors is not None:
            return changes.authors
        roster = self._roster(svc, conv)
        authors = []
        for sid, owner in zip(roster.sids, roster.owners, strict=True):
            if isinstance(owner, NonUserParticipant):
                authors.append(Author(sid, owner.binding["address"], owner.date_created, False))
            else:
                user = svc.users[owner]
                authors.append(Author(sid, user.identity, self._joined(conv, user), True))
        return tuple(authors)

    def _freeze_authors(self, svc: Service, conv: Conversation) -> None:
        """Before the roster of a conversation with history first changes, keep its authors."""
        if conv.history_count and (conv.changes is None or conv.changes.authors is None):
            authors = self._authors(svc, conv)
            self._changes(conv).authors = authors

    def _participant_view(
        self, svc: Service, conv: Conversation, sid: str, owner: str | NonUserParticipant
    ) -> ParticipantView:
        role = participant_role_sid(svc.sid)
        if isinstance(owner, NonUserParticipant):
            index = owner.last_read_message_index
            return ParticipantView(
                sid=sid,
                conversation_sid=conv.sid,
                identity=None,
                attributes=owner.attributes,
                messaging_binding=owner.binding,
                role_sid=role,
                date_created=owner.date_created,
                date_updated=owner.date_updated,
                last_read_message_index=index,
                last_read_timestamp=message_time(conv, index),
            )
        user = svc.users[owner]
        m = user.memberships[self._position(user, conv.sid)]
        index = m.last_read_message_index
        read_at = message_time(conv, index)
        state = conv.changes.participants.get(sid) if conv.changes is not None else None
        if state is None:
            joined = self._joined(conv, user)
            created, updated, attributes = joined, max(joined, read_at or joined), "{}"
        else:
            created, updated, attributes = state.date_created, state.date_updated, state.attributes
        return ParticipantView(
            sid=sid,
            conversation_sid=conv.sid,
            identity=user.identity,
            attributes=attributes,
            messaging_binding=None,
            role_sid=role,
            date_created=created,
            date_updated=updated,
            last_read_message_index=index,
            last_read_timestamp=read_at,
        )

    def roster(self, service_sid: str, conversation_sid: str) -> Roster:
        """The conversation's participant index (hold :attr:`lock` while using it)."""
        with self.lock:
            svc = self.service(service_sid)
            return self._roster(svc, self.conversation(service_sid, conversation_sid))

    def participant_views(
        self, service_sid: str, conversation_sid: str, start: int = 0, end: int | None = None
    ) -> list[ParticipantView]:
        """The conversation's participants ``[start:end]``, in participant SID order."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            roster = self._roster(svc, conv)
            stop = len(roster) if end is None else min(end, len(roster))
            return [
                self._participant_view(svc, conv, roster.sids[i], roster.owners[i])
                for i in range(start, stop)
            ]

    def participant(
        self, service_sid: str, conversation_sid: str, sid_or_identity: str
    ) -> ParticipantView:
        """One participant by SID, or (a chat participant) by identity; else 404."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            i = self._find_participant(svc, conv, sid_or_identity)
            roster = self._roster(svc, conv)
            return self._participant_view(svc, conv, roster.sids[i], roster.owners[i])

    def _find_participant(self, svc: Service, conv: Conversation, sid_or_identity: str) -> int:
        """A participant's index by SID or, for a user's, by identity (as Twilio's fetch
        takes either); else 404."""
        sid = sid_or_identity
        user = svc.users_by_identity.get(sid_or_identity)
        if self._roster(svc, conv).find(sid) < 0 and user is not None:
            position = self._position(user, conv.sid)
            if position >= 0:
                sid = user.memberships[position].participant_sid
        return self._participant_index(svc, conv, sid, shown=sid_or_identity)

    def _participant_index(
        self, svc: Service, conv: Conversation, participant_sid: str, shown: str | None = None
    ) -> int:
        """A participant's index in the conversation's roster by SID (updates and removals
        take only a SID); else 404 naming `shown` (default the SID)."""
        i = self._roster(svc, conv).find(participant_sid)
        if i < 0:
            raise NotFound(
                f"/Services/{svc.sid}/Conversations/{conv.sid}/Participants/"
                f"{shown or participant_sid}"
            )
        return i

    def add_non_user_participant(
        self,
        service_sid: str,
        conversation_sid: str,
        address: str,
        proxy_address: str,
        attributes: str | None = None,
    ) -> str:
        """Add an SMS / WhatsApp participant (``whatsapp:+1…`` addresses are WhatsApp)."""
        if not address:
            raise missing_param("MessagingBinding.Address")
        if not proxy_address:
            raise missing_param("MessagingBinding.ProxyAddress")
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            roster = self._roster(svc, conv)
            for owner in roster.owners:
                if isinstance(owner, NonUserParticipant) and owner.binding["address"] == address:
                    raise conflict(50416, "A participant with this address already exists")
            self._freeze_authors(svc, conv)
            now = self._tick()
            kind = next((k for p, k in _BINDING_PREFIXES if address.startswith(p)), "sms")
            participant = NonUserParticipant(
                sid=make_sid(PARTICIPANT, self._rng),
                binding={"type": kind, "address": address, "proxy_address": proxy_address},
                attributes=attributes if attributes is not None else "{}",
                date_created=now,
                date_updated=now,
            )
            roster.add(participant.sid, participant)
            return participant.sid

    def update_participant(
        self,
        service_sid: str,
        conversation_sid: str,
        participant_sid: str,
        *,
        attributes: str | None = None,
        last_read_message_index: int | None = None,
        last_read_timestamp: int | None = None,
    ) -> ParticipantView:
        """Change a participant's attributes or read horizon; its date_updated moves.

        For a user's participant the read horizon is their membership's: the user-conversation
        row shows the change too (and, as there, the conversation's date_updated stays).
        """
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            roster = self._roster(svc, conv)
            owner = roster.owners[self._participant_index(svc, conv, participant_sid)]
            now = self._tick()
            if isinstance(owner, NonUserParticipant):
                owner.last_read_message_index = self._read_horizon(
                    conv,
                    owner.last_read_message_index,
                    last_read_message_index,
                    last_read_timestamp,
                )
                if attributes is not None:
                    owner.attributes = attributes
                owner.date_updated = now
            else:
                user = svc.users[owner]
                position = self._position(user, conv.sid)
                m = user.memberships[position]
                user.memberships[position] = m._replace(
                    last_read_message_index=self._read_horizon(
                        conv,
                        m.last_read_message_index,
                        last_read_message_index,
                        last_read_timestamp,
                    )
                )
                state = self._participant_state(conv, user, participant_sid)
                if attributes is not None:
                    state.attributes = attributes
                state.date_updated = now
            return self._participant_view(svc, conv, participant_sid, owner)

    def remove_participant(
        self, service_sid: str, conversation_sid: str, participant_sid: str
    ) -> None:
        """Remove a participant; a user's participant leaves (their row disappears)."""
        with self.lock:
            svc = self.service(service_sid)
            conv = self.conversation(service_sid, conversation_sid)
            roster = self._roster(svc, conv)
            owner = roster.owners[self._participant_index(svc, conv, participant_sid)]
            if not isinstance(owner, NonUserParticipant):
                self.leave(service_sid, owner, conv.sid)
                return
            self._freeze_authors(svc, conv)
            self._tick()
            roster.remove(participant_sid)

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
            for m in user.memberships:
                conv = service.conversations[m.conversation_sid]
                self._freeze_authors(service, conv)
                self._roster(service, conv).remove(m.participant_sid)
                if conv.changes is not None:
                    conv.changes.participants.pop(m.participant_sid, None)
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
