"""Shape user-conversation records into typed pyarrow tables.

User conversations are the bulk of the data, so they go to dlt as pyarrow tables with an explicit
schema: dlt then writes parquet without inferring types row by row (docs/performance.md,
"Figures behind the code's choices").

Imported only when a run has rows to write (see `columns.py` for the hints every run needs): a run
with nothing to write never loads pyarrow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.data_types.typing import TDataType
from dlt.common.libs.pyarrow import get_column_type_from_py_arrow
from dlt.common.schema.typing import TColumnSchema

from .columns import (
    USER_CONVERSATION_FIELDS,
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_COLUMNS,
    parse_attributes,
)
from .settings import DELETED_COLUMN

__all__ = [
    "USER_CONVERSATION_KEY",  # re-exported: the key belongs with the tables' shape
    "USER_CONVERSATIONS_ARROW_SCHEMA",
    "UTC_TIMESTAMP",
    "parse_attributes",
    "user_conversations_table",
    "user_tombstones_table",
    "with_row_hash",
]

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

# dlt data type of a hint -> arrow type of its column. JSON has no arrow type: `attributes_json`
# is JSON text, and the `json` hint makes it a JSON column in the destination.
_ARROW_TYPES: dict[TDataType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": UTC_TIMESTAMP,  # the hints are all timezone-aware
    "json": pa.string(),
}


def _arrow_type(name: str, hint: TColumnSchema) -> pa.DataType:
    data_type = hint.get("data_type")
    if data_type is None or data_type not in _ARROW_TYPES:
        raise TypeError(f"user_conversations.{name}: no arrow type for dlt type {data_type!r}")
    return _ARROW_TYPES[data_type]


# Every hinted column, in the hints' order: the API's fields, then `attributes_json` and the
# delete flag (see `_with_derived_columns`). Key columns are not nullable, as their hints say.
USER_CONVERSATIONS_ARROW_SCHEMA = pa.schema(
    [
        pa.field(name, _arrow_type(name, hint), nullable=hint.get("nullable", True))
        for name, hint in USER_CONVERSATIONS_COLUMNS.items()
    ]
)

# (column, arrow type, source path in the API record), from the one field list in columns.py.
_USER_CONVERSATION_FIELDS: tuple[tuple[str, pa.DataType, tuple[str, ...]], ...] = tuple(
    (field.column, USER_CONVERSATIONS_ARROW_SCHEMA.field(field.column).type, field.path)
    for field in USER_CONVERSATION_FIELDS
)
_KNOWN_SOURCE_FIELDS = frozenset(path[0] for _, _, path in _USER_CONVERSATION_FIELDS)
# The keys known inside each object that is flattened (`timers`, `links`).
_KNOWN_NESTED_FIELDS = {
    outer: frozenset(p[1] for _, _, p in _USER_CONVERSATION_FIELDS if len(p) == 2 and p[0] == outer)
    for outer in dict.fromkeys(p[0] for _, _, p in _USER_CONVERSATION_FIELDS if len(p) == 2)
}


def _column_values(rows: Sequence[Mapping[str, Any]], path: tuple[str, ...]) -> list[Any]:
    """One field of every row; `path` is one key, or two for `timers` / `links`."""
    if len(path) == 1:
        (key,) = path
        return [row.get(key) for row in rows]
    outer, inner = path
    return [v.get(inner) if isinstance(v := row.get(outer), dict) else None for row in rows]


def user_conversations_table(
    rows: Sequence[Mapping[str, Any]],
    load_id: str | None = None,
    stored_types: Mapping[str, str] | None = None,
) -> pa.Table:
    """Build one typed arrow table from API user-conversation records.

    Schema drift never fails a run, and is handled the way dlt handles it for dict rows: a value
    that does not fit its column's type goes to a variant column `<name>__v_<type>` instead
    (e.g. `unread_messages_count__v_text`), and fields Twilio adds become new columns.

    Args:
        rows: Records as the API sent them.
        load_id: Fills `_dlt_load_id`, which dlt adds to dict rows but not to arrow tables: with
            it analysts (and tests) can see which load last wrote each row.
        stored_types: dlt data types of the columns the destination already has, so a new field
            whose type changed between runs also lands in a variant column.
    """
    try:
        table = _typed_table_fast(rows)
    except _CONVERSION_ERRORS:
        table = _typed_table_tolerant(rows)  # a value of another type: sort the values out
    for path in _unknown_fields(rows):
        array = _infer_column(_column_values(rows, path), timestamps=path[0] == "timers")
        name = "__".join(path)  # a key new inside `timers` or `links` flattened as dlt would
        table = table.append_column(_variant_name(name, array.type, stored_types or {}), array)
    return _with_load_id(table, load_id)


# The records as the API shapes them (timers and links nested, timestamps as text), so arrow's C++
# converter reads the dicts in one pass: five times faster than building columns in Python.
_RAW_SCHEMA = pa.schema(
    [
        (path[0], pa.string() if arrow_type == UTC_TIMESTAMP else arrow_type)
        for _, arrow_type, path in _USER_CONVERSATION_FIELDS
        if len(path) == 1
    ]
    + [
        (
            outer,
            pa.struct(
                [
                    (path[1], pa.string() if arrow_type == UTC_TIMESTAMP else arrow_type)
                    for _, arrow_type, path in _USER_CONVERSATION_FIELDS
                    if len(path) == 2 and path[0] == outer
                ]
            ),
        )
        for outer in dict.fromkeys(p[0] for _, _, p in _USER_CONVERSATION_FIELDS if len(p) == 2)
    ]
)


def _typed_table_fast(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    raw = pa.Table.from_pylist(list(rows), schema=_RAW_SCHEMA)
    columns: list[pa.Array] = []
    for _, arrow_type, path in _USER_CONVERSATION_FIELDS:
        column = raw.column(path[0])
        if len(path) == 2:
            column = pc.struct_field(column, path[1])
        columns.append(column.cast(arrow_type) if arrow_type == UTC_TIMESTAMP else column)
    return _with_derived_columns(columns, rows)


def _typed_table_tolerant(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    columns: list[pa.Array] = []
    variants: list[tuple[str, pa.Array]] = []
    for name, arrow_type, path in _USER_CONVERSATION_FIELDS:
        typed, misfits = _typed_column(_column_values(rows, path), arrow_type)
        columns.append(typed)
        if misfits is not None:
            variants.append((f"{name}__v_text", pa.array(misfits, pa.string())))
    table = _with_derived_columns(columns, rows)
    for name, array in variants:
        table = table.append_column(name, array)
    return table


def _with_derived_columns(columns: list[pa.Array], rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The API's columns plus `attributes_json` and the (false) delete flag, as one table."""
    attributes = pa.array([parse_attributes(row.get("attributes")) for row in rows], pa.string())
    deleted = pa.array([False] * len(rows), pa.bool_())
    return pa.Table.from_arrays(
        [*columns, attributes, deleted], schema=USER_CONVERSATIONS_ARROW_SCHEMA
    )


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError)


