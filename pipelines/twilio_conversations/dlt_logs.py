"""Two dlt warnings about what this source does on purpose, kept out of every user's logs.

dlt warns on each arrow batch of `user_conversations` (and its history) that our `json` hint
overrides the arrow `string` type of `attributes_json` (arrow has no JSON type), and, on a first
load, that the plain append has no use for the hard-delete flag. Both describe intended
behaviour, repeat per batch, and would teach operators to ignore dlt's warnings; every other dlt
record passes. Installed by the source, so plain-dlt, Dagster and Airflow users get the same
quiet logs as the CLI.
"""

from __future__ import annotations

import logging

_OUR_TABLES = ("user_conversations",)  # also matches user_conversations_history


class ExpectedDltWarnings(logging.Filter):
    """Drops the two records described in the module docstring, about our tables only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(table in message for table in _OUR_TABLES):
            return True
        return not (
            "when merging arrow schema with dlt schema" in message
            or ('"hard_delete" column hint' in message and 'disposition "append"' in message)
        )


def quiet_expected_dlt_warnings() -> None:
    """Attach `ExpectedDltWarnings` to dlt's logger once per process."""
    dlt_logger = logging.getLogger("dlt")
    if not any(isinstance(f, ExpectedDltWarnings) for f in dlt_logger.filters):
        dlt_logger.addFilter(ExpectedDltWarnings())
