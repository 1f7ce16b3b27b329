"""Compare what a pipeline loaded with the emulator's truth, row by row and column by column.

The expected rows are built here, from the records exactly as the API renders them
(`emulator.all_user_conversations()`, `.services()`, `.users(sid)`), by a small flattener that
follows the README's "What you get" and shares no code with the connector's own mapping
(`twilio_conversations.records` / `.columns`): a mapping bug there cannot hide in the oracle too.

Values are compared *with their type*: every value becomes `(kind, value)` (`("int", 5)`,
`("timestamptz", <UTC datetime>)`, `("json", <parsed>)`, ...), so `5 != 5.0 != True` and a
timestamp loaded as text differs from the truth. Every column of the loaded table is compared
(except dlt's own `_dlt_*` columns and the `_deleted` marker), a column the truth has must exist,
and the table's declared column types (`information_schema`) must match the truth's kinds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dlt

USER_CONVERSATION_KEY = ("chat_service_sid", "user_sid", "conversation_sid")
SID_KEY = ("sid",)

#: The columns every `user_conversations` table has (README "What you get"): the API record's
#: top-level fields, `timers`/`links` flattened, and `attributes_json`. Fields the truth holds
#: beyond these are expected as columns too.
COMPARED = [
    "account_sid",
    "chat_service_sid",
    "conversation_sid",
    "unread_messages_count",
    "last_read_message_index",
    "participant_sid",
    "user_sid",
    "friendly_name",
    "conversation_state",
    "timers__date_inactive",
    "timers__date_closed",
    "attributes",
    "attributes_json",
    "date_created",
    "date_updated",
    "created_by",
    "notification_level",
    "unique_name",
    "url",
    "links__participant",
    "links__conversation",
]

# Typing rules of the README, by column name; other columns keep their JSON value's type.
_TIMESTAMPS = frozenset({"date_created", "date_updated"})
_TIMESTAMP_PREFIXES = ("timers__",)
_INTEGERS = frozenset({"unread_messages_count", "last_read_message_index"})
_JSON = "attributes_json"
#: Nested objects of the spec's records, flattened into `<field>__<key>`; an object in a field
#: Twilio adds later is one JSON column (README "Schema drift").
_FLATTENED = frozenset({"timers", "links"})
#: A value that does not fit its column's type goes to `<column>__v_<dlt type>` (README "Schema
#: drift"); the dlt type names of the value kinds.
_VARIANT_TYPES = {
    "str": "text",
    "int": "bigint",
    "float": "double",
    "bool": "bool",
    "json": "json",
    "timestamptz": "timestamp",
}

#: Declared column types (information_schema, DuckDB and PostgreSQL spellings) -> value kinds.
_DECLARED_KINDS = {
    "varchar": "str",
    "text": "str",
    "character varying": "str",
    "bigint": "int",
    "timestamp with time zone": "timestamptz",
    "json": "json",
    "jsonb": "json",
    "boolean": "bool",
    "double": "float",
    "double precision": "float",
}

Row = tuple[tuple[str, Any], ...]  # sorted (column, typed value) pairs
Rows = dict[tuple[str, ...], Row]


class Window(Protocol):
    """What `expected_user_conversations` needs of a window (e.g. an `UpdatedWindow`)."""

    @property
    def start(self) -> datetime | None: ...

    @property
    def end(self) -> datetime | None: ...


# -- typed values --------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """`value` with its type made part of equality; None stays None (SQL NULL)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            return ("timestamp without time zone", value)
        return ("timestamptz", value.astimezone(UTC))
    if isinstance(value, dict | list):
        return ("json", value)  # PostgreSQL's jsonb through psycopg2
    return (type(value).__name__, value)


def _kind(value: Any) -> str | None:
    return None if value is None else str(value[0])


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def strict_json(raw: Any) -> tuple[str, Any] | None:
    """`("json", parsed)` when `raw` is RFC 8259 JSON text (no NaN/Infinity, valid UTF-8)."""
    if not isinstance(raw, str):
        return None
    try:
        raw.encode("utf-8")
        return ("json", json.loads(raw, parse_constant=_reject_constant))
    except ValueError:  # UnicodeEncodeError and JSONDecodeError are ValueErrors
        return None


