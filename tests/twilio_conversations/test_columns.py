"""Every field of Twilio's records has a typed column hint.

Without a hint, a field that is null in every record of a load gets no column at all (and dlt a
warning wall on stderr), so `services.friendly_name` or `users.identity` missing breaks the
analyst views; and a first load with no rows creates its tables from the hints alone. The
contract is Twilio's OpenAPI spec: its record schemas, with the keys of nested objects as its
examples document them (`max_table_nesting=1` flattens them into `<object>__<key>` columns).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns
from twilio_conversations.columns import (
    SERVICES_COLUMNS,
    USER_CONVERSATION_FIELDS,
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_COLUMNS,
    USERS_COLUMNS,
    with_parsed_attributes,
)
from twilio_conversations.records import USER_CONVERSATIONS_ARROW_SCHEMA, user_conversations_table
from twilio_conversations.settings import DELETED_COLUMN
from twilio_spec import TABLES, load_spec

KEYS: dict[str, tuple[str, ...]] = {
    "services": ("sid",),
    "users": ("sid",),
    "user_conversations": USER_CONVERSATION_KEY,
    "conversations": ("chat_service_sid", "sid"),
}
# Columns the connector adds to the API's fields: parsed `attributes` and the tombstone flag.
DERIVED: dict[str, dict[str, str]] = {
    "services": {DELETED_COLUMN: "bool"},
    "users": {"attributes_json": "json", DELETED_COLUMN: "bool"},
    "user_conversations": {"attributes_json": "json", DELETED_COLUMN: "bool"},
    "conversations": {"attributes_json": "json", DELETED_COLUMN: "bool"},
}
DUCKDB_TYPES = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "json": "JSON",
}
_MERGE: Any = {"disposition": "merge", "strategy": "delete-insert"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


# -- what the spec documents -----------------------------------------------------------------


def example_records(spec: Mapping[str, Any], schema_name: str) -> list[dict[str, Any]]:
    """Every example record of `schema_name` in the spec's responses (list pages and single)."""
    ref = f"#/components/schemas/{schema_name}"
    found: list[dict[str, Any]] = []
    for operations in spec["paths"].values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content", {}).get("application/json", {})
                schema = content.get("schema", {})
                lists = [
                    key
                    for key, prop in schema.get("properties", {}).items()
                    if prop.get("items", {}).get("$ref") == ref
                ]
                for example in content.get("examples", {}).values():
                    value = example.get("value", {})
                    if schema.get("$ref") == ref:
                        found.append(value)
                    for key in lists:
                        found.extend(value.get(key, []))
    return found


def _example_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "text"
        return "timestamp"
    raise AssertionError(f"no column type for the example value {value!r}")


def _property_type(name: str, prop: Mapping[str, Any]) -> str:
    kind, fmt = prop.get("type"), prop.get("format")
    if kind == "string":
        return "timestamp" if fmt == "date-time" else "text"
    types = {"integer": "bigint", "boolean": "bool", "number": "double"}
    assert kind in types, f"{name}: no column type for the spec's {prop}"
    return types[kind]


def spec_columns(spec: Mapping[str, Any], schema_name: str) -> dict[str, str]:
    """Column -> dlt data type, for every property of the record schema; objects flattened."""
    schemas = spec["components"]["schemas"]
    examples = example_records(spec, schema_name)
    columns: dict[str, str] = {}
    for name, prop in schemas[schema_name]["properties"].items():
        if "$ref" in prop:  # the enums
            prop = schemas[prop["$ref"].rsplit("/", 1)[1]]
        values = [r[name] for r in examples if r.get(name) is not None]
        is_object = prop.get("type") == "object" or (
            "type" not in prop and values and all(isinstance(v, dict) for v in values)
        )
        if not is_object:
            columns[name] = _property_type(name, prop)
            continue
        keys: dict[str, Any] = {}
        for value in values:
            for key, inner in value.items():
                if inner is not None:
                    keys.setdefault(key, inner)
        if not keys:  # an object with undocumented keys: one JSON column
            columns[name] = "json"
        for key, inner in keys.items():
            uri_map = prop.get("format") == "uri-map"
            columns[f"{name}__{key}"] = "text" if uri_map else _example_type(inner)
    return columns


@pytest.mark.parametrize("table", TABLES)
def test_every_field_of_the_spec_has_a_typed_hint(spec: dict[str, Any], table: str) -> None:
    schema_name, hints = TABLES[table]
    expected = spec_columns(spec, schema_name)
    assert len(expected) >= 7  # the spec was read, not an empty schema
    wrong = {
        column: (data_type, hints.get(column, {}).get("data_type"))
        for column, data_type in expected.items()
        if hints.get(column, {}).get("data_type") != data_type
    }
    assert not wrong, f"{table}: column -> (spec type, hinted type): {wrong}"
    for column, data_type in expected.items():
        if data_type == "timestamp":
            assert hints[column].get("timezone") is True, column


