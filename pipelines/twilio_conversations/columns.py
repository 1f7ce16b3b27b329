"""Column hints and keys of the tables, and the dict-shaped rows of `services` and `users`.

Everything a run needs whether or not it writes anything, without pyarrow: `records.py` builds
the arrow tables of user conversations and is imported only when there are rows to build (an
unchanged re-run never loads pyarrow; docs/performance.md, "Where the time goes", 12).

The hints name every field of Twilio's OpenAPI records (`conversations.v1.service`,
`...service_user`, `...service_user_conversation`), with nested objects flattened the way dlt
flattens them at `max_table_nesting=1` (`links__users`, `timers__date_closed`). They must be
complete: a field that is null in every record of a load gets no column at all without a hint,
and a first load with no rows creates its tables from the hints alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from dlt.common.data_types.typing import TDataType
from dlt.common.schema.typing import TColumnSchema, TTableSchemaColumns

from .settings import DELETED_COLUMN

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


# Hints the data cannot express besides the types: `attributes_json` holds JSON text (a JSON
# column in DuckDB/PostgreSQL), derived from `attributes`; the tombstone flag deletes by key.
# Enums stay text. Order matters: `records.py` builds its arrow columns in this order.
USER_CONVERSATIONS_COLUMNS: TTableSchemaColumns = {
    **{
        field.column: _hint(field.data_type, key=field.column in USER_CONVERSATION_KEY)
        for field in USER_CONVERSATION_FIELDS
    },
    "attributes_json": {"data_type": "json"},
    DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
}
USERS_COLUMNS: TTableSchemaColumns = {
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
    "date_updated": _timestamp_hint(),
    "url": {"data_type": "text"},
    "links__user_conversations": {"data_type": "text"},
    DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
}
SERVICES_COLUMNS: TTableSchemaColumns = {
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
}


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
_FLATTENED_OBJECTS = ("links",)


def with_parsed_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """A service or user record plus `attributes_json` (users carry `attributes` too)."""
    row = dict(record)
    if "attributes" in row:
        row["attributes_json"] = parse_attributes(row["attributes"])
    for name in _FLATTENED_OBJECTS:
        if name in row and row[name] is None:
            del row[name]
    return row