def _utc(text: Any, name: str) -> tuple[str, datetime]:
    assert isinstance(text, str), f"oracle: {name} {text!r} is not an ISO 8601 string"
    moment = datetime.fromisoformat(text)  # Python 3.11 reads the trailing "Z"
    assert moment.utcoffset() is not None, f"oracle: {name} {text!r} has no UTC offset"
    return ("timestamptz", moment.astimezone(UTC))


def _expected_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMESTAMPS or name.startswith(_TIMESTAMP_PREFIXES):
        return _utc(value, name)
    if name in _INTEGERS:
        assert type(value) is int, f"oracle: {name} {value!r} is not an integer"
        return ("int", value)
    return typed(value)  # a dict or list: ("json", value)


# -- expected rows from the truth ----------------------------------------------------------


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One API record as the row the README promises, with typed values.

    Top-level fields keep their name; the spec's nested objects (`timers`, `links`) become
    `<field>__<key>`, any other object or list one JSON value; `attributes` stays the raw text
    and gains `attributes_json`.
    """
    row: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, dict) and name in _FLATTENED:
            for key, inner in value.items():
                column = f"{name}__{key}"
                row[column] = _expected_value(column, inner)
        else:
            row[name] = _expected_value(name, value)
    if "attributes" in record:
        row[_JSON] = strict_json(record["attributes"])
    return row


def _expected_table(
    records: Iterable[Mapping[str, Any]], key: Sequence[str], always: Iterable[str] = ()
) -> tuple[Rows, dict[str, str | None]]:
    """Rows by key, each with every column of the table, and each column's expected kind.

    A column's kind comes from the README's rules or from its non-null values; None when the
    truth leaves it open (null in every record).
    """
    flat = [flatten(r) for r in records]
    columns = dict.fromkeys(always)
    for row in flat:
        columns.update(dict.fromkeys(row))
    rows: Rows = {}
    for row in flat:
        rows[tuple(row[k][1] for k in key)] = tuple(sorted((c, row.get(c)) for c in columns))
    assert len(rows) == len(flat), "oracle: the truth repeats a key"
    kinds = {column: _column_kind(column, flat) for column in columns}
    return rows, kinds


def _column_kind(column: str, rows: Sequence[Mapping[str, Any]]) -> str | None:
    if column == _JSON:
        return "json"
    if column in _INTEGERS:
        return "int"
    if column in _TIMESTAMPS or column.startswith(_TIMESTAMP_PREFIXES):
        return "timestamptz"
    seen = {_kind(row.get(column)) for row in rows} - {None}
    assert len(seen) <= 1, f"oracle: {column} mixes {sorted(str(s) for s in seen)}"
    return next(iter(seen), None)


def _in_window(record: Mapping[str, Any], window: Window | None) -> bool:
    if window is None or (window.start is None and window.end is None):
        return True
    stamp = record.get("date_updated")
    assert stamp is not None, f"oracle: no rule for a windowed row without date_updated {record}"
    moment = _utc(stamp, "date_updated")[1]
    return (window.start is None or window.start <= moment) and (
        window.end is None or moment < window.end
    )


def _user_conversations_truth(
    truth_rows: Iterable[Mapping[str, Any]], window: Window | None
) -> tuple[Rows, dict[str, str | None]]:
    rows = [r for r in truth_rows if _in_window(r, window)]
    return _expected_table(rows, USER_CONVERSATION_KEY, COMPARED)


def expected_user_conversations(
    truth_rows: Iterable[Mapping[str, Any]], window: Window | None = None
) -> Rows:
    """The `user_conversations` rows the truth implies (`start <= date_updated < end`)."""
    return _user_conversations_truth(truth_rows, window)[0]


def expected_services(truth: Iterable[Mapping[str, Any]]) -> Rows:
    return _expected_table(truth, SID_KEY)[0]


def expected_users(truth: Iterable[Mapping[str, Any]]) -> Rows:
    return _expected_table(truth, SID_KEY, ("attributes", _JSON))[0]


def truth_users(
    emu: Any, service_sids: Iterable[str] | None = None, account_sid: str | None = None
) -> list[dict[str, Any]]:
    """Every user of every service (or of `service_sids`) of the account (default: the
    emulator's parent account), as the API lists them."""
    if service_sids is None:
        service_sids = [s["sid"] for s in emu.services(account_sid=account_sid)]
    return [user for sid in service_sids for user in emu.users(sid, account_sid=account_sid)]


# -- what the destination holds ------------------------------------------------------------


def _compared_column(name: str) -> bool:
    return not name.startswith("_dlt_") and name != "_deleted"


def normalise(row: Mapping[str, Any], json_columns: Iterable[str] = (_JSON,)) -> Row:
    """A loaded row as sorted (column, typed value) pairs, without `_dlt_*` and `_deleted`.

    `attributes_json` arrives as JSON text (DuckDB, parquet, a cast) or parsed (psycopg2) and is
    compared parsed, since PostgreSQL's jsonb re-formats the text.
    """
    out = []
    json_columns = frozenset(json_columns)
    for name, value in row.items():
        if not _compared_column(name):
            continue
        if name in json_columns and isinstance(value, str):
            parsed = strict_json(value)
            assert parsed is not None, f"{_JSON} holds text that is not JSON: {value!r}"
            out.append((name, parsed))
        else:
            out.append((name, typed(value)))
    return tuple(sorted(out))


def loaded_rows(
    pipeline: dlt.Pipeline, table: str, columns: list[str] | None = None
) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        select = ", ".join(columns) if columns else "*"
        with client.execute_query(f"SELECT {select} FROM {qualified}") as cursor:
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def declared_types(pipeline: dlt.Pipeline, table: str) -> dict[str, str]:
    """Column -> its type as the destination declares it (lower case), in table order."""
    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            client.dataset_name,
            table,
        )
    assert rows, f"no table {table} in dataset {pipeline.dataset_name}"
    return {str(name): str(data_type).lower() for name, data_type in rows}


