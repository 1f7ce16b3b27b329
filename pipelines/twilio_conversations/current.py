"""What dlt tells a resource about the run in progress (`dlt.current`): this extract's load id,
the tables that have seen data, the column types stored so far. Each has an answer where a
resource is iterated outside a pipeline run (as unit tests do).
"""

from __future__ import annotations

import dlt


def load_id() -> str | None:
    try:
        return str(dlt.current.load_package_state()["load_id"])
    except Exception:  # iterated outside a pipeline run: no load package, no load id
        return None


def first_time(table: str) -> bool:
    """Whether `table` has never received data in this pipeline (a first load, or after a full
    refresh).

    dlt creates a table only when data reaches it, so on its first load each resource yields
    something that creates it with its typed columns even when no row follows (an account
    without conversations yet, a filter that matches nothing): analysts' queries and the views
    then find every table. Later loads need nothing of the kind.
    """
    try:
        schema = dlt.current.source_schema()
    except Exception:  # iterated outside a pipeline run
        return False
    return table not in schema.data_table_names(seen_data_only=True, include_incomplete=True)


def stored_column_types() -> dict[str, str]:
    """dlt data types of `user_conversations` columns known so far (for variant columns)."""
    try:
        table = dlt.current.source_schema().tables.get("user_conversations", {})
    except Exception:  # iterated outside a pipeline run
        return {}
    return {
        name: str(column["data_type"])
        for name, column in table.get("columns", {}).items()
        if column.get("data_type")
    }
