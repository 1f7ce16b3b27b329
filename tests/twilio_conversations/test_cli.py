"""The console script as a scheduler runs it: a real subprocess, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

CLI = [sys.executable, "-m", "twilio_conversations.cli"]


def cli(emu: Any, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=environment(emu, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def environment(emu: Any, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        **env,
    }


def table_count(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute(f"select count(*) from twilio.{table}").fetchall()[0][0])


def test_run_loads_and_prints_summary(emulator: Any, tmp_path: Path) -> None:
    result = cli(emulator, "run", "--progress", "log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = len(emulator.all_user_conversations())
    assert f"user_conversations {rows:,}" in result.stdout
    assert "requests" in result.stdout and "retries" in result.stdout
    assert table_count(tmp_path / "twilio_conversations.duckdb", "user_conversations") == rows
    # The token is never printed, nor written to the pipeline's files.
    assert emulator.auth_token not in result.stdout + result.stderr


def test_duckdb_file_overridable_the_dlt_way(emulator: Any, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.duckdb"
    result = cli(emulator, "run", cwd=tmp_path, DESTINATION__DUCKDB__CREDENTIALS=str(target))
    assert result.returncode == 0, result.stderr
    assert table_count(target, "services") == len(emulator.services())
    assert not (tmp_path / "twilio_conversations.duckdb").exists()


def test_bad_credentials_fail_fast_with_one_line_and_load_nothing(
    emulator: Any, tmp_path: Path
) -> None:
    emulator.stats.reset()
    result = cli(emulator, "run", cwd=tmp_path, TWILIO_AUTH_TOKEN="wrong-token")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: authentication failed"), result.stderr
    assert "wrong-token" not in result.stderr + result.stdout
    assert emulator.stats.snapshot().total == 1, "a 401 must not be retried"
    db = tmp_path / "twilio_conversations.duckdb"
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            tables = con.execute(
                "select table_name from information_schema.tables where table_schema='twilio'"
            ).fetchall()
        assert ("user_conversations",) not in tables


def test_unknown_service_fails_naming_it(emulator: Any, tmp_path: Path) -> None:
    missing = "IS" + "f" * 32
    result = cli(emulator, "run", "--service-sid", missing, cwd=tmp_path)
    assert result.returncode == 2, "bad configuration (docs/scheduling.md, Exit codes)"
    assert result.stderr.strip().splitlines() == [
        f"error: service {missing} not found: not listed by {emulator.base_url}/v1/Services "
        "for these credentials"
    ]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--service-sid", "IS123"], {}, "not a Conversation Service SID"),
        (["--user-sid", "US" + "X" * 32], {}, "looks like a SID"),
        (["--page-size", "0"], {}, "page_size 0"),
        (["--page-size", "5000"], {}, "page_size 5000"),
        (["--start-date", "last tuesday"], {}, "start_date"),
        (
            [],
            {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "conversations.twilio.com"},
            "absolute URL",
        ),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "http://example.com"}, "plain http"),
        ([], {"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}, "credentials missing"),
    ],
)
def test_bad_input_is_rejected_before_any_request(
    emulator: Any, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    emulator.stats.reset()
    result = cli(emulator, "run", *args, cwd=tmp_path, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert emulator.stats.snapshot().total == 0


def test_help_documents_every_flag(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "run", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0
    for flag in (
        "--destination",
        "--dataset",
        "--full-refresh",
        "--progress",
        "--service-sid",
        "--user-sid",
        "--page-size",
        "--max-workers",
        "--start-date",
        "--end-date",
    ):
        assert flag in out.stdout


def test_example_pipeline_script_runs(emulator: Any, tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "pipelines" / "twilio_conversations_pipeline.py"
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={
            **os.environ,
            "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emulator.base_url,
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = len(emulator.all_user_conversations())
    assert table_count(tmp_path / "twilio_conversations.duckdb", "user_conversations") == rows


def test_the_executable_freezes_the_heap_but_main_leaves_the_callers_collector_alone(
    tmp_path: Path,
) -> None:
    import gc
    from importlib.metadata import entry_points

    from twilio_conversations import cli as cli_module

    (script,) = entry_points(group="console_scripts", name="twilio-conversations")
    assert script.value == "twilio_conversations.cli:console_main"
    frozen = gc.get_freeze_count()
    assert cli_module.main(["run", "--page-size", "0", "--progress", "none"]) == 2
    assert gc.get_freeze_count() == frozen


# A run as a production install makes it: pandas (a dev and notebooks extra) cannot be found,
# since DuckDB imports it when dlt binds a setting, and pandas imports pyarrow.
_RUN_REPORTING_PYARROW = """
import sys