def loaded_table(
    pipeline: dlt.Pipeline,
    table: str,
    key: Sequence[str],
    where: str | None = None,
    params: Sequence[Any] = (),
) -> tuple[Rows, dict[str, str]]:
    """Every compared column of every row (matching `where`, with `%s` placeholders filled from
    `params`) by key, and the compared columns' declared types."""
    types = {n: t for n, t in declared_types(pipeline, table).items() if _compared_column(n)}
    with pipeline.sql_client() as client:
        select = ", ".join(
            # JSON as its text on every destination (psycopg2 would decode jsonb strings)
            f"CAST({client.escape_column_name(n)} AS TEXT) AS {client.escape_column_name(n)}"
            if _DECLARED_KINDS.get(t) == "json"
            else client.escape_column_name(n)
            for n, t in types.items()
        )
        qualified = client.make_qualified_table_name(table)
        sql = f"SELECT {select} FROM {qualified}" + (f" WHERE {where}" if where else "")
        with client.execute_query(sql, *params) as cursor:
            names = [c[0] for c in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    json_columns = [n for n, t in types.items() if _DECLARED_KINDS.get(t) == "json"]
    loaded = {tuple(r[k] for k in key): normalise(r, json_columns) for r in rows}
    assert len(loaded) == len(rows), f"duplicate primary keys in {table}"
    return loaded, types


def loaded_user_conversations(pipeline: dlt.Pipeline) -> Rows:
    return loaded_table(pipeline, "user_conversations", USER_CONVERSATION_KEY)[0]


# -- assertions ----------------------------------------------------------------------------


def assert_column_types(
    table: str, expected: Mapping[str, str | None], declared: Mapping[str, str]
) -> None:
    """Every column of the truth exists, with a type that holds the truth's kind of value."""
    missing = [c for c in expected if c not in declared]
    assert not missing, f"{table} lacks columns the API records have: {missing}"
    wrong = {
        c: (kind, declared[c])
        for c, kind in expected.items()
        if kind is not None and _DECLARED_KINDS.get(declared[c], declared[c]) != kind
    }
    assert not wrong, f"{table} columns of the wrong type, (expected kind, declared): {wrong}"


def assert_rows_equal(expected: Rows, loaded: Rows, table: str = "user_conversations") -> None:
    """Same keys, same columns and, row by row, the same typed values; names the first
    difference. A loaded column the truth does not have must be null in every row."""
    missing = expected.keys() - loaded.keys()
    extra = loaded.keys() - expected.keys()
    assert not missing, f"{table}: {len(missing)} rows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{table}: {len(extra)} rows the API does not have, e.g. {sorted(extra)[:3]}"
    expected_columns = {c for row in expected.values() for c, _ in row}
    loaded_columns = {c for row in loaded.values() for c, _ in row}
    if loaded:
        absent = sorted(expected_columns - loaded_columns)
        assert not absent, f"{table} lacks columns the API records have: {absent}"
    different = []
    for key, row in expected.items():
        want, got = dict(row), dict(loaded[key])
        diff = {
            c: (want.get(c), got.get(c))
            for c in sorted(expected_columns | loaded_columns)
            if want.get(c) != got.get(c)
        }
        if diff:
            different.append((key, diff))
    if different:
        key, diff = different[0]
        raise AssertionError(
            f"{table}: {len(different)} rows differ, e.g. {key}: {{column: (expected, loaded)}}"
            f" {diff}"
        )


def assert_table_mirror(
    pipeline: dlt.Pipeline,
    table: str,
    key: Sequence[str],
    expected: tuple[Rows, dict[str, str | None]],
) -> int:
    loaded, declared = loaded_table(pipeline, table, key)
    rows, kinds = _with_variants(*expected, declared)
    assert_column_types(table, kinds, declared)
    assert_rows_equal(rows, loaded, table)
    return len(rows)


def _with_variants(
    rows: Rows, kinds: dict[str, str | None], declared: Mapping[str, str]
) -> tuple[Rows, dict[str, str | None]]:
    """The expected rows with each value that does not fit its declared column moved to that
    column's variant `<column>__v_<type>`, where the table has one (README "Schema drift")."""
    declared_kinds = {c: _DECLARED_KINDS.get(t, t) for c, t in declared.items()}
    moved: Rows = {}
    kinds = dict(kinds)
    for key, row in rows.items():
        out = dict(row)
        for column, value in row:
            kind = _kind(value)
            if kind is None or declared_kinds.get(column) in (None, kind):
                continue
            variant = f"{column}__v_{_VARIANT_TYPES.get(kind, kind)}"
            if variant in declared:
                out[column], out[variant] = None, value
                kinds[variant] = kind
                kinds[column] = declared_kinds[column]  # what stays there fits it
        moved[key] = tuple(sorted(out.items()))
    return moved, kinds


def assert_user_conversations_mirror(
    pipeline: dlt.Pipeline,
    truth_rows: Iterable[Mapping[str, Any]],
    window: Window | None = None,
) -> int:
    """Assert the table equals the truth (within `window`); return the row count."""
    expected = _user_conversations_truth(truth_rows, window)
    return assert_table_mirror(pipeline, "user_conversations", USER_CONVERSATION_KEY, expected)


def assert_services_mirror(pipeline: dlt.Pipeline, truth: Iterable[Mapping[str, Any]]) -> int:
    """Assert `services` equals the truth (`emulator.services()`); return the row count."""
    return assert_table_mirror(pipeline, "services", SID_KEY, _expected_table(truth, SID_KEY))


def assert_users_mirror(pipeline: dlt.Pipeline, truth: Iterable[Mapping[str, Any]]) -> int:
    """Assert `users` equals the truth (e.g. `truth_users(emulator)`); return the row count."""
    expected = _expected_table(truth, SID_KEY, ("attributes", _JSON))
    return assert_table_mirror(pipeline, "users", SID_KEY, expected)


def assert_conversations_mirror(pipeline: dlt.Pipeline, truth: Iterable[Mapping[str, Any]]) -> int:
    """Assert `conversations` equals the truth (`emulator.all_conversations()`); return the row
    count."""
    key = ("chat_service_sid", "sid")
    expected = _expected_table(truth, key, ("attributes", _JSON))
    return assert_table_mirror(pipeline, "conversations", key, expected)


def load_ids(pipeline: dlt.Pipeline, table: str) -> set[str]:
    ids = {r["_dlt_load_id"] for r in loaded_rows(pipeline, table, ["_dlt_load_id"])}
    assert None not in ids, f"rows of {table} without _dlt_load_id"
    return ids


def reading(database: Path, pipelines_dir: Path) -> dlt.Pipeline:
    """A pipeline of its own (state in `pipelines_dir`) that reads the `twilio` dataset of the
    DuckDB file a run wrote, for the checks above."""
    return dlt.pipeline(
        f"check_{database.stem}",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="twilio",
        pipelines_dir=str(pipelines_dir),
    )