@pytest.mark.parametrize("table", TABLES)
def test_hints_name_only_spec_fields_and_derived_columns(spec: dict[str, Any], table: str) -> None:
    schema_name, hints = TABLES[table]
    documented = spec_columns(spec, schema_name) | DERIVED[table]
    assert sorted(set(hints) - set(documented)) == []  # e.g. Chat v2's joined_channels_count
    for column, data_type in DERIVED[table].items():
        assert hints[column].get("data_type") == data_type, column
    assert hints[DELETED_COLUMN].get("hard_delete") is True
    assert [c for c in KEYS[table] if hints[c].get("nullable") is not False] == []
    non_key = [c for c, h in hints.items() if c not in KEYS[table] and h.get("nullable") is False]
    assert non_key == []


def test_every_hint_is_a_dict_of_its_own() -> None:
    """dlt writes the column name into the hint it is given: a shared dict would be renamed."""
    hints = [h for _, columns in TABLES.values() for h in columns.values()]
    assert len({id(h) for h in hints}) == len(hints)


def test_the_arrow_schema_is_the_hints_of_the_one_field_list() -> None:
    fields = {field.column: field for field in USER_CONVERSATION_FIELDS}
    for column, field in fields.items():
        assert column == "__".join(field.path), column  # flattened the way dlt flattens
        assert USER_CONVERSATIONS_COLUMNS[column]["data_type"] == field.data_type, column
    assert list(USER_CONVERSATIONS_COLUMNS) == [*fields, *DERIVED["user_conversations"]]
    assert USER_CONVERSATIONS_ARROW_SCHEMA.names == list(USER_CONVERSATIONS_COLUMNS)
    from_arrow = py_arrow_to_table_schema_columns(USER_CONVERSATIONS_ARROW_SCHEMA)
    for column, hint in USER_CONVERSATIONS_COLUMNS.items():
        arrow = from_arrow[column]
        expected = "text" if hint["data_type"] == "json" else hint["data_type"]  # no arrow JSON
        assert arrow["data_type"] == expected, column
        assert arrow["nullable"] == hint.get("nullable", True), column
        if expected == "timestamp":  # timezone-aware, as the hint says
            assert USER_CONVERSATIONS_ARROW_SCHEMA.field(column).type.tz == "UTC", column


def flattened(record: Mapping[str, Any]) -> set[str]:
    """The columns dlt makes of a record at `max_table_nesting=1`."""
    return {
        f"{key}__{inner}" if isinstance(value, dict) else key
        for key, value in record.items()
        for inner in (value if isinstance(value, dict) else [None])
    }


def test_every_field_the_emulator_renders_has_a_hint(start_emulator: Any) -> None:
    emu = start_emulator(seed=5, services=1, users=3, max_conversations=6)
    services = emu.services()
    users = [u for s in services for u in emu.users(s["sid"])]
    rendered = {
        "services": services,
        "users": [with_parsed_attributes(u) for u in users],
        "user_conversations": emu.all_user_conversations(),
    }
    for table, records in rendered.items():
        assert records, table
        columns = set().union(*(flattened(r) for r in records))
        assert sorted(columns - set(TABLES[table][1])) == [], table


# -- through dlt into DuckDB -----------------------------------------------------------------


