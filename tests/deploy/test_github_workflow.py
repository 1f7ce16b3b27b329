"""The GitHub Actions recipe: valid YAML of the expected shape, and its load step runs for real.

The load step's shell script is run the way a runner would (`bash -e`), with the workflow's `env`
block resolved from stand-in secrets: the emulator's API key and a throwaway PostgreSQL server.
A second run from an empty dlt data dir (a fresh runner) must restore the state from the
destination and write nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dlt
import pytest
from mirror import assert_user_conversations_mirror

yaml = pytest.importorskip("yaml", reason="PyYAML not installed")

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "twilio_conversations.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict)
    return on


def load_step(workflow: dict[Any, Any]) -> dict[str, Any]:
    steps = workflow["jobs"]["run_pipeline"]["steps"]
    runs = [s for s in steps if "twilio-conversations run" in s.get("run", "")]
    assert len(runs) == 1
    step: dict[str, Any] = runs[0]
    return step


def test_workflow_shape(workflow: dict[Any, Any]) -> None:
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    (schedule,) = on["schedule"]
    croniter = pytest.importorskip("croniter")
    assert croniter.croniter.is_valid(schedule["cron"])
    assert workflow["concurrency"]["cancel-in-progress"] is False

    job = workflow["jobs"]["run_pipeline"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    (setup,) = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert str(setup["with"]["python-version"]) == "3.11"
    install = " ".join(s.get("run", "") for s in steps if "pip install" in s.get("run", ""))
    assert "-c constraints.txt" in install
    assert " -e " not in install, "the package is installed, not the checkout"

    command = load_step(workflow)["run"]
    assert command.startswith("twilio-conversations run --progress log")


def test_secrets_come_from_the_secret_store(workflow: dict[Any, Any]) -> None:
    env = workflow["env"]
    for name in ("TWILIO_API_KEY", "TWILIO_API_SECRET", "DESTINATION__POSTGRES__CREDENTIALS"):
        assert env[name] == "${{ secrets." + name + " }}"
    # Every secret reference is in an env block, never inline in a command.
    text = WORKFLOW.read_text()
    for step in workflow["jobs"]["run_pipeline"]["steps"]:
        assert "secrets." not in step.get("run", "")
    assert not re.search(r"(SK|AC)[0-9a-f]{32}", text), "a literal SID in the workflow"
    assert "postgresql://" not in "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )


def resolve(value: str, context: dict[str, str]) -> str:
    """Substitute the `${{ ... }}` expressions this workflow uses, the way Actions would."""

    def one(match: re.Match[str]) -> str:
        expression = match[1]
        if expression in context:
            return context[expression]
        if m := re.fullmatch(r"secrets\.(\w+)", expression):
            return context.get(f"secrets.{m[1]}", "")  # unset secrets are empty strings
        if m := re.fullmatch(r"vars\.(\w+) \|\| '(.*)'", expression):
            return context.get(f"vars.{m[1]}") or m[2]
        if expression == "inputs.full_refresh && '--full-refresh' || ''":
            return "--full-refresh" if context.get("inputs.full_refresh") == "true" else ""
        raise AssertionError(f"the test does not know the expression {expression!r}")

    return EXPRESSION.sub(one, value)


def run_load_step(
    workflow: dict[Any, Any], context: dict[str, str], data_dir: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update({k: resolve(str(v), context) for k, v in workflow["env"].items()})
    env["DLT_DATA_DIR"] = str(data_dir)
    # setup-python puts the interpreter whose pip installed the CLI first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["SOURCES__TWILIO_CONVERSATIONS__BASE_URL"] = context["base_url"]  # the emulator
    script = resolve(load_step(workflow)["run"], context)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def stand_in_secrets(start_emulator: Any, postgres_server: str) -> tuple[Any, dict[str, str]]:
    """The emulator (with an API key) and a fresh PostgreSQL database as the workflow's secrets."""
    psycopg2 = pytest.importorskip("psycopg2")
    from twilio_emulator import DEMO_API_KEY_SECRET, DEMO_API_KEY_SID, DataSpec, EmulatorConfig

    emu = start_emulator(
        EmulatorConfig(
            api_key_sid=DEMO_API_KEY_SID,
            api_key_secret=DEMO_API_KEY_SECRET,
            data=DataSpec(seed=21, services=2, users=6, max_conversations=60),
        )
    )
    database = f"gha_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server)
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"create database {database}")
    finally:
        admin.close()
    context = {
        "secrets.TWILIO_API_KEY": emu.api_key_sid,
        "secrets.TWILIO_API_SECRET": emu.api_key_secret,
        "secrets.DESTINATION__POSTGRES__CREDENTIALS": postgres_server.rsplit("/", 1)[0]
        + f"/{database}",
        "base_url": emu.base_url,
    }
    return emu, context


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The runner starts in the checkout, so the repository's .dlt/config.toml applies."""
    path = tmp_path / "checkout"
    (path / ".dlt").mkdir(parents=True)
    shutil.copy(REPO / ".dlt" / "config.toml", path / ".dlt" / "config.toml")
    return path


@pytest.mark.postgres
def test_load_step_runs_against_emulator_and_postgres(
    workflow: dict[Any, Any],
    stand_in_secrets: tuple[Any, dict[str, str]],
    checkout: Path,
    tmp_path: Path,
) -> None:
    import psycopg2

    emu, context = stand_in_secrets
    credentials = context["secrets.DESTINATION__POSTGRES__CREDENTIALS"]
    first = run_load_step(workflow, context, tmp_path / "runner-1", checkout)
    assert first.returncode == 0, first.stderr
    assert "loaded into postgres dataset twilio" in first.stdout

    truth = emu.all_user_conversations()
    with psycopg2.connect(credentials) as con, con.cursor() as cursor:
        cursor.execute("select count(*) from twilio.user_conversations")
        assert cursor.fetchone() == (len(truth),)
    # Field by field, whichever file format reached PostgreSQL (csv, or parquet over ADBC).
    reader = dlt.pipeline(
        "workflow_check",
        destination=dlt.destinations.postgres(credentials),
        dataset_name="twilio",
        pipelines_dir=str(tmp_path / "reader"),
    )
    assert assert_user_conversations_mirror(reader, truth) == len(truth)

    # The next scheduled run is a fresh runner: no local state, restored from PostgreSQL.
    second = run_load_step(workflow, context, tmp_path / "runner-2", checkout)
    assert second.returncode == 0, second.stderr
    assert "services 0 · users 0 · user_conversations 0" in second.stdout

    # Rejected credentials fail the job with one clear line.
    failed = run_load_step(
        workflow, {**context, "secrets.TWILIO_API_SECRET": "wrong"}, tmp_path / "r-3", checkout
    )
    assert failed.returncode == 1
    assert [line for line in failed.stderr.splitlines() if line.startswith("error:")] == [
        line for line in failed.stderr.splitlines() if "authentication failed" in line
    ]


@pytest.mark.postgres
def test_manual_full_refresh_reloads_everything(
    workflow: dict[Any, Any],
    stand_in_secrets: tuple[Any, dict[str, str]],
    checkout: Path,
    tmp_path: Path,
) -> None:
    emu, context = stand_in_secrets
    first = run_load_step(workflow, context, tmp_path / "runner-1", checkout)
    assert first.returncode == 0, first.stderr
    refreshed = run_load_step(
        workflow, {**context, "inputs.full_refresh": "true"}, tmp_path / "runner-2", checkout
    )
    assert refreshed.returncode == 0, refreshed.stderr
    assert f"user_conversations {len(emu.all_user_conversations()):,}" in refreshed.stdout
