"""The README's first steps, walked as a new user walks them, checked against the emulator's truth.

In a fresh folder (the clone's `.dlt/config.toml` and `notebooks/`, the project's venv as
`.venv`) with a fresh HOME and its `~/.dlt`, the README's commands run in the order written, as
real processes: `make demo`'s command, the emulator, `run` against it, the demo again, `run`
again, the exploring one-liners on each file, `dlt.attach` on each pipeline, and the notebook on
each file. Every
command is taken from README.md (the test fails if the README no longer shows it), and every
file is compared with the truth of a twin of the emulator that fed it (same seed and size, same
public URL, so even `url` columns must match).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    reading,
    truth_users,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
VENV_BIN = Path(sys.executable).parent

DEMO = ".venv/bin/twilio-conversations demo"
EMULATOR = ".venv/bin/twilio-emulator --port 8080 &"
RUN = (
    "TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001 TWILIO_AUTH_TOKEN=emulator-demo-auth-"
    "token .venv/bin/twilio-conversations run --base-url http://127.0.0.1:8080"
)
QUERY_DEMO = (
    """.venv/bin/python -c "import duckdb; duckdb.connect('twilio_conversations_demo.duckdb', """
    """read_only=True).sql('from twilio.user_conversation_summary limit 5').show()\""""
)
# dlt's way: `dlt.attach` by pipeline name, from any folder (README, "Exploring the data").
ATTACH_ROWS = (
    """.venv/bin/python -c "import dlt; print(len(dlt.attach('twilio_conversations_demo')"""
    """.dataset().user_conversations.fetchall()))\""""
)
ATTACH_DF = (
    """.venv/bin/python -c "import dlt; print(dlt.attach('twilio_conversations_demo')"""
    """.dataset().user_conversations.df().head())\""""
)


def in_readme(command: str) -> str:
    assert command in README, f"README no longer shows: {command}"
    return command


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone's working tree as far as the README's commands need it, and a fresh HOME."""
    project = tmp_path / "clone"
    (project / ".dlt").mkdir(parents=True)
    shutil.copy(ROOT / ".dlt" / "config.toml", project / ".dlt" / "config.toml")
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    (project / ".venv").symlink_to(VENV_BIN.parent)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # A new user's dlt dir, ~/.dlt: dlt itself would use the machine-wide /var/dlt under root.
    monkeypatch.setenv("DLT_DATA_DIR", str(home / ".dlt"))
    return project


def shell(command: str, cwd: Path, port: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command.replace("8080", str(port))],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def twin(start_emulator: Any, base_url: str, users: int) -> Any:
    """The emulator the README's command started, rebuilt in this process for its truth."""
    from twilio_emulator import DataSpec, EmulatorConfig

    return start_emulator(
        EmulatorConfig(data=DataSpec(seed=7, services=3, users=users), public_url=base_url)
    )


def demo_url(stdout: str) -> str:
    match = re.search(r"emulator serving demo data at (http://\S+)", stdout)
    assert match, stdout
    return match.group(1)


def reader(path: Path) -> Any:
    return reading(path, path.parent.parent / "checks")


def assert_mirror(path: Path, emu: Any) -> None:
    pipeline = reader(path)
    assert_user_conversations_mirror(pipeline, emu.all_user_conversations())
    assert_users_mirror(pipeline, truth_users(emu))
    assert_services_mirror(pipeline, emu.services())