@pytest.fixture
def dlt_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """What dlt logs at INFO and above during the test (its logger does not propagate)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "INFO")
    logger = logging.getLogger("dlt")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def warnings_of(records: Sequence[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def load(tmp_path: Path, *resources: Any) -> tuple[dlt.Pipeline, dict[str, dict[str, str]]]:
    """Run `resources` as the source does (max_table_nesting=1) into DuckDB; its columns."""

    @dlt.source(name="twilio_conversations", max_table_nesting=1)
    def source() -> Any:
        return resources

    database = tmp_path / "columns.duckdb"
    pipeline = dlt.pipeline(
        "columns_test",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="twilio",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    pipeline.run(source())
    found: dict[str, dict[str, str]] = {}
    with duckdb.connect(str(database), read_only=True) as con:
        for table, column, data_type in con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'twilio'"
        ).fetchall():
            found.setdefault(table, {})[column] = data_type
    return pipeline, found


def expected_duckdb(table: str, extra: Mapping[str, str]) -> dict[str, str]:
    hints = TABLES[table][1]
    return {c: DUCKDB_TYPES[str(h["data_type"])] for c, h in hints.items()} | dict(extra)


DLT_COLUMNS = {"_dlt_load_id": "VARCHAR", "_dlt_id": "VARCHAR"}


def null_records(spec: dict[str, Any], table: str, always_null: Sequence[str]) -> list[Any]:
    """Two records: Twilio's example with `always_null` nulled, and one where all but the key
    is null (`links` included, as the spec allows); so `always_null` is null in every record."""
    schema_name, _ = TABLES[table]
    example = dict(example_records(spec, schema_name)[0])
    example.update(dict.fromkeys(always_null))
    properties = spec["components"]["schemas"][schema_name]["properties"]
    empty = dict.fromkeys(properties) | {k: example[k] + "0" for k in KEYS[table]}
    return [example, empty]


def test_fields_null_in_every_record_get_typed_columns_and_no_warning(
    spec: dict[str, Any], tmp_path: Path, dlt_log: list[logging.LogRecord]
) -> None:
    services = null_records(spec, "services", ["friendly_name"])
    users = null_records(spec, "users", ["identity", "friendly_name", "is_online"])

    @dlt.resource(
        name="services", primary_key="sid", write_disposition=_MERGE, columns=SERVICES_COLUMNS
    )
    def services_resource() -> Iterator[list[dict[str, Any]]]:
        yield [with_parsed_attributes(r) for r in services]

    @dlt.resource(name="users", primary_key="sid", write_disposition=_MERGE, columns=USERS_COLUMNS)
    def users_resource() -> Iterator[list[dict[str, Any]]]:
        yield [with_parsed_attributes(r) for r in users]

    pipeline, found = load(tmp_path, services_resource, users_resource)

    assert warnings_of(dlt_log) == []
    for table in ("services", "users"):
        assert found[table] == expected_duckdb(table, DLT_COLUMNS), table
        stored = pipeline.default_schema.get_table_columns(table)
        for column, hint in TABLES[table][1].items():
            assert stored[column]["data_type"] == hint["data_type"], (table, column)
    with duckdb.connect(str(tmp_path / "columns.duckdb"), read_only=True) as con:
        assert con.execute("select count(*), count(identity) from twilio.users").fetchone() == (
            2,
            0,
        )


def test_a_user_conversation_field_null_in_every_record_gets_its_typed_column(
    spec: dict[str, Any], tmp_path: Path, dlt_log: list[logging.LogRecord]
) -> None:
    always_null = ["unique_name", "created_by", "last_read_message_index", "timers"]
    rows = null_records(spec, "user_conversations", always_null)

    @dlt.resource(
        name="user_conversations",
        primary_key=USER_CONVERSATION_KEY,
        merge_key=("chat_service_sid", "user_sid"),
        write_disposition=_MERGE,
        columns=USER_CONVERSATIONS_COLUMNS,
    )
    def user_conversations() -> Iterator[Any]:
        yield user_conversations_table(rows, "1")

    pipeline, found = load(tmp_path, user_conversations)

    expected = expected_duckdb("user_conversations", {"_dlt_load_id": "VARCHAR"})
    assert found["user_conversations"] == expected
    stored = pipeline.default_schema.get_table_columns("user_conversations")
    for column, hint in USER_CONVERSATIONS_COLUMNS.items():
        assert stored[column]["data_type"] == hint["data_type"], column
    # The one warning left is intended (the CLI hides it): the `json` hint of attributes_json
    # overrides its arrow `string` type. dlt names each overridden column at INFO level, which
    # also shows the log really is captured: every other hint agrees with the arrow table.
    assert all("when merging arrow schema" in w for w in warnings_of(dlt_log)), dlt_log
    overridden = {
        m.split(" on column ", 1)[1].split(".", 1)[0]
        for m in (r.getMessage() for r in dlt_log)
        if "when merging arrow schema on column" in m
    }
    assert overridden == {"attributes_json"}


def test_a_first_load_with_no_rows_creates_every_spec_column_typed(
    spec: dict[str, Any], tmp_path: Path, dlt_log: list[logging.LogRecord]
) -> None:
    """What the resources do on a first load with nothing to write: the hints alone make the
    tables, so they must hold every column the spec documents."""

    def empty(table: str) -> Any:
        @dlt.resource(name=table, write_disposition=_MERGE)
        def resource() -> Iterator[Any]:
            yield dlt.mark.materialize_table_schema()

        resource.apply_hints(primary_key=list(KEYS[table]), columns=TABLES[table][1])
        return resource

    _, found = load(tmp_path, *(empty(table) for table in TABLES))

    assert warnings_of(dlt_log) == []
    for table, (schema_name, _) in TABLES.items():
        documented = spec_columns(spec, schema_name) | DERIVED[table]
        expected = {c: DUCKDB_TYPES[t] for c, t in documented.items()}
        assert {c: t for c, t in found[table].items() if not c.startswith("_dlt")} == expected
