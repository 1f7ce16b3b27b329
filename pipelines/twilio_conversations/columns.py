"""Column hints and keys of the tables, and the dict-shaped rows of `services` and `users`.

Everything a run needs whether or not it writes anything, without pyarrow: `records.py` builds
the arrow tables of user conversations and is imported only when there are rows to build (an
unchanged re-run never loads pyarrow; docs/architecture.md, "Measurements behind the code").

The hints name every field of Twilio's OpenAPI records (`conversations.v1.service`,
`...service_user`, `...service_user_conversation`), with nested objects flattened the way dlt
flattens them at `max_table_nesting=1` (`links__users`, `timers__date_closed`). They must be
complete: a field that is null in every record of a load gets no column at all without a hint,
and a first load with no rows creates its tables from the hints alone.

Every hint carries a `description` (it reaches the dlt schema), kept here as data because the
source ships without the spec: a field's takes the spec's property description verbatim; a
flattened field's, its object's description plus which key it is; a field the spec leaves
undescribed takes its enum's description, else one of ours, as do our own columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from dlt.common.data_types.typing import TDataType
from dlt.common.schema.typing import (
    TColumnSchema,
    TMergeDispositionDict,
    TTableSchemaColumns,
    TWriteDispositionConfig,
)
from dlt.sources import DltResource

from .settings import DELETED_COLUMN

# Merging on the partition key replaces a changed user's rows wholesale (delete-insert), so rows
# the API no longer lists disappear, while users not sent in this load stay untouched.
MERGE: TMergeDispositionDict = {"disposition": "merge", "strategy": "delete-insert"}

USER_CONVERSATION_KEY = ("chat_service_sid", "user_sid", "conversation_sid")


class UserConversationField(NamedTuple):
    """One column of `user_conversations` as the API record holds it."""

    column: str
    data_type: TDataType
    path: tuple[str, ...]  # one key, or (object, key) for the fields of `timers` / `links`


# The one list of user-conversation fields: `USER_CONVERSATIONS_COLUMNS` (dlt hints) and the
# arrow schema in `records.py` are both derived from it. `timers` and `links` are flattened the
# way dlt would flatten them (double underscore), so dict-shaped and arrow-shaped loads agree.
USER_CONVERSATION_FIELDS: tuple[UserConversationField, ...] = (
    UserConversationField("chat_service_sid", "text", ("chat_service_sid",)),
    UserConversationField("user_sid", "text", ("user_sid",)),
    UserConversationField("conversation_sid", "text", ("conversation_sid",)),
    UserConversationField("account_sid", "text", ("account_sid",)),
    UserConversationField("participant_sid", "text", ("participant_sid",)),
    UserConversationField("friendly_name", "text", ("friendly_name",)),
    UserConversationField("unique_name", "text", ("unique_name",)),
    UserConversationField("conversation_state", "text", ("conversation_state",)),  # enum
    UserConversationField("notification_level", "text", ("notification_level",)),  # enum
    UserConversationField("unread_messages_count", "bigint", ("unread_messages_count",)),
    UserConversationField("last_read_message_index", "bigint", ("last_read_message_index",)),
    UserConversationField("attributes", "text", ("attributes",)),
    UserConversationField("timers__date_inactive", "timestamp", ("timers", "date_inactive")),
    UserConversationField("timers__date_closed", "timestamp", ("timers", "date_closed")),
    UserConversationField("date_created", "timestamp", ("date_created",)),
    UserConversationField("date_updated", "timestamp", ("date_updated",)),
    UserConversationField("created_by", "text", ("created_by",)),
    UserConversationField("url", "text", ("url",)),
    UserConversationField("links__participant", "text", ("links", "participant")),
    UserConversationField("links__conversation", "text", ("links", "conversation")),
)


def _timestamp_hint() -> TColumnSchema:
    # A fresh dict per column: dlt writes the column name into the hint it is given.
    return {"data_type": "timestamp", "timezone": True}


def _hint(data_type: TDataType, *, key: bool = False) -> TColumnSchema:
    hint = _timestamp_hint() if data_type == "timestamp" else TColumnSchema(data_type=data_type)
    if key:
        hint["nullable"] = False
    return hint


# -- column descriptions: from Twilio's spec, as the module docstring says -------------------

# Shared by the tables that have them; ours, not the spec's.
_ATTRIBUTES_JSON = "The `attributes` text parsed as JSON where it is valid JSON, else null."
_DELETED = (
    "Tombstone flag of change capture: a row with `true` deletes the rows with its key and is "
    "never itself stored in merged tables."
)
# The spec's descriptions of the flattened objects, without their final period.
_UC_TIMERS = "Timer date values representing state update for this conversation"
_UC_LINKS = (
    "Contains absolute URLs to access the [participant]"
    "(https://www.twilio.com/docs/conversations/api/conversation-participant-resource) and "
    "[conversation](https://www.twilio.com/docs/conversations/api/conversation-resource) of "
    "this conversation"
)
_SERVICE_LINKS = (
    "Contains absolute API resource URLs to access conversations, users, roles, bindings and "
    "configuration of this service"
)


def _entry(described: str, key: str) -> str:
    """The description of one key of a flattened object: the object's, plus which key it is."""
    return f"{described} (the `{key}` entry)."


