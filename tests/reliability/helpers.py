"""Shared pieces of the reliability tests: the CLI as a subprocess, exact-mirror checks that
cover every table, and a handful of real API writes to make runs differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dlt
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    truth_users,
)
from twilio_writes import TwilioWrites

CLI = [sys.executable, "-m", "twilio_conversations.cli"]
HERE = Path(__file__).parent

#: A retry budget small enough for tests: a few attempts, waits capped well under a second.
FAST_RETRIES: dict[str, Any] = {
    "request_max_attempts": 6,
    "request_max_retry_delay": 0.2,
    "request_timeout": 2.0,
}


def cli_env(emu: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a scheduled CLI run that shares the dirs `run_pipeline` uses in `tmp_path`:
    pipelines under `tmp_path/pipelines` and the DuckDB file `tmp_path/test.duckdb`."""
    env = {
        **os.environ,
        "DLT_DATA_DIR": str(tmp_path),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "test.duckdb"),
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__REQUEST_MAX_ATTEMPTS": str(
            FAST_RETRIES["request_max_attempts"]
        ),
        "SOURCES__TWILIO_CONVERSATIONS__REQUEST_MAX_RETRY_DELAY": str(
            FAST_RETRIES["request_max_retry_delay"]
        ),
        "SOURCES__TWILIO_CONVERSATIONS__REQUEST_TIMEOUT": str(FAST_RETRIES["request_timeout"]),
    }
    env.update(extra)
    return env


def run_cli(
    emu: Any, *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`twilio-conversations <args>` as a scheduler runs it."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=cli_env(emu, cwd, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def attach(tmp_path: Path) -> dlt.Pipeline:
    """The pipeline the CLI and `run_pipeline` share in `tmp_path`, for reading the destination."""
    return dlt.pipeline(
        "twilio_conversations",
        destination=dlt.destinations.duckdb(str(tmp_path / "test.duckdb")),
        dataset_name="twilio",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def assert_exact_mirror(pipeline: dlt.Pipeline, emu: Any) -> None:
    """Every table equals the API field by field, and no key is loaded twice."""
    assert_user_conversations_mirror(pipeline, emu.all_user_conversations())
    assert_services_mirror(pipeline, emu.services())
    assert_users_mirror(pipeline, truth_users(emu))


def change_some_data(emu: Any, salt: str = "a") -> None:
    """Real API writes of each kind a run must capture: read state, a rename, a leave, a join
    and a new user. Each call picks different rows for a different `salt`."""
    rate, kinds = emu.faults.rate, emu.faults.kinds
    emu.faults.set_rate(0.0)  # the writes are test setup, not traffic under test
    try:
        _change_some_data(emu, salt)
    finally:
        emu.faults.set_rate(rate, kinds)


def _change_some_data(emu: Any, salt: str) -> None:
    api = TwilioWrites(emu)
    service = emu.services()[-1]["sid"]
    users = emu.users(service)
    busy = [u for u in users if len(emu.user_conversations(service, u["sid"])) >= 2]
    offset = sum(map(ord, salt)) % max(1, len(busy) - 2)
    reader, leaver = busy[offset], busy[offset + 1]
    rows = emu.user_conversations(service, reader["sid"])
    api.set_read_state(service, reader["sid"], rows[0]["conversation_sid"], LastReadMessageIndex=0)
    api.update_conversation(service, rows[-1]["conversation_sid"], FriendlyName=f"renamed {salt}")
    api.leave(
        service,
        leaver["sid"],
        emu.user_conversations(service, leaver["sid"])[0]["conversation_sid"],
    )
    newcomer = f"new-{salt}@example.com"
    api.create_user(service, newcomer)
    api.join(service, rows[0]["conversation_sid"], newcomer)
