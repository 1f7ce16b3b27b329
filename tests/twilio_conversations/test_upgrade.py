"""A pipeline made by an older release upgrades in place on its first run with this code.

Release e0d02ca kept every fingerprint in dlt's resource state. Its own code (taken from git, run
in a process of its own) loads the emulator into a DuckDB file; this code then runs in the same
folder: it moves the fingerprints into `_fingerprints` without rewriting a data row and without
duplicates, and from then on writes only what changes. Expected rows come from the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import cli_process
import dlt
import pytest
from cli_process import emulator_env
from mirror import assert_user_conversations_mirror, assert_users_mirror, truth_users
from twilio_conversations.runner import DATASET_NAME
from twilio_writes import TwilioWrites

OLD_RELEASE = "e0d02ca"  # the last release with fingerprints in dlt's state
REPO = Path(__file__).resolve().parents[2]
DATA_TABLES = ("services", "users", "user_conversations")


def old_release_code(into: Path) -> Path:
    """The package directory of OLD_RELEASE, extracted from git."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", OLD_RELEASE, "pipelines"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - a shallow copy
        pytest.fail(f"this test needs the git history with {OLD_RELEASE}: {exc}")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "pipelines"


def run_cli(emu: Any, cwd: Path, pythonpath: Path | None = None) -> None:
    extra = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    done = cli_process.cli(
        "run", "--progress", "none", "--base-url", emu.base_url,
        cwd=cwd, env=emulator_env(emu, **extra),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def reader(cwd: Path) -> dlt.Pipeline:
    """A pipeline of its own that reads the CLI's DuckDB file."""
    return dlt.pipeline(
        "reader",
        destination=dlt.destinations.duckdb(str(cwd / "twilio_conversations.duckdb")),
        dataset_name=DATASET_NAME,
        pipelines_dir=str(cwd.parent / "reader"),
    )


def query(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    with pipeline.sql_client() as client:
        return sorted(client.execute_sql(sql.format(dataset=pipeline.dataset_name)))


def cli_state() -> dict[str, Any]:
    """The local state of the CLI's pipeline (dlt's default pipelines dir)."""
    path = Path(os.environ["DLT_DATA_DIR"], "pipelines", "twilio_conversations", "state.json")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def fingerprints_in_state(state: dict[str, Any]) -> int:
    resources = state["sources"]["twilio_conversations"]["resources"]
    return sum(
        len(keys)
        for resource in resources.values()
        for keys in resource.get("fingerprints", {}).values()
    )


def test_a_pipeline_made_by_the_old_release_upgrades_in_place(
    start_emulator: Any, tmp_path: Path
) -> None:
    emu = start_emulator(seed=11, services=2, users=12, max_conversations=70)
    old = old_release_code(tmp_path / "old")
    folder = tmp_path / "work"
    folder.mkdir()
    os.chdir(folder)
    run_cli(emu, folder, pythonpath=old)
    users = sum(len(emu.users(s["sid"])) for s in emu.services())
    assert fingerprints_in_state(cli_state()) == 2 * users + len(emu.services())
    database = reader(folder)
    loads_of = "SELECT DISTINCT _dlt_load_id FROM {{dataset}}.{table}"
    old_loads = {t: query(database, loads_of.format(table=t)) for t in DATA_TABLES}
    assert len({load for loads in old_loads.values() for load in loads}) == 1

    run_cli(emu, folder)  # this code, first run
    truth = emu.all_user_conversations()
    assert_user_conversations_mirror(database, truth)  # fails on duplicate keys
    assert_users_mirror(database, truth_users(emu))
    # no data row rewritten: every row still carries the old release's load id
    assert {t: query(database, loads_of.format(table=t)) for t in DATA_TABLES} == old_loads
    moved = query(database, "SELECT resource, count(*) FROM {dataset}._fingerprints GROUP BY 1")
    assert dict(moved) == {"services": len(emu.services()), "users": users,
                           "user_conversations": users}  # fmt: skip
    assert fingerprints_in_state(cli_state()) == 0

    # and from then on, a change writes only its user's rows
    service = emu.services()[0]["sid"]
    user = next(u["sid"] for u in emu.users(service) if emu.user_conversations(service, u["sid"]))
    conversation = emu.user_conversations(service, user)[0]["conversation_sid"]
    TwilioWrites(emu).set_read_state(service, user, conversation, LastReadMessageIndex=3)
    run_cli(emu, folder)
    assert_user_conversations_mirror(database, emu.all_user_conversations())
    newest = query(database, "SELECT max(load_id) FROM {dataset}._dlt_loads")[0][0]
    written = query(
        database,
        "SELECT user_sid, count(*) FROM {dataset}.user_conversations "
        f"WHERE _dlt_load_id = '{newest}' GROUP BY 1",
    )
    assert written == [(user, len(emu.user_conversations(service, user)))]
