"""`demo` and `run` in one folder, in any order, never touch each other's data or state.

The README's first steps are `make demo` and then `run` in the same folder; this walks them as
real processes (demo, run, demo, run), with a real pipeline configured in `.dlt/config.toml`,
and checks each file against the truth of the emulator that fed it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import dlt
import pytest
from cli_process import cli, emulator_env
from mirror import assert_user_conversations_mirror, loaded_rows

DEMO_FILE = "twilio_conversations_demo.duckdb"
REAL_FILE = "twilio_conversations.duckdb"


def demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("demo", "--progress", "none", cwd=cwd, env={**os.environ, **env})


def run(emu: Any, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("run", "--progress", "none", cwd=cwd, env=emulator_env(emu, **env))


def keys(pipeline: Any) -> set[tuple[str, ...]]:
    rows = loaded_rows(
        pipeline, "user_conversations", ["chat_service_sid", "user_sid", "conversation_sid"]
    )
    found = {(r["chat_service_sid"], r["user_sid"], r["conversation_sid"]) for r in rows}
    assert len(found) == len(rows), "duplicate keys"
    return found


@pytest.fixture
def demo_truth(start_emulator: Any) -> set[tuple[str, ...]]:
    """The demo's data: the emulator the `demo` command starts (seed 7, 3 services x 60)."""
    emu = start_emulator(seed=7, services=3, users=60)
    return {
        (r["chat_service_sid"], r["user_sid"], r["conversation_sid"])
        for r in emu.all_user_conversations()
    }


@pytest.mark.parametrize("configured_file", [False, True], ids=["default-file", "env-file"])
def test_demo_run_demo_run_in_one_folder(
    start_emulator: Any,
    demo_truth: set[tuple[str, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    configured_file: bool,
) -> None:
    account = start_emulator(seed=21, services=2, users=10, max_conversations=60)
    scanned = account.services()[1]["sid"]
    folder = tmp_path / "project"
    (folder / ".dlt").mkdir(parents=True)
    # The real account's settings: one service, history on. The demo must apply none of them.
    (folder / ".dlt" / "config.toml").write_text(
        "[sources.twilio_conversations]\n"
        f'base_url = "{account.base_url}"\n'
        f'service_sids = ["{scanned}"]\n'
        "history = true\n"
    )
    env = {"DESTINATION__DUCKDB__CREDENTIALS": str(folder / REAL_FILE)} if configured_file else {}
    truth = [r for r in account.all_user_conversations() if r["chat_service_sid"] == scanned]

    def check_real() -> None:
        real = dlt.pipeline(
            "check_real",
            destination=dlt.destinations.duckdb(str(folder / REAL_FILE)),
            dataset_name="twilio",
            pipelines_dir=str(tmp_path / "check"),
        )
        assert_user_conversations_mirror(real, truth)

    for step in range(2):
        shown = demo(folder, **env)
        assert shown.returncode == 0, shown.stderr
        assert f"user_conversations {len(demo_truth):,}" in shown.stdout
        loaded = run(account, folder, **env)
        assert loaded.returncode == 0, loaded.stderr
        check_real()
        # The second run finds nothing changed: the demo in between left its state alone.
        if step == 1:
            assert "rows written   services 0 · users 0 · user_conversations 0" in loaded.stdout

    # dlt's convention: each pipeline's DuckDB file is <pipeline name>.duckdb, so `dlt.attach`
    # in the folder finds the data each one wrote.
    monkeypatch.chdir(folder)
    demo_pipeline = dlt.attach("twilio_conversations_demo")
    assert keys(demo_pipeline) == demo_truth
    if not configured_file:
        real_pipeline = dlt.attach("twilio_conversations")
        assert_user_conversations_mirror(real_pipeline, truth)
        assert "user_conversations_history" in real_pipeline.default_schema.tables
    assert "user_conversations_history" not in demo_pipeline.default_schema.tables
    assert sorted(p.name for p in folder.glob("*.duckdb")) == sorted({DEMO_FILE, REAL_FILE})