def test_readme_first_steps_in_one_folder(folder: Path, start_emulator: Any) -> None:
    assert "\t$(BIN)/twilio-conversations demo\n" in MAKEFILE  # what `make demo` runs
    in_readme("make demo    #")
    for command in (EMULATOR, RUN, QUERY_DEMO, ATTACH_ROWS, ATTACH_DF):
        in_readme(command)
    port = free_port()
    demo_file = folder / "twilio_conversations_demo.duckdb"
    real_file = folder / "twilio_conversations.duckdb"

    shown = shell(DEMO, folder, port)
    assert_mirror(demo_file, twin(start_emulator, demo_url(shown.stdout), users=60))
    assert not real_file.exists()

    served = subprocess.Popen(
        ["bash", "-c", "exec " + EMULATOR.removesuffix(" &").replace("8080", str(port))],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert served.stdout is not None
        assert "listening on" in served.stdout.readline()
        account = twin(start_emulator, f"http://127.0.0.1:{port}", users=40)

        first = shell(in_readme(RUN), folder, port)
        assert "rows written" in first.stdout
        assert_mirror(real_file, account)

        again = shell(DEMO, folder, port)  # the demo again, in the same folder
        assert_mirror(demo_file, twin(start_emulator, demo_url(again.stdout), users=60))
        assert_mirror(real_file, account)

        second = shell(RUN, folder, port)
        assert "rows written   services 0 · users 0 · user_conversations 0" in second.stdout
        assert_mirror(real_file, account)
    finally:
        served.terminate()
        served.wait(timeout=30)

    # Exploring: the one-liner on each file, then the notebook on each file.
    for file in (demo_file, real_file):
        command = QUERY_DEMO.replace("twilio_conversations_demo.duckdb", file.name)
        printed = shell(command, folder, port).stdout
        assert "chat_service_sid" in printed and "5 rows" in printed, printed
    demo = twin(start_emulator, demo_url(again.stdout), users=60)
    for name, emu in (("twilio_conversations_demo", demo), ("twilio_conversations", account)):
        # From another folder: each pipeline's state knows its own DuckDB file.
        rows, frame = (
            shell(
                command.replace("twilio_conversations_demo", name).replace(".venv", "../.venv"),
                folder / "notebooks",
                port,
            )
            for command in (ATTACH_ROWS, ATTACH_DF)
        )
        assert rows.stdout.split() == [str(len(emu.all_user_conversations()))], name
        assert "[5 rows x" in frame.stdout, frame.stdout
    execute_notebook(folder, None)  # finds the real file first
    execute_notebook(folder, demo_file)
    assert_mirror(real_file, account)  # the readers changed nothing, and hold nothing
    assert_mirror(demo_file, demo)


def execute_notebook(folder: Path, database: Path | None) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = folder / "notebooks" / "explore_user_conversations.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    saved = os.environ.pop("TWILIO_CONVERSATIONS_DUCKDB", None)
    if database is not None:
        os.environ["TWILIO_CONVERSATIONS_DUCKDB"] = str(database)
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        client.execute()
    finally:
        os.environ.pop("TWILIO_CONVERSATIONS_DUCKDB", None)
        if saved is not None:
            os.environ["TWILIO_CONVERSATIONS_DUCKDB"] = saved
    expected = database or folder / "twilio_conversations.duckdb"
    printed = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert str(expected.resolve()) in printed, printed[:500]


def test_the_install_without_make_is_what_make_installs() -> None:
    """The README's install without `make` is the Makefile's, which every `make demo` and
    `make test` runs: the same pins, the same two distributions."""
    assert "\n$(VENV)/.installed:" in MAKEFILE
    recipe = MAKEFILE.split("\n$(VENV)/.installed:", 1)[1].splitlines()[1].strip()
    assert recipe.startswith("$(PIP_INSTALL) "), recipe
    pip = re.search(r"^PIP_INSTALL := (.*)$", MAKEFILE, re.M)
    assert pip, "PIP_INSTALL"
    made = (pip.group(1) + " " + recipe.removeprefix("$(PIP_INSTALL) ")).split()
    made = [word for word in made if word not in ("--quiet", "--disable-pip-version-check")]
    assert made[:4] == ["$(BIN)/python", "-m", "pip", "install"], made
    readme = in_readme(f".venv/bin/pip install {' '.join(made[4:])}\n")
    assert "python3.11 -m venv .venv\n" + readme in README
