"""Store records → the JSON dicts Twilio serves, field for field as in Twilio's OpenAPI spec.

Rows are rendered lazily, one page at a time, so a million memberships never exist as dicts.
``twin=True`` renders the default-service form (``/v1/Users/...``, ``/v1/Conversations/...``)
that Twilio uses for the ``/v1/Users`` endpoints.
"""

from __future__ import annotations

from typing import Any

from .model import (
    Conversation,
    Membership,
    Message,
    ParticipantView,
    Service,
    User,
    iso,
    messaging_service_sid,
)


def service(base: str, account_sid: str, svc: Service) -> dict[str, Any]:
    """``conversations.v1.service``."""
    url = f"{base}/v1/Services/{svc.sid}"
    return {
        "sid": svc.sid,
        "account_sid": account_sid,
        "friendly_name": svc.friendly_name,
        "date_created": iso(svc.date_created),
        "date_updated": iso(svc.date_updated),
        "url": url,
        "links": {
            "conversations": f"{url}/Conversations",
            "users": f"{url}/Users",
            "roles": f"{url}/Roles",
            "bindings": f"{url}/Bindings",
            "configuration": f"{url}/Configuration",
            "participant_conversations": f"{url}/ParticipantConversations",
            "conversation_with_participants": f"{url}/ConversationWithParticipants",
        },
    }


def user(
    base: str, account_sid: str, service_sid: str, usr: User, *, twin: bool = False
) -> dict[str, Any]:
    """``conversations.v1.service.service_user`` (or ``conversations.v1.user`` when ``twin``).

    ``is_online`` / ``is_notifiable`` are null: the emulated services have reachability off.
    """
    url = (
        f"{base}/v1/Users/{usr.sid}"
        if twin
        else f"{base}/v1/Services/{service_sid}/Users/{usr.sid}"
    )
    return {
        "sid": usr.sid,
        "account_sid": account_sid,
        "chat_service_sid": service_sid,
        "role_sid": usr.role_sid,
        "identity": usr.identity,
        "friendly_name": usr.friendly_name,
        "attributes": usr.attributes,
        "is_online": None,
        "is_notifiable": None,
        "date_created": iso(usr.date_created),
        "date_updated": iso(usr.date_updated),
        "url": url,
        "links": {"user_conversations": f"{url}/Conversations"},
    }


def timers(conv: Conversation) -> dict[str, str]:
    """``{}`` for active conversations, ``{date_inactive, date_closed}`` otherwise."""
    out: dict[str, str] = {}
    if conv.date_inactive is not None:
        out["date_inactive"] = iso(conv.date_inactive)
    if conv.date_closed is not None:
        out["date_closed"] = iso(conv.date_closed)
    return out


def conversation_url(base: str, service_sid: str, conversation_sid: str, *, twin: bool) -> str:
    """A conversation's URL: under its service, or under the default-service twin paths."""
    if twin:
        return f"{base}/v1/Conversations/{conversation_sid}"
    return f"{base}/v1/Services/{service_sid}/Conversations/{conversation_sid}"


def user_conversation(
    base: str,
    account_sid: str,
    service_sid: str,
    user_sid: str,
    m: Membership,
    conv: Conversation,
    *,
    twin: bool = False,
) -> dict[str, Any]:
    """``conversations.v1.service.service_user.service_user_conversation``."""
    if twin:
        url = f"{base}/v1/Users/{user_sid}/Conversations/{conv.sid}"
    else:
        url = f"{base}/v1/Services/{service_sid}/Users/{user_sid}/Conversations/{conv.sid}"
    conv_url = conversation_url(base, service_sid, conv.sid, twin=twin)
    return {
        "account_sid": account_sid,
        "chat_service_sid": service_sid,
        "conversation_sid": conv.sid,
        "unread_messages_count": conv.unread(m.last_read_message_index),
        "last_read_message_index": m.last_read_message_index,
        "participant_sid": m.participant_sid,
        "user_sid": user_sid,
        "friendly_name": conv.friendly_name,
        "conversation_state": conv.state,
        "timers": timers(conv),
        "attributes": conv.attributes,
        "date_created": iso(conv.date_created),
        "date_updated": iso(conv.date_updated),
        "created_by": conv.created_by,
        "notification_level": "muted" if m.muted else "default",
        "unique_name": conv.unique_name,
        "url": url,
        "links": {
            "participant": f"{conv_url}/Participants/{m.participant_sid}",
            "conversation": conv_url,
        },
    }


