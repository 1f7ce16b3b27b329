"""The floor: what a hand-written script does in the least time.

A thread pool of ``requests`` sessions follows ``meta.next_page_url`` (services -> users -> each
user's conversations), builds one pyarrow table and writes it with one DuckDB
``CREATE TABLE AS``. No state, no retries, no schema management: the bar to measure against.

    python -m benchmarks.floor --base-url http://127.0.0.1:8080 --db floor.duckdb [--fetch-only]

Prints one JSON line: rows, requests and the time of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

_local = threading.local()

FIELDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("chat_service_sid", "string", ("chat_service_sid",)),
    ("user_sid", "string", ("user_sid",)),
    ("conversation_sid", "string", ("conversation_sid",)),
    ("account_sid", "string", ("account_sid",)),
    ("participant_sid", "string", ("participant_sid",)),
    ("friendly_name", "string", ("friendly_name",)),
    ("unique_name", "string", ("unique_name",)),
    ("conversation_state", "string", ("conversation_state",)),
    ("notification_level", "string", ("notification_level",)),
    ("unread_messages_count", "int64", ("unread_messages_count",)),
    ("last_read_message_index", "int64", ("last_read_message_index",)),
    ("attributes", "string", ("attributes",)),
    ("timers__date_inactive", "timestamp", ("timers", "date_inactive")),
    ("timers__date_closed", "timestamp", ("timers", "date_closed")),
    ("date_created", "timestamp", ("date_created",)),
    ("date_updated", "timestamp", ("date_updated",)),
    ("created_by", "string", ("created_by",)),
    ("url", "string", ("url",)),
    ("links__participant", "string", ("links", "participant")),
    ("links__conversation", "string", ("links", "conversation")),
)


class Fetcher:
    def __init__(self, base_url: str, auth: tuple[str, str], in_flight: int | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.requests = 0
        self._lock = threading.Lock()
        # At most this many requests in flight, the listing's included (--pipelined).
        self._slots = threading.BoundedSemaphore(in_flight) if in_flight else None

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(_local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self.auth
            _local.session = session
        return session

    def list_all(self, path: str, key: str) -> list[dict[str, Any]]:
        return [record for page in self.iter_pages(path, key) for record in page]

    def iter_pages(self, path: str, key: str) -> Any:
        session = self._session()
        url: str | None = f"{self.base_url}{path}?PageSize=50"
        while url:
            if self._slots is not None:
                with self._slots:
                    response = session.get(url, timeout=60)
            else:
                response = session.get(url, timeout=60)
            response.raise_for_status()
            body = response.json()
            with self._lock:
                self.requests += 1
            yield body[key]
            url = body["meta"]["next_page_url"]


def _dig(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def to_table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64()}
    arrays = []
    for _, kind, path in FIELDS:
        values = [_dig(row, path) for row in rows]
        if kind == "timestamp":
            arrays.append(pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC")))
        else:
            arrays.append(pa.array(values, types[kind]))
    return pa.Table.from_arrays(arrays, names=[name for name, _, _ in FIELDS])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--db", help="DuckDB file to write (table user_conversations)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--fetch-only", action="store_true", help="stop after fetching")
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="fetch each user's conversations as soon as the listing page naming the user is "
        "read, with at most --workers requests in flight in all (the listing's included)",
    )
    args = parser.parse_args(argv)
    auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])

    started = time.perf_counter()
    fetcher = Fetcher(args.base_url, auth, args.workers if args.pipelined else None)
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(args.workers) as pool:
        for service in fetcher.list_all("/v1/Services", "services"):
            users_path = f"/v1/Services/{service['sid']}/Users"
            if args.pipelined:
                futures = [
                    pool.submit(
                        fetcher.list_all, f"{users_path}/{u['sid']}/Conversations", "conversations"
                    )
                    for page in fetcher.iter_pages(users_path, "users")
                    for u in page
                ]
                for future in futures:
                    rows.extend(future.result())
                continue
            users = fetcher.list_all(users_path, "users")
            paths = [f"{users_path}/{u['sid']}/Conversations" for u in users]
            for part in pool.map(lambda p: fetcher.list_all(p, "conversations"), paths):
                rows.extend(part)
    fetched = time.perf_counter()
    result: dict[str, Any] = {"rows": len(rows), "requests": fetcher.requests}
    result["fetch_s"] = round(fetched - started, 3)
    if not args.fetch_only:
        import duckdb

        table = to_table(rows)
        built = time.perf_counter()
        con = duckdb.connect(args.db)
        con.register("arrow_rows", table)
        con.execute("CREATE OR REPLACE TABLE user_conversations AS SELECT * FROM arrow_rows")
        con.close()
        loaded = time.perf_counter()
        result["arrow_s"] = round(built - fetched, 3)
        result["duckdb_s"] = round(loaded - built, 3)
    result["total_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