# column -> description, one mapping per table, in the hints' order.
USER_CONVERSATIONS_DESCRIPTIONS: dict[str, str] = {
    "chat_service_sid": (
        "The unique ID of the [Conversation Service]"
        "(https://www.twilio.com/docs/conversations/api/service-resource) this conversation "
        "belongs to."
    ),
    "user_sid": (
        "The unique string that identifies the [User resource]"
        "(https://www.twilio.com/docs/conversations/api/user-resource)."
    ),
    "conversation_sid": (
        "The unique ID of the [Conversation]"
        "(https://www.twilio.com/docs/conversations/api/conversation-resource) for this User "
        "Conversation."
    ),
    "account_sid": (
        "The unique ID of the [Account](https://www.twilio.com/docs/iam/api/account) responsible "
        "for this conversation."
    ),
    "participant_sid": (
        "The unique ID of the [participant]"
        "(https://www.twilio.com/docs/conversations/api/conversation-participant-resource) the "
        "user conversation belongs to."
    ),
    "friendly_name": (
        "The human-readable name of this conversation, limited to 256 characters. Optional."
    ),
    "unique_name": (
        "An application-defined string that uniquely identifies the Conversation resource. It "
        "can be used to address the resource in place of the resource's `conversation_sid` in "
        "the URL."
    ),
    # The two enums: the spec describes them on their `$ref`'d components.
    "conversation_state": (
        "The current state of this User Conversation. One of `inactive`, `active` or `closed`."
    ),
    "notification_level": (
        "The Notification Level of this User Conversation. One of `default` or `muted`."
    ),
    "unread_messages_count": (
        "The number of unread Messages in the Conversation for the Participant."
    ),
    "last_read_message_index": (
        "The index of the last Message in the Conversation that the Participant has read."
    ),
    "attributes": (
        "An optional string metadata field you can use to store any data you wish. The string "
        "value must contain structurally valid JSON if specified.  **Note** that if the "
        'attributes are not set "{}" will be returned.'
    ),
    "timers__date_inactive": _entry(_UC_TIMERS, "date_inactive"),
    "timers__date_closed": _entry(_UC_TIMERS, "date_closed"),
    "date_created": "The date that this conversation was created, given in ISO 8601 format.",
    "date_updated": "The date that this conversation was last updated, given in ISO 8601 format.",
    "created_by": "Identity of the creator of this Conversation.",
    "url": "An absolute API resource URL for this user conversation.",  # the spec has none
    "links__participant": _entry(_UC_LINKS, "participant"),
    "links__conversation": _entry(_UC_LINKS, "conversation"),
    "attributes_json": _ATTRIBUTES_JSON,
    DELETED_COLUMN: _DELETED,
}
USERS_DESCRIPTIONS: dict[str, str] = {
    "sid": "The unique string that we created to identify the User resource.",
    "account_sid": (
        "The SID of the [Account](https://www.twilio.com/docs/iam/api/account) that created the "
        "User resource."
    ),
    "chat_service_sid": (
        "The SID of the [Conversation Service]"
        "(https://www.twilio.com/docs/conversations/api/service-resource) the User resource is "
        "associated with."
    ),
    "role_sid": (
        "The SID of a service-level [Role]"
        "(https://www.twilio.com/docs/conversations/api/role-resource) assigned to the user."
    ),
    "identity": (
        "The application-defined string that uniquely identifies the resource's User within the "
        "[Conversation Service](https://www.twilio.com/docs/conversations/api/service-resource). "
        "This value is often a username or an email address, and is case-sensitive."
    ),
    "friendly_name": "The string that you assigned to describe the resource.",
    "attributes": (
        "The JSON Object string that stores application-specific data. If attributes have not "
        "been set, `{}` is returned."
    ),
    "attributes_json": _ATTRIBUTES_JSON,
    "is_online": (
        "Whether the User is actively connected to this Conversations Service and online. This "
        "value is only returned by Fetch actions that return a single resource and `null` is "
        "always returned by a Read action. This value is `null` if the Service's "
        "`reachability_enabled` is `false`, if the User has never been online for this "
        "Conversations Service, even if the Service's `reachability_enabled` is `true`."
    ),
    "is_notifiable": (
        "Whether the User has a potentially valid Push Notification registration (APN or GCM) "
        "for this Conversations Service. If at least one registration exists, `true`; otherwise "
        "`false`. This value is only returned by Fetch actions that return a single resource and "
        "`null` is always returned by a Read action. This value is `null` if the Service's "
        "`reachability_enabled` is `false`, and if the User has never had a notification "
        "registration, even if the Service's `reachability_enabled` is `true`."
    ),
    "date_created": (
        "The date and time in GMT when the resource was created specified in [ISO 8601]"
        "(https://en.wikipedia.org/wiki/ISO_8601) format."
    ),
    "date_updated": (
        "The date and time in GMT when the resource was last updated specified in [ISO 8601]"
        "(https://en.wikipedia.org/wiki/ISO_8601) format."
    ),
    "url": "An absolute API resource URL for this user.",
    # The spec does not describe users' `links`.
    "links__user_conversations": _entry(
        "Contains the absolute API resource URL of this user's User Conversations",
        "user_conversations",
    ),
    DELETED_COLUMN: _DELETED,
}
SERVICES_DESCRIPTIONS: dict[str, str] = {
    "sid": "A 34 character string that uniquely identifies this resource.",
    "account_sid": (
        "The unique ID of the [Account](https://www.twilio.com/docs/iam/api/account) responsible "
        "for this service."
    ),
    "friendly_name": (
        "The human-readable name of this service, limited to 256 characters. Optional."
    ),
    "date_created": "The date that this resource was created.",
    "date_updated": "The date that this resource was last updated.",
    "url": "An absolute API resource URL for this service.",
    **{
        f"links__{key}": _entry(_SERVICE_LINKS, key)
        for key in (
            "conversations",
            "users",
            "roles",
            "bindings",
            "configuration",
            "participant_conversations",
            "conversation_with_participants",
        )
    },
    DELETED_COLUMN: _DELETED,
}