def conversation(
    base: str, account_sid: str, service_sid: str, conv: Conversation, *, twin: bool = False
) -> dict[str, Any]:
    """``conversations.v1.service.service_conversation`` (``conversations.v1.conversation``)."""
    url = conversation_url(base, service_sid, conv.sid, twin=twin)
    return {
        "account_sid": account_sid,
        "chat_service_sid": service_sid,
        "messaging_service_sid": messaging_service_sid(service_sid),
        "sid": conv.sid,
        "friendly_name": conv.friendly_name,
        "unique_name": conv.unique_name,
        "attributes": conv.attributes,
        "date_created": iso(conv.date_created),
        "date_updated": iso(conv.date_updated),
        "state": conv.state,
        "timers": timers(conv),
        "url": url,
        "links": {
            "participants": f"{url}/Participants",
            "messages": f"{url}/Messages",
            "webhooks": f"{url}/Webhooks",
            "export": f"{url}/Export",
        },
        "bindings": None,
    }


def participant(
    base: str, account_sid: str, service_sid: str, p: ParticipantView, *, twin: bool = False
) -> dict[str, Any]:
    """``conversations.v1.service.service_conversation.service_conversation_participant``.

    The default-service form (``conversations.v1.conversation.conversation_participant``) has
    no ``chat_service_sid``.
    """
    conv_url = conversation_url(base, service_sid, p.conversation_sid, twin=twin)
    row: dict[str, Any] = {"account_sid": account_sid}
    if not twin:
        row["chat_service_sid"] = service_sid
    row.update(
        {
            "conversation_sid": p.conversation_sid,
            "sid": p.sid,
            "identity": p.identity,
            "attributes": p.attributes,
            "messaging_binding": dict(p.messaging_binding) if p.messaging_binding else None,
            "role_sid": p.role_sid,
            "date_created": iso(p.date_created),
            "date_updated": iso(p.date_updated),
            "url": f"{conv_url}/Participants/{p.sid}",
            "last_read_message_index": p.last_read_message_index,
            "last_read_timestamp": (
                iso(p.last_read_timestamp) if p.last_read_timestamp is not None else None
            ),
        }
    )
    return row


def message(
    base: str,
    account_sid: str,
    service_sid: str,
    conversation_sid: str,
    m: Message,
    *,
    twin: bool = False,
) -> dict[str, Any]:
    """``conversations.v1.service.service_conversation.service_conversation_message``.

    The default-service form (``conversations.v1.conversation.conversation_message``) has no
    ``chat_service_sid``.
    """
    conv_url = conversation_url(base, service_sid, conversation_sid, twin=twin)
    url = f"{conv_url}/Messages/{m.sid}"
    row: dict[str, Any] = {"account_sid": account_sid}
    if not twin:
        row["chat_service_sid"] = service_sid
    row.update(
        {
            "conversation_sid": conversation_sid,
            "sid": m.sid,
            "index": m.index,
            "author": m.author,
            "body": m.body,
            "media": [dict(item) for item in m.media] if m.media is not None else None,
            "attributes": m.attributes,
            "participant_sid": m.participant_sid,
            "date_created": iso(m.date_created),
            "date_updated": iso(m.date_updated),
            "delivery": dict(m.delivery) if m.delivery is not None else None,
            "url": url,
            "links": {
                "delivery_receipts": f"{url}/Receipts",
                "channel_metadata": f"{url}/ChannelMetadata",
            },
            "content_sid": None,
        }
    )
    return row
