"""`run --json` and `run --resource`, as a scheduler runs them: real processes against the
emulator, a fresh folder each, checked against the emulator's truth.

`--json`: stdout is one JSON object, whatever the run's end (loaded, failed, misconfigured),
and progress lines go to stderr. `--resource`: only the named resources' tables are written;
the views wait until the dataset has every table they read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
from cli_process import cli, emulator_env
from conftest import free_port
from mirror import assert_user_conversations_mirror, assert_users_mirror, reading, truth_users

VIEWS = {"user_conversation_summary", "service_summary", "stale_conversations"}  # README


def one_json_object(stdout: str) -> dict[str, Any]:
    """stdout holds exactly one line, one JSON object."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    record = json.loads(lines[0])
    assert isinstance(record, dict), record
    return record


def tables_in(database: Path) -> dict[str, str]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.sql(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'twilio' AND table_name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()
    return dict(rows)


def test_resources_one_at_a_time_then_the_views(emulator: Any, isolated_dlt: Path) -> None:
    env = emulator_env(emulator)
    base = ["run", "--base-url", emulator.base_url, "--json"]
    database = isolated_dlt / "twilio_conversations.duckdb"

    services = cli(*base, "--resource", "services", cwd=isolated_dlt, env=env)
    assert services.returncode == 0, services.stderr
    record = one_json_object(services.stdout)
    assert record["exit_code"] == 0 and record["status"] == "ok" and record["error"] is None
    assert record["rows_written"] == {"services": len(emulator.services())}
    assert record["users_scanned"] == 0 and record["requests"] >= 1
    assert record["views"] == [] and record["views_wait_for"] == ["users", "user_conversations"]
    assert tables_in(database) == {"services": "BASE TABLE"}

    users = cli(*base, "--resource", "user_conversations", cwd=isolated_dlt, env=env)
    assert users.returncode == 0, users.stderr
    record = one_json_object(users.stdout)
    truth = emulator.all_user_conversations()
    assert record["rows_written"] == {
        "users": len(truth_users(emulator)),
        "user_conversations": len(truth),
    }
    assert record["services_scanned"] == len(emulator.services())
    assert set(record["views"]) == VIEWS and record["views_wait_for"] == []
    assert tables_in(database) == {
        "services": "BASE TABLE",
        "users": "BASE TABLE",
        "user_conversations": "BASE TABLE",
        **dict.fromkeys(VIEWS, "VIEW"),
    }
    pipeline = reading(database, isolated_dlt / "checks")
    assert_user_conversations_mirror(pipeline, truth)
    assert_users_mirror(pipeline, truth_users(emulator))

    # Both resources named: the run of both, which finds nothing to write.
    both = cli(
        *base,
        "--resource",
        "services",
        "--resource",
        "user_conversations",
        cwd=isolated_dlt,
        env=env,
    )
    record = one_json_object(both.stdout)
    assert record["loaded"] is False
    assert record["rows_written"] == {"services": 0, "users": 0, "user_conversations": 0}


def test_a_resource_run_says_the_views_wait_in_its_summary(
    emulator: Any, isolated_dlt: Path
) -> None:
    done = cli(
        "run",
        "--base-url",
        emulator.base_url,
        "--resource",
        "services",
        cwd=isolated_dlt,
        env=emulator_env(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert f"rows written   services {len(emulator.services())}\n" in done.stdout
    assert (
        "views          not refreshed: the dataset has no users, user_conversations table yet"
    ) in done.stdout


def test_an_unknown_resource_is_bad_usage(isolated_dlt: Path) -> None:
    done = cli("run", "--resource", "messages", cwd=isolated_dlt)
    assert done.returncode == 2
    assert "invalid choice: 'messages'" in done.stderr
    assert not list(isolated_dlt.glob("*.duckdb"))


def test_json_when_the_run_fails_carries_the_error_line_and_exit_code(
    emulator: Any, isolated_dlt: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = cli("run", "--base-url", closed, "--json", cwd=isolated_dlt, env=emulator_env(emulator))
    assert done.returncode == 1
    record = one_json_object(done.stdout)
    [line] = done.stderr.splitlines()
    assert record["exit_code"] == 1 and record["status"] == "failed"
    assert record["error"] == line.removeprefix("error: ")
    assert closed in record["error"]
    assert record["requests"] == 0 and record["retries"] > 0


def test_json_when_misconfigured_is_exit_2_and_loads_nothing(isolated_dlt: Path) -> None:
    env = {"TWILIO_ACCOUNT_SID": "not-a-sid", "TWILIO_AUTH_TOKEN": "x"}
    done = cli("run", "--json", cwd=isolated_dlt, env=emulator_env_free(env))
    assert done.returncode == 2, done
    record = one_json_object(done.stdout)
    assert record["exit_code"] == 2 and record["status"] == "failed"
    assert record["error"] == done.stderr.strip().removeprefix("error: ")
    assert not list(isolated_dlt.glob("*.duckdb"))


def emulator_env_free(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without Twilio credentials, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    return {**env, **extra}
