"""dlt's own minimum: a pipeline of one resource that loads one row into DuckDB.

    python -m benchmarks.dlt_minimum          # writes dlt_minimum.duckdb in the current folder

What every dlt-based connector pays in a process of its own whatever the data: the interpreter
and dlt's import before its first request, the extract, normalize and load steps with their
DuckDB connections after its last. The latency benchmark adds it to the floor, which pays
neither, to show the least a dlt pipeline could take for a case.

The harness checks the row in `minimum.minimum` afterwards, outside the timed process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATABASE = "dlt_minimum.duckdb"
TABLE = "minimum.minimum"


def main() -> int:
    import dlt  # here, so that the harness reads the names above without importing dlt

    @dlt.resource(name="minimum", write_disposition="append")
    def minimum() -> Iterator[list[dict[str, Any]]]:
        yield [{"sid": "US00000000000000000000000000000001", "n": 1}]

    database = Path(DATABASE).resolve()
    pipeline = dlt.pipeline(
        "dlt_minimum",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="minimum",
    )
    pipeline.run(minimum())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
