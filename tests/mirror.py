"""Compare what a pipeline loaded with the emulator's truth, row by row and field by field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import dlt
from twilio_conversations.records import (
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_ARROW_SCHEMA,
    user_conversations_table,
)
from twilio_conversations.window import UpdatedWindow

COMPARED = [n for n in USER_CONVERSATIONS_ARROW_SCHEMA.names if n != "_deleted"]


def normalise(row: Mapping[str, Any]) -> tuple[Any, ...]:
    values = []
    for name in COMPARED:
        value = row.get(name)
        if name == "attributes_json" and isinstance(value, str):
            value = json.loads(value)  # PostgreSQL's jsonb re-formats the text
        values.append(value)
    return tuple(values)


def expected_user_conversations(
    truth_rows: Iterable[Mapping[str, Any]], window: UpdatedWindow | None = None
) -> dict[tuple[str, ...], tuple[Any, ...]]:
    rows = list(truth_rows)
    if window is not None:
        rows = window.select(rows)
    table = user_conversations_table(rows)
    return {tuple(r[k] for k in USER_CONVERSATION_KEY): normalise(r) for r in table.to_pylist()}


def loaded_rows(
    pipeline: dlt.Pipeline, table: str, columns: list[str] | None = None
) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        select = ", ".join(columns) if columns else "*"
        with client.execute_query(f"SELECT {select} FROM {qualified}") as cursor:
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def loaded_user_conversations(pipeline: dlt.Pipeline) -> dict[tuple[str, ...], tuple[Any, ...]]:
    rows = loaded_rows(pipeline, "user_conversations", COMPARED)
    loaded = {tuple(r[k] for k in USER_CONVERSATION_KEY): normalise(r) for r in rows}
    assert len(loaded) == len(rows), "duplicate primary keys in user_conversations"
    return loaded


def assert_user_conversations_mirror(
    pipeline: dlt.Pipeline,
    truth_rows: Iterable[Mapping[str, Any]],
    window: UpdatedWindow | None = None,
) -> int:
    """Assert the table equals the truth; return the row count."""
    expected = expected_user_conversations(truth_rows, window)
    assert_rows_equal(expected, loaded_user_conversations(pipeline))
    return len(expected)


def assert_rows_equal(
    expected: dict[tuple[str, ...], tuple[Any, ...]], loaded: dict[tuple[str, ...], tuple[Any, ...]]
) -> None:
    """Same keys and, row by row, the same normalised values; names the first difference."""
    missing = expected.keys() - loaded.keys()
    extra = loaded.keys() - expected.keys()
    assert not missing, f"{len(missing)} rows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} rows that the API no longer has, e.g. {sorted(extra)[:3]}"
    different = [k for k in expected if expected[k] != loaded[k]]
    if different:
        key = different[0]
        diff = {
            name: (e, got)
            for name, e, got in zip(COMPARED, expected[key], loaded[key], strict=True)
            if e != got
        }
        raise AssertionError(f"{len(different)} rows differ, e.g. {key}: {diff}")


def load_ids(pipeline: dlt.Pipeline, table: str) -> set[str]:
    ids = {r["_dlt_load_id"] for r in loaded_rows(pipeline, table, ["_dlt_load_id"])}
    assert None not in ids, f"rows of {table} without _dlt_load_id"
    return ids
