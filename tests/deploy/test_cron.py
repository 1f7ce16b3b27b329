"""The cron recipe runs for real: its job line, through bash, against the emulator.

The crontab's variables (TC_HOME, TC_ENV_FILE, TC_LOG) point into the test's directory; TC_HOME
holds a `.venv` link to the virtualenv running the tests, so the line runs the installed CLI.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]
CRONTAB = REPO / "deploy" / "cron" / "twilio-conversations.cron"
ENV_EXAMPLE = REPO / "deploy" / "cron" / "twilio-conversations.env.example"
VARIABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")

pytestmark = pytest.mark.skipif(
    shutil.which("flock") is None or shutil.which("timeout") is None,
    reason="flock/timeout (util-linux, coreutils) not installed",
)


def parse_crontab(text: str) -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """Variables and (schedule fields, command) pairs, the way cron reads a user crontab."""
    variables: dict[str, str] = {}
    jobs: list[tuple[list[str], str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := VARIABLE.match(line):
            variables[match[1]] = match[2]
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a job line: {line!r}"
        jobs.append((fields[:5], fields[5]))
    return variables, jobs


def as_cron_runs_it(command: str) -> str:
    """Cron turns `\\%` into `%` (and a bare `%` into a newline, which the recipe has none of)."""
    assert not re.search(r"(?<!\\)%", command), "a bare % in a cron command becomes a newline"
    return command.replace("\\%", "%")


@pytest.fixture
def job() -> tuple[dict[str, str], list[str], str]:
    variables, jobs = parse_crontab(CRONTAB.read_text())
    assert len(jobs) == 1
    schedule, command = jobs[0]
    return variables, schedule, as_cron_runs_it(command)


def test_crontab_parses_and_schedule_is_valid(job: tuple[dict[str, str], list[str], str]) -> None:
    variables, schedule, command = job
    croniter = pytest.importorskip("croniter")
    assert croniter.croniter.is_valid(" ".join(schedule))
    assert variables["SHELL"] == "/bin/bash"
    assert {"TC_HOME", "TC_ENV_FILE", "TC_LOG"} <= variables.keys()
    assert "flock -n" in command and "twilio-conversations run --progress log" in command
    job_lines = [line for line in CRONTAB.read_text().splitlines() if line.startswith("*/")]
    assert job_lines[0] in (REPO / "docs" / "scheduling.md").read_text(), "docs show another line"
    env_keys = {
        m[1] for line in ENV_EXAMPLE.read_text().splitlines() if (m := VARIABLE.match(line))
    }
    assert {"TWILIO_API_KEY", "TWILIO_API_SECRET"} <= env_keys


class CronHome:
    """TC_HOME, the env file and the log of one test, and a way to run the job line."""

    def __init__(self, root: Path, variables: dict[str, str], command: str) -> None:
        self.home = root / "home"
        self.home.mkdir()
        (self.home / ".venv").symlink_to(sys.prefix, target_is_directory=True)
        self.env_file = root / "secrets.env"
        self.log = root / "run.log"
        self.command = command
        self.env = dict(os.environ)  # DLT_DATA_DIR of the test: state stays in tmp_path
        self.env.update(variables)
        self.env.update(
            TC_HOME=str(self.home),
            TC_ENV_FILE=str(self.env_file),
            TC_LOG=str(self.log),
            PATH=f"{variables['PATH']}:{os.environ.get('PATH', '')}",
        )

    def write_env(self, **values: str) -> None:
        self.env_file.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
        self.env_file.chmod(0o600)

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", "-c", self.command],
            env=self.env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=300,
        )

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def cron_home(tmp_path: Path, job: tuple[dict[str, str], list[str], str]) -> CronHome:
    variables, _, command = job
    return CronHome(tmp_path, variables, command)


def emulator_env(emu: Any, token: str | None = None) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": token or emu.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
    }


def test_cron_line_loads_into_duckdb_and_logs_the_exit_code(
    emulator: Any, cron_home: CronHome
) -> None:
    cron_home.write_env(**emulator_env(emulator))
    done = cron_home.run()
    log = cron_home.log_text()
    assert done.returncode == 0, log
    assert done.stdout == done.stderr == "", "everything goes to the log"
    assert "rows written" in log and "error:" not in log
    assert re.search(r"^twilio-conversations exit 0 at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", log, re.M)

    database = cron_home.home / "twilio_conversations.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        (count,) = con.execute("select count(*) from twilio.user_conversations").fetchone() or (0,)
    assert count == len(emulator.all_user_conversations())

    # The next scheduled run finds nothing new and still exits 0.
    again = cron_home.run()
    assert again.returncode == 0
    assert cron_home.log_text().count("twilio-conversations exit 0") == 2
    assert "user_conversations 0" in cron_home.log_text().split("exit 0")[1]


def test_bad_credentials_exit_1_with_one_error_line(emulator: Any, cron_home: CronHome) -> None:
    cron_home.write_env(**emulator_env(emulator, token="not-the-token"))
    done = cron_home.run()
    log = cron_home.log_text()
    assert done.returncode == 1, log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert "authentication failed" in errors[0] and "401" in errors[0]
    assert "Traceback" not in log
    assert log.rstrip().splitlines()[-1].startswith("twilio-conversations exit 1 at ")


def test_missing_credentials_exit_2(emulator: Any, cron_home: CronHome) -> None:
    cron_home.write_env(SOURCES__TWILIO_CONVERSATIONS__BASE_URL=emulator.base_url)
    done = cron_home.run()
    log = cron_home.log_text()
    assert done.returncode == 2, log
    assert [line for line in log.splitlines() if line.startswith("error:")] == [
        line for line in log.splitlines() if "credentials missing" in line
    ]


def test_overlapping_run_is_skipped_with_75(emulator: Any, cron_home: CronHome) -> None:
    cron_home.write_env(**emulator_env(emulator))
    with open(cron_home.home / ".cron.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a run still in progress holds it
        done = cron_home.run()  # would hang until its timeout if flock waited for the lock
        assert done.returncode == 75
    assert "rows written" not in cron_home.log_text()
    assert "twilio-conversations exit 75 at " in cron_home.log_text()
    # Once the lock is free, the next schedule runs normally.
    assert cron_home.run().returncode == 0
