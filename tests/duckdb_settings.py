"""What DuckDB settings the load step's DuckDB really gets: a spy plugged into dlt's step hooks
opens the destination as the load step is about to, and asks DuckDB for its settings (the
`settings_at_load` fixture plugs it in)."""

from __future__ import annotations

from typing import Any


class DuckDbSettingsAtLoad:
    """A dlt tracking module: records DuckDB's memory_limit and threads as each load starts."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_start_trace(self, trace: Any, step: str, pipeline: Any) -> None:
        pass

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if step == "load":
            with pipeline.sql_client() as client:
                rows = client.execute_sql(
                    "select current_setting('memory_limit'), current_setting('threads')"
                )
            self.seen.append((str(rows[0][0]), int(rows[0][1])))

    def on_end_trace_step(self, *args: Any) -> None:
        pass

    def on_end_trace(self, *args: Any) -> None:
        pass


def duckdb_settings(config: dict[str, Any]) -> tuple[str, int]:
    """What DuckDB reports for `config` applied to a fresh in-memory database."""
    import duckdb

    with duckdb.connect(config={k: str(v) for k, v in config.items()}) as con:
        memory_limit, threads = con.execute(
            "select current_setting('memory_limit'), current_setting('threads')"
        ).fetchall()[0]
    return str(memory_limit), int(threads)


DEFAULTS = duckdb_settings({})