def _described(hints: TTableSchemaColumns, descriptions: Mapping[str, str]) -> TTableSchemaColumns:
    """`hints`, in their order, each a new dict with its column's description added."""
    if list(descriptions) != list(hints):
        raise ValueError(f"descriptions {list(descriptions)} do not match hints {list(hints)}")
    described: TTableSchemaColumns = {}
    for name, hint in hints.items():
        described[name] = hint.copy()
        described[name]["description"] = descriptions[name]
    return described


# Hints the data cannot express besides the types: `attributes_json` holds JSON text (a JSON
# column in DuckDB/PostgreSQL), derived from `attributes`; the tombstone flag deletes by key.
# Enums stay text. Order matters: `records.py` builds its arrow columns in this order.
USER_CONVERSATIONS_COLUMNS: TTableSchemaColumns = _described(
    {
        **{
            field.column: _hint(field.data_type, key=field.column in USER_CONVERSATION_KEY)
            for field in USER_CONVERSATION_FIELDS
        },
        "attributes_json": {"data_type": "json"},
        DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
    },
    USER_CONVERSATIONS_DESCRIPTIONS,
)
USERS_COLUMNS: TTableSchemaColumns = _described(
    {
        "sid": {"data_type": "text", "nullable": False},
        "account_sid": {"data_type": "text"},
        "chat_service_sid": {"data_type": "text"},
        "role_sid": {"data_type": "text"},
        "identity": {"data_type": "text"},
        "friendly_name": {"data_type": "text"},
        "attributes": {"data_type": "text"},
        "attributes_json": {"data_type": "json"},
        "is_online": {"data_type": "bool"},
        "is_notifiable": {"data_type": "bool"},
        "date_created": _timestamp_hint(),
        # A user listed twice in one run (updated between two pages) is written twice in one
        # load: the merge keeps the later version.
        "date_updated": {**_timestamp_hint(), "dedup_sort": "desc"},
        "url": {"data_type": "text"},
        "links__user_conversations": {"data_type": "text"},
        DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
    },
    USERS_DESCRIPTIONS,
)
SERVICES_COLUMNS: TTableSchemaColumns = _described(
    {
        "sid": {"data_type": "text", "nullable": False},
        "account_sid": {"data_type": "text"},
        "friendly_name": {"data_type": "text"},
        "date_created": _timestamp_hint(),
        "date_updated": _timestamp_hint(),
        "url": {"data_type": "text"},
        # `links` as Twilio's examples (and the emulator) render it; the spec's description names
        # only the first five.
        "links__conversations": {"data_type": "text"},
        "links__users": {"data_type": "text"},
        "links__roles": {"data_type": "text"},
        "links__bindings": {"data_type": "text"},
        "links__configuration": {"data_type": "text"},
        "links__participant_conversations": {"data_type": "text"},
        "links__conversation_with_participants": {"data_type": "text"},
        DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
    },
    SERVICES_DESCRIPTIONS,
)


