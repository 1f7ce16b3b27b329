"""Runnable example in the dlt `*_pipeline.py` style.

Credentials come from `.dlt/secrets.toml` or the environment (TWILIO_ACCOUNT_SID /
TWILIO_AUTH_TOKEN, or TWILIO_API_KEY / TWILIO_API_SECRET). Run from the project root:

    python pipelines/twilio_conversations_pipeline.py
"""

from __future__ import annotations

import dlt
from twilio_conversations import twilio_conversations
from twilio_conversations.loading import preferred_loader_file_format
from twilio_conversations.views import create_views


def load_everything() -> None:
    """Every service, user and user conversation the credentials can see, into DuckDB."""
    pipeline = dlt.pipeline(
        pipeline_name="twilio_conversations",
        destination="duckdb",
        dataset_name="twilio",  # not the DuckDB file's name: see runner.DATASET_NAME
        progress="log",
    )
    info = pipeline.run(
        twilio_conversations(), loader_file_format=preferred_loader_file_format(pipeline)
    )
    print(info)
    print("views:", create_views(pipeline))  # dlt creates tables only; `run` makes these too


def load_selected_users(service_sid: str, identities: list[str]) -> None:
    """Only some users of one service; other users already in the dataset stay untouched."""
    pipeline = dlt.pipeline(
        pipeline_name="twilio_conversations",
        destination="duckdb",
        dataset_name="twilio",  # not the DuckDB file's name: see runner.DATASET_NAME
    )
    source = twilio_conversations(service_sids=[service_sid], user_sids=identities)
    print(pipeline.run(source, loader_file_format=preferred_loader_file_format(pipeline)))


def backfill(start_date: str, end_date: str) -> None:
    """Conversations updated in [start_date, end_date), into a dataset of their own, the window
    given as an orchestrator's backfill gives it: a `dlt.sources.incremental` on date_updated
    (`start_date=..., end_date=...` says the same)."""
    pipeline = dlt.pipeline(
        pipeline_name="twilio_conversations_backfill",
        destination="duckdb",
        dataset_name="twilio_backfill",
    )
    window = dlt.sources.incremental("date_updated", initial_value=start_date, end_value=end_date)
    source = twilio_conversations(date_updated=window)
    print(pipeline.run(source, loader_file_format=preferred_loader_file_format(pipeline)))


if __name__ == "__main__":
    load_everything()
