"""A plain-dlt user's successful runs log nothing: dlt's warnings about what the source does on
purpose are dropped by the source itself, any other dlt warning still shows."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from twilio_conversations.dlt_logs import ExpectedDltWarnings, quiet_expected_dlt_warnings

PLAIN_DLT = textwrap.dedent(
    """
    import sys, dlt
    from twilio_conversations import twilio_conversations
    from twilio_conversations.credentials import TwilioCredentials
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = sys.argv[2], sys.argv[3]
    pipeline = dlt.pipeline("plain", destination=dlt.destinations.duckdb("plain.duckdb"))
    for history in (False, False, True):  # first load, re-run, history turned on
        source = twilio_conversations(
            credentials=credentials, base_url=sys.argv[1], history=history
        )
        pipeline.run(source)
    print("ok")
    """
)


def test_plain_dlt_runs_write_no_warning(emulator: Any, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_DLT, emulator.base_url, emulator.account_sid,
         emulator.auth_token],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr == ""


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("dlt", logging.WARNING, __file__, 1, message, None, None)


def test_only_the_two_expected_warnings_about_our_tables_are_dropped() -> None:
    keep = ExpectedDltWarnings().filter
    arrow = (
        "In resource: user_conversations, when merging arrow schema with dlt schema, several "
        "column hints were different."
    )
    append = (
        'The "hard_delete" column hint for column "_deleted" in table "user_conversations" with '
        'write disposition "append" in schema "twilio_conversations" will be ignored.'
    )
    assert not keep(record(arrow))
    assert not keep(record(arrow.replace("user_conversations", "user_conversations_history")))
    assert not keep(record(append))
    assert keep(record(arrow.replace("user_conversations", "someone_elses_table")))
    assert keep(record("Falling back to `append` on `users`"))
    quiet_expected_dlt_warnings()
    quiet_expected_dlt_warnings()
    filters = [f for f in logging.getLogger("dlt").filters if isinstance(f, ExpectedDltWarnings)]
    assert len(filters) == 1


def test_the_history_row_key_is_declared_as_dlt_declares_it() -> None:
    """Not null in the arrow schema too, so dlt has no hint of its own to override."""
    from twilio_conversations.records import user_conversations_table, with_row_hash

    row = {"chat_service_sid": "IS1", "user_sid": "US1", "conversation_sid": "CH1"}
    table = with_row_hash(user_conversations_table([row]))
    assert table.schema.field("_dlt_id").nullable is False