CONVERSATION_KEY = ("chat_service_sid", "sid")
_CONVERSATION_LINKS = (
    "Contains absolute URLs to access the [participants]"
    "(https://www.twilio.com/docs/conversations/api/conversation-participant-resource), "
    "[messages](https://www.twilio.com/docs/conversations/api/conversation-message-resource) and "
    "[webhooks](https://www.twilio.com/docs/conversations/api/conversation-scoped-webhook-resource)"
    " of this conversation"
)
_CONVERSATION_TIMERS = "Timer date values representing state update for this conversation"
# `GET /v1/Services/{IS}/Conversations` (`conversations.v1.service.service_conversation`).
CONVERSATIONS_COLUMNS: TTableSchemaColumns = _described(
    {
        "chat_service_sid": {"data_type": "text", "nullable": False},
        "sid": {"data_type": "text", "nullable": False},
        "account_sid": {"data_type": "text"},
        "messaging_service_sid": {"data_type": "text"},
        "friendly_name": {"data_type": "text"},
        "unique_name": {"data_type": "text"},
        "attributes": {"data_type": "text"},
        "attributes_json": {"data_type": "json"},
        "state": {"data_type": "text"},
        "date_created": _timestamp_hint(),
        "date_updated": _timestamp_hint(),
        "timers__date_inactive": _timestamp_hint(),
        "timers__date_closed": _timestamp_hint(),
        "bindings": {"data_type": "json"},
        "url": {"data_type": "text"},
        "links__participants": {"data_type": "text"},
        "links__messages": {"data_type": "text"},
        "links__webhooks": {"data_type": "text"},
        "links__export": {"data_type": "text"},
        DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
    },
    {
        "chat_service_sid": (
            "The unique ID of the [Conversation Service]"
            "(https://www.twilio.com/docs/conversations/api/service-resource) this conversation "
            "belongs to."
        ),
        "sid": "A 34 character string that uniquely identifies this resource.",
        "account_sid": (
            "The unique ID of the [Account](https://www.twilio.com/docs/iam/api/account) "
            "responsible for this conversation."
        ),
        "messaging_service_sid": (
            "The unique ID of the [Messaging Service]"
            "(https://www.twilio.com/docs/messaging/api/service-resource) this conversation "
            "belongs to."
        ),
        "friendly_name": (
            "The human-readable name of this conversation, limited to 256 characters. Optional."
        ),
        "unique_name": (
            "An application-defined string that uniquely identifies the resource. It can be used "
            "to address the resource in place of the resource's `sid` in the URL."
        ),
        "attributes": (
            "An optional string metadata field you can use to store any data you wish. The "
            "string value must contain structurally valid JSON if specified.  **Note** that if "
            'the attributes are not set "{}" will be returned.'
        ),
        "attributes_json": _ATTRIBUTES_JSON,
        "state": (
            "Current state of this conversation. Can be either `initializing`, `active`, "
            "`inactive` or `closed` and defaults to `active`"
        ),
        "date_created": "The date that this resource was created.",
        "date_updated": "The date that this resource was last updated.",
        "timers__date_inactive": _entry(_CONVERSATION_TIMERS, "date_inactive"),
        "timers__date_closed": _entry(_CONVERSATION_TIMERS, "date_closed"),
        "bindings": "The conversation's bindings, as the API serves them (JSON; the spec does "
        "not describe them).",
        "url": "An absolute API resource URL for this conversation.",
        "links__participants": _entry(_CONVERSATION_LINKS, "participants"),
        "links__messages": _entry(_CONVERSATION_LINKS, "messages"),
        "links__webhooks": _entry(_CONVERSATION_LINKS, "webhooks"),
        "links__export": _entry(_CONVERSATION_LINKS, "export"),
        DELETED_COLUMN: _DELETED,
    },
)