def _convert(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    if arrow_type == UTC_TIMESTAMP:
        return pa.array(values, pa.string()).cast(UTC_TIMESTAMP)
    return pa.array(values, arrow_type)


def _typed_column(values: list[Any], arrow_type: pa.DataType) -> tuple[pa.Array, list[Any] | None]:
    """The typed column, plus the values that did not fit it as text (None when all fit)."""
    try:
        return _convert(values, arrow_type), None
    except _CONVERSION_ERRORS:
        pass  # rare: sort the values one by one
    typed: list[Any] = []
    misfits: list[Any] = []
    for value in values:
        try:
            _convert([value], arrow_type)
        except _CONVERSION_ERRORS:
            typed.append(None)
            misfits.append(value if isinstance(value, str) else json.dumps(value, default=str))
        else:
            typed.append(value)
            misfits.append(None)
    return _convert(typed, arrow_type), misfits


def _variant_name(name: str, arrow_type: pa.DataType, stored_types: Mapping[str, str]) -> str:
    stored = stored_types.get(name)
    if stored is None:
        return name
    data_type = get_column_type_from_py_arrow(arrow_type).get("data_type")
    return name if data_type in (None, stored) else f"{name}__v_{data_type}"


def _with_load_id(table: pa.Table, load_id: str | None) -> pa.Table:
    if load_id is None:
        return table
    return table.append_column("_dlt_load_id", pa.array([load_id] * table.num_rows, pa.string()))


def _unknown_fields(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """Fields Twilio added after this code was written, at the top level or inside `timers`
    and `links` (as (object, key)), in first-seen order."""
    seen: dict[tuple[str, ...], None] = {}
    for row in rows:
        if not _KNOWN_SOURCE_FIELDS.issuperset(row):  # the common case costs one C-level check
            for name in row:
                if name not in _KNOWN_SOURCE_FIELDS:
                    seen.setdefault((name,), None)
        for outer, known in _KNOWN_NESTED_FIELDS.items():
            inner = row.get(outer)
            if isinstance(inner, dict) and not known.issuperset(inner):
                for name in inner:
                    if name not in known:
                        seen.setdefault((outer, name), None)
    return list(seen)


def _infer_column(values: list[Any], timestamps: bool = False) -> pa.Array:
    # New fields are kept rather than dropped, so dlt evolves the schema (a new column) instead
    # of silently losing data; values arrow cannot type consistently are kept as JSON text.
    # A new key of `timers` is a moment, as its siblings are, when its values read as one.
    if timestamps:
        try:
            return _convert(values, UTC_TIMESTAMP)
        except _CONVERSION_ERRORS:
            pass
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


def user_tombstones_table(
    partitions: Iterable[tuple[str, str]], load_id: str | None = None
) -> pa.Table:
    """Rows that delete every stored row of each (service, user) partition and insert nothing.

    The merge key is (chat_service_sid, user_sid), so a tombstone with an empty conversation_sid
    removes the whole partition; its `_deleted` flag keeps it out of the table itself.
    """
    keys = list(partitions)
    data: dict[str, list[Any]] = {
        name: [None] * len(keys) for name in USER_CONVERSATIONS_ARROW_SCHEMA.names
    }
    data["chat_service_sid"] = [service for service, _ in keys]
    data["user_sid"] = [user for _, user in keys]
    data["conversation_sid"] = [""] * len(keys)
    data[DELETED_COLUMN] = [True] * len(keys)
    return _with_load_id(
        pa.Table.from_pydict(data, schema=USER_CONVERSATIONS_ARROW_SCHEMA), load_id
    )


def with_row_hash(table: pa.Table) -> pa.Table:
    """The table plus `_dlt_id` as a content hash: dlt's `scd2` tells versions apart by it.

    dlt hashes dict rows itself but gives arrow rows random ids, which would make every load
    look like a new version of every row.
    """
    names = [
        name
        for name in table.column_names
        if name not in (DELETED_COLUMN, "_dlt_id", "_dlt_load_id")
    ]
    columns = [table.column(name).to_pylist() for name in names]
    hashes = [
        hashlib.blake2b(repr(values).encode(), digest_size=12).hexdigest()
        for values in zip(*columns, strict=True)
    ]
    # not null, as dlt declares its row key: no hint to override, so no warning per batch
    row_key = pa.field("_dlt_id", pa.string(), nullable=False)
    return table.append_column(row_key, pa.array(hashes, pa.string()))


def fingerprints_table(rows: Sequence[Mapping[str, Any]], load_id: str | None = None) -> pa.Table:
    """`_fingerprints` rows as an arrow table: written as parquet like the data, where dict rows
    would take the destination's slower default format (`fingerprints.py`)."""
    names = ("resource", "scope", "key", "fingerprint")
    data: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in names}
    data[DELETED_COLUMN] = [bool(row.get(DELETED_COLUMN)) or None for row in rows]
    schema = pa.schema(
        [
            pa.field("resource", pa.string(), nullable=False),
            pa.field("scope", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("fingerprint", pa.string()),
            pa.field(DELETED_COLUMN, pa.bool_()),
        ]
    )
    return _with_load_id(pa.Table.from_pydict(data, schema=schema), load_id)
