"""Every column carries a description, Twilio's where the spec has one, and it reaches the schema.

The oracle is the spec itself, read here: a field's description is its property's, verbatim; a
flattened field's (`timers__date_inactive`, `links__participant`) is its object's plus which key
it is; a field whose property has none takes the description of the enum it refers to. Only what
the spec leaves undescribed, and the connector's own columns, carry descriptions of ours, which
this file states once more on its own (not read from `columns.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from twilio_conversations.settings import DELETED_COLUMN
from twilio_spec import TABLES, load_spec

_ATTRIBUTES_JSON = "The `attributes` text parsed as JSON where it is valid JSON, else null."
_DELETED = (
    "Tombstone flag of change capture: a row with `true` deletes the rows with its key and is "
    "never itself stored in merged tables."
)
# table -> column -> our description: the spec describes neither the field nor an enum of it, or
# the column is the connector's own.
OURS: dict[str, dict[str, str]] = {
    "services": {DELETED_COLUMN: _DELETED},
    "users": {
        "links__user_conversations": (
            "Contains the absolute API resource URL of this user's User Conversations "
            "(the `user_conversations` entry)."
        ),
        "attributes_json": _ATTRIBUTES_JSON,
        DELETED_COLUMN: _DELETED,
    },
    "user_conversations": {
        "url": "An absolute API resource URL for this user conversation.",
        "attributes_json": _ATTRIBUTES_JSON,
        DELETED_COLUMN: _DELETED,
    },
    "conversations": {
        "bindings": (
            "The conversation's bindings, as the API serves them (JSON; the spec does not "
            "describe them)."
        ),
        "attributes_json": _ATTRIBUTES_JSON,
        DELETED_COLUMN: _DELETED,
    },
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def spec_description(spec: Mapping[str, Any], schema_name: str, column: str) -> str | None:
    """What the spec says of `column` of the record `schema_name`, None where it says nothing."""
    schemas = spec["components"]["schemas"]
    name, _, key = column.partition("__")  # `links__participant`: one key of the object `links`
    prop = schemas[schema_name]["properties"].get(name)
    if prop is None:  # not a field of the API's record
        return None
    described = prop.get("description")
    if described is None and "$ref" in prop:  # the enums: described on their own component
        described = schemas[prop["$ref"].rsplit("/", 1)[1]].get("description")
    if described is None or not key:
        return described
    return f"{described.removesuffix('.')} (the `{key}` entry)."


def expected_descriptions(spec: Mapping[str, Any], table: str) -> dict[str, str | None]:
    """Column -> the description the rules give it, for every hinted column of `table`."""
    schema_name, hints = TABLES[table]
    return {
        column: OURS[table].get(column) or spec_description(spec, schema_name, column)
        for column in hints
    }


@pytest.mark.parametrize("table", TABLES)
def test_every_column_has_a_non_empty_description(table: str) -> None:
    _, hints = TABLES[table]
    assert len(hints) >= 8
    empty = [c for c, hint in hints.items() if not str(hint.get("description") or "").strip()]
    assert empty == [], f"{table}: columns without a description"


@pytest.mark.parametrize("table", TABLES)
def test_descriptions_are_the_specs(spec: dict[str, Any], table: str) -> None:
    _, hints = TABLES[table]
    expected = expected_descriptions(spec, table)
    undescribed = [c for c, d in expected.items() if d is None]
    assert undescribed == [], f"{table}: neither the spec nor this test describes these"
    wrong = {
        column: (description, hints[column].get("description"))
        for column, description in expected.items()
        if hints[column].get("description") != description
    }
    assert not wrong, f"{table}: column -> (expected, hinted): {wrong}"


@pytest.mark.parametrize("table", TABLES)
def test_ours_only_where_the_spec_says_nothing(spec: dict[str, Any], table: str) -> None:
    """A description the spec gives (the field's, its object's or its enum's) is used as is."""
    schema_name, hints = TABLES[table]
    for column in OURS[table]:
        assert column in hints, (table, column)
        assert spec_description(spec, schema_name, column) is None, (table, column)


def test_the_oracle_exercises_every_rule(spec: dict[str, Any]) -> None:
    """The spec was read and each rule had something to apply to, so the checks are not empty."""
    by_column = expected_descriptions(spec, "user_conversations")
    assert str(by_column["user_sid"]).startswith("The unique string that identifies the [User")
    assert str(by_column["conversation_state"]).startswith("The current state of this User")
    assert str(by_column["notification_level"]).startswith("The Notification Level of this")
    assert by_column["timers__date_closed"] == (
        "Timer date values representing state update for this conversation "
        "(the `date_closed` entry)."
    )
    services = expected_descriptions(spec, "services")
    assert str(services["links__users"]).endswith("of this service (the `users` entry).")


def test_the_descriptions_reach_the_schema_after_a_load(
    spec: dict[str, Any], emulator: Any, run_pipeline: Any
) -> None:
    outcome = run_pipeline(emulator, resources=["services", "user_conversations", "conversations"])
    assert outcome.rows_written["user_conversations"] > 0
    schema = outcome.pipeline.default_schema
    for table in TABLES:
        columns = schema.tables[table]["columns"]
        expected = expected_descriptions(spec, table)
        stored = {column: columns.get(column, {}).get("description") for column in expected}
        assert stored == expected, table
        # Nor does any column dlt made of the data (one without a hint would not).
        bare = [
            c
            for c, col in columns.items()
            if not c.startswith("_dlt") and not col.get("description")
        ]
        assert bare == [], table