def parse_attributes(raw: Any) -> str | None:
    """Return `raw` when it is valid JSON text (Twilio's `attributes`), else None.

    Valid means strict RFC 8259, as PostgreSQL's jsonb and DuckDB's JSON accept it: `NaN`, which
    Python's json module would let through, is not.

    Twilio stores whatever string a client sent; most are JSON objects but nothing enforces it,
    so invalid JSON is kept in the raw column and simply has no parsed twin.
    """
    if not isinstance(raw, str):
        return None
    try:
        orjson.loads(raw)
    except ValueError:
        return None
    return raw


# Objects of service and user records that dlt flattens into `<object>__<key>` columns. The spec
# lets them be null, and a null one would be a column of its own that never gets data (and a
# dlt warning): it is left out instead, so its flattened columns are simply null.
_FLATTENED_OBJECTS = ("links", "timers")


def with_parsed_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """A service or user record plus `attributes_json` (users carry `attributes` too)."""
    row = dict(record)
    if "attributes" in row:
        row["attributes_json"] = parse_attributes(row["attributes"])
    for name in _FLATTENED_OBJECTS:
        if name in row and row[name] is None:
            del row[name]
    return row


def add_table_variant(
    resource: DltResource,
    table_name: str,
    write_disposition: TWriteDispositionConfig,
    columns: TTableSchemaColumns,
    primary_key: tuple[str, ...] = (),
) -> DltResource:
    """Make `table_name` a table of `resource` (rows reach it with `dlt.mark.with_table_name`)
    with hints of its own only.

    dlt starts a variant from a copy of the resource's hints: the first call empties the copied
    columns (an empty `columns` replaces them), the second sets the table's; the resource's
    merge key is cleared, the primary key and write disposition replaced.
    """
    resource.apply_hints(table_name=table_name, create_table_variant=True, columns={})
    resource.apply_hints(
        table_name=table_name,
        create_table_variant=True,
        write_disposition=write_disposition,
        primary_key=list(primary_key),
        merge_key=[],
        columns=columns,
    )
    return resource
