"""The exploration notebook runs top to bottom on freshly loaded data and draws its charts.

The notebook is executed headless with nbclient (matplotlib's inline backend renders PNGs without a
display). It finds the database the way it does for an analyst: from the notebooks folder, the
project root's `twilio_conversations.duckdb` one level up.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import dlt
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_user_conversations.ipynb"
HISTORY_MARKER = "No user_conversations_history table"


def execute(notebook: Path, cwd: Path) -> Any:
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def figures(nb: Any) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs(nb))


def stdout(nb: Any) -> str:
    return "".join(out.get("text", "") for out in outputs(nb) if out.get("output_type") == "stream")


def stderr(nb: Any) -> list[str]:
    return [
        out["text"]
        for out in outputs(nb)
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]


def project_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A project root with the notebook in notebooks/; returns (notebook, database path)."""
    notebooks = tmp_path / "project" / "notebooks"
    notebooks.mkdir(parents=True)
    notebook = notebooks / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    return notebook, tmp_path / "project" / "twilio_conversations.duckdb"


def test_notebook_runs_on_demo_data_and_draws(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook, database = project_layout(tmp_path)
    emulator = start_emulator(seed=7)  # the demo's data set
    run_pipeline(emulator, destination=dlt.destinations.duckdb(str(database)))
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)

    nb = execute(notebook, cwd=notebook.parent)

    assert f"database: {database}" in stdout(nb)  # found one level up from notebooks/
    assert figures(nb) >= 5, f"only {figures(nb)} figures"
    assert HISTORY_MARKER in stdout(nb) and "run --history" in stdout(nb)
    assert not stderr(nb), stderr(nb)


def test_notebook_charts_history(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twilio_conversations import twilio_conversations

    if "history" not in inspect.signature(twilio_conversations).parameters:
        pytest.skip("this version of the source has no history mode")
    database = tmp_path / "elsewhere" / "history.duckdb"
    database.parent.mkdir()
    emulator = start_emulator(seed=5, services=1, users=8, max_conversations=30)
    destination = dlt.destinations.duckdb(str(database))
    run_pipeline(emulator, destination=destination, history=True)
    for row in emulator.all_user_conversations()[::4]:  # unread counts grow for many members
        emulator.store.post_message(row["chat_service_sid"], row["conversation_sid"])
    run_pipeline(emulator, destination=destination, history=True)
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(database))

    nb = execute(NOTEBOOK, cwd=tmp_path)

    assert f"database: {database}" in stdout(nb)
    assert HISTORY_MARKER not in stdout(nb)
    history_cell = next(c for c in nb.cells if "HAS_HISTORY:" in c.source)
    assert any("image/png" in out.get("data", {}) for out in history_cell.outputs)


def test_missing_database_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(tmp_path / "missing.duckdb"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    settings = next(c for c in nb.cells if c.cell_type == "code")
    namespace: dict[str, Any] = {}
    with pytest.raises(FileNotFoundError, match="TWILIO_CONVERSATIONS_DUCKDB"):
        exec(compile(settings.source, "settings-cell", "exec"), namespace)


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"outputs committed in cell {cell.get('id')}"
            assert cell.execution_count is None, f"execution count in cell {cell.get('id')}"
