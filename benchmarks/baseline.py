"""The baseline a dlt user would write: the declarative ``rest_api`` source, default settings.

services -> users -> each user's conversations through ``resolve`` params, the ``json_link``
paginator on ``meta.next_page_url``, merge with a primary key, no incremental (on the per-user
child it would lose rows: one cursor for all parents, see docs/performance.md).

    python -m benchmarks.baseline --base-url http://127.0.0.1:8080 --db baseline.duckdb

Credentials from TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN; DLT_DATA_DIR isolates its state.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

DATASET = "rest_api_data"  # not the file's name: DuckDB 2.0 rejects a schema named like the file


def build_source(base_url: str, auth: tuple[str, str]) -> Any:
    from dlt.sources.rest_api import rest_api_source

    return rest_api_source(
        {
            "client": {
                "base_url": base_url.rstrip("/") + "/v1/",
                "auth": {"type": "http_basic", "username": auth[0], "password": auth[1]},
                "paginator": {"type": "json_link", "next_url_path": "meta.next_page_url"},
            },
            "resource_defaults": {"write_disposition": "merge"},
            "resources": [
                {
                    "name": "services",
                    "primary_key": "sid",
                    "endpoint": {"path": "Services", "data_selector": "services"},
                },
                {
                    "name": "users",
                    "primary_key": "sid",
                    "endpoint": {
                        "path": "Services/{service_sid}/Users",
                        "data_selector": "users",
                        "params": {
                            "service_sid": {
                                "type": "resolve",
                                "resource": "services",
                                "field": "sid",
                            }
                        },
                    },
                },
                {
                    "name": "user_conversations",
                    "primary_key": ["chat_service_sid", "user_sid", "conversation_sid"],
                    "endpoint": {
                        "path": "Services/{service_sid}/Users/{user_sid}/Conversations",
                        "data_selector": "conversations",
                        "params": {
                            "service_sid": {
                                "type": "resolve",
                                "resource": "users",
                                "field": "chat_service_sid",
                            },
                            "user_sid": {"type": "resolve", "resource": "users", "field": "sid"},
                        },
                    },
                },
            ],
        },
        name="twilio_rest_api",
    )


def main(argv: list[str] | None = None) -> int:
    import dlt

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    started = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="twilio_rest_api_baseline",
        destination=dlt.destinations.duckdb(args.db),
        dataset_name=DATASET,
        progress=None,
    )
    pipeline.run(build_source(args.base_url, auth))
    trace = pipeline.last_trace
    steps = (
        {
            step.step: round((step.finished_at - step.started_at).total_seconds(), 3)
            for step in trace.steps
            if step.finished_at
        }
        if trace
        else {}
    )
    counts = (
        dict(trace.last_normalize_info.row_counts) if trace and trace.last_normalize_info else {}
    )
    print(
        json.dumps(
            {
                "rows_written": counts,
                "steps_s": steps,
                "total_s": round(time.perf_counter() - started, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