class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPandas())
from twilio_conversations import cli
code = cli.main(["run", "--progress", "none"])
print("pyarrow loaded:", "pyarrow" in sys.modules)
sys.exit(code)
"""


def test_a_run_with_nothing_to_write_never_loads_pyarrow(emulator: Any, tmp_path: Path) -> None:
    def pyarrow_loaded() -> bool:
        result = subprocess.run(
            [sys.executable, "-c", _RUN_REPORTING_PYARROW],
            cwd=tmp_path,
            env=environment(emulator),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return "pyarrow loaded: True" in result.stdout

    assert pyarrow_loaded()  # the first load writes arrow tables
    assert not pyarrow_loaded()  # nothing changed: nothing to build
    row = emulator.all_user_conversations()[0]
    emulator.store.leave(row["chat_service_sid"], row["user_sid"], row["conversation_sid"])
    assert pyarrow_loaded()  # one user changed: their rows are written again


def test_version_prints_the_installed_version_and_dlts_and_exits_0(tmp_path: Path) -> None:
    import tomllib
    from importlib.metadata import version

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    out = subprocess.run(
        [*CLI, "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.returncode == 0, out.stderr
    expected = f"twilio-conversations {pyproject['project']['version']} (dlt {version('dlt')})"
    assert out.stdout == expected + "\n"
    assert out.stderr == ""


@pytest.mark.parametrize(
    ("files", "env", "wanted"),
    [
        (
            {"config.toml": "[sources.twilio_conversations]\npage_size = 50\nmax_workers = 1x\n"},
            {},
            ["could not read ", ".dlt/config.toml", "at line 3"],
        ),
        (
            {"secrets.toml": '[sources.twilio_conversations.credentials]\nauth_token = "x\n'},
            {},
            ["could not read ", ".dlt/secrets.toml", "at line 2"],
        ),
        (
            {"config.toml": '[sources.twilio_conversations]\npage_size = "many"\n'},
            {},
            ["`page_size`"],
        ),
        (
            {},
            {"DESTINATION__POSTGRES__CREDENTIALS": "postgresql://loader@localhost:5432/dlt"},
            ["`credentials`", "missing field(s): `password`"],
        ),
        (
            {},
            {"DESTINATION__POSTGRES__CREDENTIALS": "postgresql//loader:s3cret-pw@host/dlt"},
            ["`PostgresCredentials` cannot parse", "postgresql://username:password@host"],
        ),
    ],
    ids=["config-toml-syntax", "secrets-toml-syntax", "not-a-number", "no-password", "bad-url"],
)
def test_a_configuration_error_says_its_cause_in_one_line_and_exits_2(
    emulator: Any, tmp_path: Path, files: dict[str, str], env: dict[str, str], wanted: list[str]
) -> None:
    """The specific cause (file and line, field) is on the one `error:` line, not on dlt's next
    lines; a value that may be a secret is never shown."""
    (tmp_path / ".dlt").mkdir()
    for name, text in files.items():
        (tmp_path / ".dlt" / name).write_text(text)
    destination = ["--destination", "postgres"] if env else []
    result = cli(emulator, "run", "--progress", "none", *destination, cwd=tmp_path, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in wanted:
        assert part in lines[0], lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_the_summary_says_what_happened_nothing_deletions_and_history_turned_on(
    emulator: Any, tmp_path: Path
) -> None:
    """An unchanged re-run says it had nothing to write; a removed user's deletion markers are
    rows deleted, not rows written; turning history on records the current rows, it changes
    nothing. Expected figures from the emulator's truth."""
    import requests

    first = cli(emulator, "run", "--progress", "none", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("twilio_conversations: loaded into duckdb dataset twilio")
    again = cli(emulator, "run", "--progress", "none", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        "twilio_conversations: nothing to write, duckdb dataset twilio is up to date in "
    ), again.stdout

    service = emulator.services()[0]["sid"]
    victim = next(
        u for u in emulator.users(service) if emulator.user_conversations(service, u["sid"])
    )
    removed = requests.delete(
        f"{emulator.base_url}/v1/Services/{service}/Users/{victim['sid']}",
        auth=(emulator.account_sid, emulator.auth_token),
        timeout=10,
    )
    assert removed.status_code == 204
    deleted = cli(emulator, "run", "--progress", "none", cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    lines = deleted.stdout.splitlines()
    assert "  rows written   services 0 · users 0 · user_conversations 0" in lines, lines
    assert "  rows deleted   users 1 · user_conversations of 1 users" in lines, lines

    history = cli(emulator, "run", "--progress", "none", "--history", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    with_rows = sum(
        1
        for svc in emulator.services()
        for user in emulator.users(svc["sid"])
        if emulator.user_conversations(svc["sid"], user["sid"])
    )
    lines = history.stdout.splitlines()
    assert any(" 0 changed · " in line for line in lines if line.startswith("  users ")), lines
    assert (
        f"  history        turned on: the current rows of {with_rows:,} unchanged users "
        "recorded as their first versions"
    ) in lines, lines
