"""Where a value a test wants kept out may hide: every file under a folder (and what gzip'd load
jobs and parquet files hold), every cell of every table and view of a DuckDB file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq


def file_texts(root: Path) -> Iterable[tuple[Path, bytes]]:
    """Every file's bytes, and what compressed files hold (gzip'd jobs, parquet columns)."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        yield path, data
        if data[:2] == b"\x1f\x8b":
            yield path, gzip.decompress(data)
        if data[:4] == b"PAR1":
            table = pq.read_table(path)
            yield path, json.dumps(table.to_pylist(), default=str, ensure_ascii=False).encode()


def leaks_in_files(root: Path, values: set[str]) -> list[str]:
    found = set()
    for path, data in file_texts(root):
        for value in values:
            if value.encode() in data or json.dumps(value)[1:-1].encode() in data:
                found.add(f"{path.relative_to(root)}: {value!r}")
    return sorted(found)


def leaks_in_destination(database: Path, values: set[str]) -> list[str]:
    found = []
    with duckdb.connect(str(database), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns"
        ).fetchall()
        for schema, table, column in columns:
            cells = con.execute(f'select cast("{column}" as varchar) from "{schema}"."{table}"')
            for (cell,) in cells.fetchall():
                hit = cell and next((v for v in values if v in cell), None)
                if hit:
                    found.append(f"{schema}.{table}.{column}: {hit!r}")
                    break
    return found
