"""Column hints and keys of the tables, and the dict-shaped rows of `services` and `users`.

Everything a run needs whether or not it writes anything, without pyarrow: `records.py` builds
the arrow tables of user conversations and is imported only when there are rows to build (an
unchanged re-run never loads pyarrow, about 0.1 s of CPU and 30 MB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from dlt.common.schema.typing import TColumnSchema, TTableSchemaColumns

from .settings import DELETED_COLUMN

USER_CONVERSATION_KEY = ("chat_service_sid", "user_sid", "conversation_sid")

# dlt hints the data cannot express: `attributes_json` holds JSON text (a JSON column in
# DuckDB/PostgreSQL); the tombstone flag deletes by key; enums stay text.


def _timestamp_hint() -> TColumnSchema:
    # A fresh dict per column: dlt writes the column name into the hint it is given.
    return {"data_type": "timestamp", "timezone": True}


USER_CONVERSATIONS_COLUMNS: TTableSchemaColumns = {
    "attributes_json": {"data_type": "json"},
    DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
}
USERS_COLUMNS: TTableSchemaColumns = {
    "sid": {"data_type": "text", "nullable": False},
    "chat_service_sid": {"data_type": "text"},
    "attributes": {"data_type": "text"},
    "attributes_json": {"data_type": "json"},
    "joined_channels_count": {"data_type": "bigint"},
    "is_online": {"data_type": "bool"},
    "is_notifiable": {"data_type": "bool"},
    "date_created": _timestamp_hint(),
    "date_updated": _timestamp_hint(),
    DELETED_COLUMN: {"data_type": "bool", "hard_delete": True},
}
SERVICES_COLUMNS: TTableSchemaColumns = {
    "sid": {"data_type": "text", "nullable": False},
    "date_created": _timestamp_hint(),
    "date_updated": _timestamp_hint(),
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


def with_parsed_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """A service or user record plus `attributes_json` (users carry `attributes` too)."""
    row = dict(record)
    if "attributes" in row:
        row["attributes_json"] = parse_attributes(row["attributes"])
    return row
