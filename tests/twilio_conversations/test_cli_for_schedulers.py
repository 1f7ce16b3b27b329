"""`run --json`, `run --resource` and `config`, as a scheduler or its operator runs them: real
processes against the emulator, a fresh folder each, checked against the emulator's truth.

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


def test_config_names_each_values_origin_and_masks_the_secrets(isolated_dlt: Path) -> None:
    (isolated_dlt / ".dlt").mkdir(exist_ok=True)
    (isolated_dlt / ".dlt" / "config.toml").write_text(
        "[sources.twilio_conversations]\npage_size = 50\nmax_workers = 4\n"
    )
    env = emulator_env_free(
        {
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": "the-auth-token-itself",
            "SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS": "12",
            "DESTINATION__POSTGRES__CREDENTIALS": "postgresql://loader:pg-secret@db:5432/dwh",
        }
    )
    done = cli("config", "--destination", "postgres", cwd=isolated_dlt, env=env)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in done.stdout.splitlines()[1:]}
    assert rows["credentials.account_sid"] == ["AC" + "1" * 32, "env TWILIO_ACCOUNT_SID"]
    assert rows["credentials.auth_token"] == ["***", "env TWILIO_AUTH_TOKEN"]
    assert rows["page_size"] == ["50", ".dlt/config.toml [sources.twilio_conversations]"]
    assert rows["max_workers"] == ["12", "env SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS"]
    assert rows["destination.postgres.credentials"] == [
        "postgresql://loader:***@db:5432/dwh",
        "env DESTINATION__POSTGRES__CREDENTIALS",
    ]
    assert "the-auth-token-itself" not in done.stdout + done.stderr
    assert "pg-secret" not in done.stdout + done.stderr


def test_check_reaches_what_a_run_reaches_and_writes_nothing(
    emulator: Any, isolated_dlt: Path
) -> None:
    before = sorted(p.relative_to(isolated_dlt) for p in isolated_dlt.rglob("*"))
    emulator.stats.reset()
    done = cli(
        "check", "--base-url", emulator.base_url, cwd=isolated_dlt, env=emulator_env(emulator)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    services = emulator.services()
    assert f"ok       services     {len(services)} visible" in done.stdout
    for service in services:
        assert service["sid"] in done.stdout
    requests = emulator.stats.snapshot().total
    assert requests <= 1 + len(services), requests  # the services page, a users page each
    assert done.stdout.splitlines()[-1].startswith("check: all ")
    assert f"{requests} API request(s)" in done.stdout.splitlines()[-1]
    assert sorted(p.relative_to(isolated_dlt) for p in isolated_dlt.rglob("*")) == before


def test_check_fails_as_the_run_fails_on_rejected_credentials(
    emulator: Any, isolated_dlt: Path
) -> None:
    env = emulator_env(emulator, TWILIO_AUTH_TOKEN="not-the-token")
    check = cli("check", "--base-url", emulator.base_url, cwd=isolated_dlt, env=env)
    run = cli("run", "--base-url", emulator.base_url, cwd=isolated_dlt, env=env)
    assert (check.returncode, run.returncode) == (1, 1)
    assert check.stderr.splitlines() == run.stderr.splitlines()
    [line] = check.stderr.splitlines()
    assert line.startswith("error: authentication failed")
    assert "FAILED   credentials" in check.stdout
    assert "not-the-token" not in check.stdout + check.stderr


def test_requests_are_counted_per_stream_as_the_server_counted_them(
    emulator: Any, isolated_dlt: Path
) -> None:
    emulator.stats.reset()
    done = cli(
        "run",
        "--base-url",
        emulator.base_url,
        "--json",
        "--resource",
        "services",
        "--resource",
        "user_conversations",
        "--resource",
        "conversations",
        cwd=isolated_dlt,
        env=emulator_env(emulator),
    )
    assert done.returncode == 0, done.stderr
    record = one_json_object(done.stdout)
    served = {route: n for route, n in emulator.stats.snapshot().by_route.items() if n}
    assert record["requests_by_stream"] == served
    assert set(served) == {"services", "users", "user_conversations", "conversations"}
    assert sum(served.values()) == record["requests"]
