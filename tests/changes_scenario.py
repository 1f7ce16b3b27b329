"""Every kind of change a user conversation can go through, applied through the emulator's real
write endpoints, with a record of whom it touched (shared by the change-capture and history
tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twilio_writes import TwilioWrites


@dataclass
class Scenario:
    """What the changes touched, so the test can predict exactly what run 2 writes."""

    changed_users: set[tuple[str, str]] = field(default_factory=set)
    emptied_users: set[tuple[str, str]] = field(default_factory=set)
    deleted_users: set[tuple[str, str]] = field(default_factory=set)


def memberships(emu: Any, service: str) -> dict[str, list[dict[str, Any]]]:
    return {u["sid"]: emu.user_conversations(service, u["sid"]) for u in emu.users(service)}


def apply_every_change(emu: Any) -> Scenario:
    """Apply each change kind the connector must capture; return who changed."""
    api, out = TwilioWrites(emu), Scenario()
    service = emu.services()[0]["sid"]
    rows = memberships(emu, service)
    identities = {u["sid"]: u["identity"] for u in emu.users(service)}
    busy = sorted((sid for sid in rows if len(rows[sid]) >= 3), key=lambda s: -len(rows[s]))
    reader, leaver, emptier, deleted, joiner = busy[:5]

    # 1. Read state moves without date_updated: last read index and notification level.
    first = rows[reader][0]
    api.set_read_state(service, reader, first["conversation_sid"], LastReadMessageIndex=0)
    api.set_read_state(
        service, reader, rows[reader][1]["conversation_sid"], NotificationLevel="muted"
    )
    out.changed_users.add((service, reader))

    # 2. A conversation-level update (date_updated moves) reaches every participant's row.
    conversation = rows[leaver][-1]["conversation_sid"]
    api.update_conversation(
        service, conversation, FriendlyName="Renamed", Attributes='{"tier": "gold"}'
    )
    for user, memberships_of_user in rows.items():
        if any(r["conversation_sid"] == conversation for r in memberships_of_user):
            out.changed_users.add((service, user))

    # 3. A message raises other participants' unread counts (date_updated stays).
    other = rows[joiner][0]["conversation_sid"]
    api.post_message(service, other, author=identities[joiner])
    for user, memberships_of_user in rows.items():
        if user != joiner and any(r["conversation_sid"] == other for r in memberships_of_user):
            out.changed_users.add((service, user))

    # 4. A leave drops one row; 5. a user leaves every conversation.
    api.leave(service, leaver, rows[leaver][0]["conversation_sid"])
    out.changed_users.add((service, leaver))
    for r in rows[emptier]:
        api.leave(service, emptier, r["conversation_sid"])
    out.emptied_users.add((service, emptier))

    # 6. A join of an old conversation: its row carries an old date_updated.
    joined_now = {r["conversation_sid"] for r in rows[joiner]}
    old = min(
        (r for rs in rows.values() for r in rs if r["conversation_sid"] not in joined_now),
        key=lambda r: r["date_updated"],
    )
    api.join(service, old["conversation_sid"], identities[joiner])
    out.changed_users.add((service, joiner))

    # 7. A new user, whose conversations are all older than every earlier user's newest.
    newcomer = api.create_user(service, "zz-newcomer@example.com")
    by_age = sorted((r for rs in rows.values() for r in rs), key=lambda r: r["date_updated"])
    for conversation_sid in list(dict.fromkeys(r["conversation_sid"] for r in by_age))[:2]:
        api.join(service, conversation_sid, "zz-newcomer@example.com")
    out.changed_users.add((service, newcomer))

    # 8. A user deleted from the service disappears with all their rows.
    api.delete_user(service, deleted)
    out.deleted_users.add((service, deleted))
    out.changed_users -= out.deleted_users | out.emptied_users
    return out


def expected_writes(emu: Any, scenario: Scenario) -> int:
    """Rows of changed users, plus one tombstone per emptied or deleted user."""
    rows = sum(len(emu.user_conversations(s, u)) for s, u in scenario.changed_users)
    return rows + len(scenario.emptied_users) + len(scenario.deleted_users)
