"""The exploration notebook runs top to bottom on freshly loaded data, draws charts whose bars are
the data's (read back from matplotlib and counted again from the emulator's truth), each stamped
with the load it shows, finds the right database file, and never stands in the way of a pipeline
run.

The notebook is executed headless with nbclient (matplotlib's inline backend renders PNGs without a
display). It finds the database the way it does for an analyst: from the notebooks folder, the
project root's `twilio_conversations.duckdb` (a real run's) or, failing that, the demo's
`twilio_conversations_demo.duckdb`, one level up. `open_notebook` keeps the kernel running after
the last cell, like a notebook left open in Jupyter, so that pipeline runs can be made meanwhile
from this test process (a different process from the kernel).

Expected values come from the emulator's truth (`emulator.all_user_conversations()`, `.users()`,
`.services()`), never from the connector's modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from mirror import assert_user_conversations_mirror

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_user_conversations.ipynb"
REAL_FILE = "twilio_conversations.duckdb"  # `twilio-conversations run`
DEMO_FILE = "twilio_conversations_demo.duckdb"  # `twilio-conversations demo` / `make demo`
HISTORY_MARKER = "No user_conversations_history table"
WAITING = "waiting for it to finish"  # what `q` prints, once, while a run writes the file


class Client(nbclient.NotebookClient):
    """A NotebookClient that also hands every printed text to `on_stream` as it arrives."""

    on_stream: Callable[[str], None] | None = None

    def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
        if msg["msg_type"] == "stream" and self.on_stream is not None:
            self.on_stream(msg["content"]["text"])
        return super().output(outs, msg, display_id, cell_index)


class OpenNotebook:
    """An executed notebook whose kernel is still running."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.nb = client.nb

    def cell(self, marker: str) -> Any:
        return next(c for c in self.nb.cells if c.cell_type == "code" and marker in c.source)

    def rerun(self, cell: Any) -> Any:
        return self.client.execute_cell(cell, self.nb.cells.index(cell))

    def run(self, source: str) -> str:
        """Run `source` in the kernel as one more cell; returns what it printed."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@contextlib.contextmanager
def open_notebook(
    notebook: Path, cwd: Path, after_each_cell: Callable[[Any], None] | None = None
) -> Iterator[OpenNotebook]:
    """Execute every cell (CellExecutionError on the first failing one), calling
    `after_each_cell(cell)` after each, then keep the kernel alive until the block ends."""
    nb = nbformat.read(notebook, as_version=4)
    client = Client(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    with client.setup_kernel():  # shuts the kernel down on exit
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            if after_each_cell is not None:
                after_each_cell(cell)
        yield OpenNotebook(client)


def execute(notebook: Path, cwd: Path) -> Any:
    with open_notebook(notebook, cwd) as opened:
        return opened.nb


def outputs(cells: Any) -> list[dict[str, Any]]:
    return [out for cell in cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def figures(nb: Any) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs(nb.cells))


def stdout(cells: Any) -> str:
    streams = [out for out in outputs(cells) if out.get("output_type") == "stream"]
    return "".join(out.get("text", "") for out in streams if out.get("name") == "stdout")


def stderr(nb: Any) -> list[str]:
    return [
        out["text"]
        for out in outputs(nb.cells)
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]


def project_layout(tmp_path: Path, file_name: str = REAL_FILE) -> tuple[Path, Path]:
    """A project root with the notebook in notebooks/; returns (notebook, database path)."""
    notebooks = tmp_path / "project" / "notebooks"
    notebooks.mkdir(parents=True)
    notebook = notebooks / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    return notebook, tmp_path / "project" / file_name


def total_unread(emu: Any) -> int:
    return sum(row["unread_messages_count"] or 0 for row in emu.all_user_conversations())


def post_messages(emu: Any, every: int = 4) -> None:
    """Post a message in every `every`th membership's conversation: unread counts grow."""
    for row in emu.all_user_conversations()[::every]:
        emu.store.post_message(row["chat_service_sid"], row["conversation_sid"])


# -- The notebook on the demo's data ---------------------------------------------------------


def test_notebook_runs_on_demo_data_and_draws(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook, database = project_layout(tmp_path, DEMO_FILE)  # after `make demo`: only this
    emulator = start_emulator(seed=7)  # the demo's data set
    run_pipeline(emulator, destination=dlt.destinations.duckdb(str(database)))
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)

    with open_notebook(notebook, cwd=notebook.parent) as opened:
        charts = json.loads(opened.run(READ_BACK))
    nb = opened.nb

    out = stdout(nb.cells)
    assert f"database: {database} (the demo's data" in out  # found one level up, said so
    assert figures(nb) >= 5, f"only {figures(nb)} figures"
    assert HISTORY_MARKER in out and "run --history" in out
    assert WAITING not in out
    assert not stderr(nb), stderr(nb)

    # Every chart drawn is stamped with the load it shows, read from _dlt_loads here.
    as_of = newest_load(database)
    assert len(charts) == figures(nb), sorted(charts)
    for name, chart in charts.items():
        assert chart["suptitle"] == f"data as of the load of {as_of:%Y-%m-%d %H:%M} UTC", name
    assert_unread_chart(charts["unread"], emulator)
    assert_levels_chart(charts["levels"], emulator)
    assert_stale_chart(charts["stale"], emulator, as_of)
    assert_attributes_chart(charts["attributes"], emulator)


# -- What the charts draw, read back from their matplotlib artists ---------------------------

# Run in the kernel: every chart in CHARTS as titles, tick labels and bars (one list per
# container: a pandas column, a state, a table's shapes).
READ_BACK = """
import json as _json
print(_json.dumps({
    name: {
        "suptitle": fig.get_suptitle(),
        "axes": [
            {
                "title": ax.get_title(),
                "xticks": [t.get_text() for t in ax.get_xticklabels()],
                "yticks": [t.get_text() for t in ax.get_yticklabels()],
                "bars": [
                    {
                        "label": c.get_label(),
                        "x": [p.get_x() for p in c],
                        "width": [p.get_width() for p in c],
                        "height": [p.get_height() for p in c],
                    }
                    for c in ax.containers
                ],
            }
            for ax in fig.axes
        ],
    }
    for name, fig in CHARTS.items()
}, default=float))
"""
LIFECYCLE = ["active", "inactive", "closed"]  # Twilio's conversation states, in order


def newest_load(database: Path) -> Any:
    with duckdb.connect(str(database), read_only=True) as con:
        row = con.execute(
            "SELECT max(inserted_at) FROM twilio._dlt_loads WHERE status = 0"
        ).fetchone()
    assert row is not None
    return row[0].astimezone(UTC)


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def bars(axes: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    found = [b for b in axes["bars"] if label is None or b["label"] == label]
    assert len(found) == 1, [b["label"] for b in axes["bars"]]
    return found[0]


def assert_unread_chart(
    chart: dict[str, Any], emu: Any, shown: Callable[[str], str] = lambda identity: identity
) -> None:
    services = {s["sid"]: s["friendly_name"] for s in emu.services()}
    totals = {
        (sid, u["sid"]): [f"{shown(u['identity'])} ({name})", 0]
        for sid, name in services.items()
        for u in emu.users(sid)
    }
    for row in emu.all_user_conversations():
        totals[row["chat_service_sid"], row["user_sid"]][1] += row["unread_messages_count"] or 0
    top = sorted((-unread, label) for label, unread in totals.values())[:10]
    (axes,) = chart["axes"]
    drawn = dict(zip(axes["yticks"], bars(axes)["width"], strict=True))
    assert drawn == {label: -negative for negative, label in top}


def assert_levels_chart(chart: dict[str, Any], emu: Any) -> None:
    counts = Counter(
        (row["conversation_state"], row["notification_level"])
        for row in emu.all_user_conversations()
    )
    memberships = chart["axes"][0]
    assert memberships["xticks"] == LIFECYCLE  # not alphabetical
    for level in ("default", "muted"):
        heights = bars(memberships, level)["height"]
        assert heights == [counts[state, level] for state in LIFECYCLE], level
    assert chart["axes"][1]["xticks"] == LIFECYCLE


def assert_stale_chart(chart: dict[str, Any], emu: Any, as_of: datetime) -> None:
    days: dict[str, list[int]] = {"inactive": [], "closed": []}
    for row in emu.all_user_conversations():
        state, timers = row["conversation_state"], row["timers"]
        if state not in days or not row["unread_messages_count"]:
            continue
        since = (timers.get("date_closed") if state == "closed" else None) or (
            timers.get("date_inactive") or row["date_updated"]
        )
        days[state].append(int((as_of - parse_ts(since)).total_seconds() // 86400))
    assert all(days.values()), "the demo data has stale inactive and closed memberships"
    (axes,) = chart["axes"]
    assert "load" in axes["title"] + chart["suptitle"]
    inactive, closed = bars(axes, "inactive"), bars(axes, "closed")
    assert inactive["x"] == closed["x"] and inactive["width"] == closed["width"]  # shared bins
    for state, drawn in (("inactive", inactive), ("closed", closed)):
        edges = [(x, x + w) for x, w in zip(drawn["x"], drawn["width"], strict=True)]
        expected = [sum(lo <= d < hi for d in days[state]) for lo, hi in edges]
        assert drawn["height"] == expected, state
        assert sum(expected) == len(days[state]), state  # the bins hold every membership


def attribute_shape(raw: str | None) -> str:
    if raw is None:
        return "missing"
    try:
        value = json.loads(raw)
    except ValueError:
        return "not valid JSON"
    if not isinstance(value, dict):
        return "other JSON"
    return "object with keys" if value else "empty {}"


def assert_attributes_chart(
    chart: dict[str, Any], emu: Any, truth: dict[str, Counter[str]] | None = None
) -> None:
    if truth is None:
        users = [u for s in emu.services() for u in emu.users(s["sid"])]
        truth = {
            "users": Counter(attribute_shape(u["attributes"]) for u in users),
            "user_conversations": Counter(
                attribute_shape(r["attributes"]) for r in emu.all_user_conversations()
            ),
        }
        assert truth["user_conversations"]["empty {}"]
        assert truth["user_conversations"]["not valid JSON"]
    shown = {}
    for axes in chart["axes"]:
        table = axes["title"].split()[2]  # "attributes of <table> (N rows)"
        shown[table] = dict(zip(axes["yticks"], bars(axes)["width"], strict=True))
    assert set(shown) == set(truth)
    for table, counts in truth.items():
        assert shown[table] == {shape: counts[shape] for shape in shown[table]}, table
        assert sum(shown[table].values()) == sum(counts.values()), table


PII_KEY = "notebook-pii-key-0123456789abcdef"


def test_notebook_charts_hashed_and_dropped_pii_columns(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the PII policy hashing identities and attributes and dropping names, the notebook
    still runs and draws: users labelled by their digests' first digits, attributes counted as
    hashed or missing (dropped)."""
    notebook, database = project_layout(tmp_path)
    emulator = start_emulator(seed=7)
    policy = {
        "users.identity": "hash",
        "users.attributes": "drop",
        "user_conversations.attributes": "hash",
        "user_conversations.unique_name": "hash",
        "user_conversations.friendly_name": "drop",
    }
    destination = dlt.destinations.duckdb(str(database))
    run_pipeline(emulator, destination=destination, pii=policy, pii_hash_key=PII_KEY)
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)

    with open_notebook(notebook, cwd=notebook.parent) as opened:
        charts = json.loads(opened.run(READ_BACK))
    nb = opened.nb
    assert not stderr(nb), stderr(nb)
    assert figures(nb) >= 5, f"only {figures(nb)} figures"

    def shown(identity: str) -> str:
        digest = hmac.new(PII_KEY.encode(), identity.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest[:8]}…"

    assert_unread_chart(charts["unread"], emulator, shown)
    assert_levels_chart(charts["levels"], emulator)
    rows = emulator.all_user_conversations()
    users = sum(len(emulator.users(s["sid"])) for s in emulator.services())
    hashed = sum(r["attributes"] is not None for r in rows)
    truth = {
        "users": Counter({"missing": users}),
        "user_conversations": Counter({"hashed": hashed, "missing": len(rows) - hashed}),
    }
    assert_attributes_chart(charts["attributes"], emulator, truth)
    out = stdout(nb.cells)
    assert not [i for i in ("first+tag@example.com", "Anna Maria López") if i in out]


# -- An open notebook and pipeline runs ------------------------------------------------------


def test_open_notebook_never_fails_a_run(
    emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook, database = project_layout(tmp_path)
    destination = dlt.destinations.duckdb(str(database))
    run_pipeline(emulator, destination=destination)
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)
    unread_before = total_unread(emulator)

    def writer_opens(cell: Any) -> None:  # the kernel holds nothing between cells
        duckdb.connect(str(database)).close()

    with open_notebook(notebook, cwd=notebook.parent, after_each_cell=writer_opens) as opened:
        post_messages(emulator)
        truth = emulator.all_user_conversations()
        assert total_unread(emulator) != unread_before, "the change must show in the data"

        # lock_timeout=0: the run fails at once if anything holds the file.
        outcome = run_pipeline(emulator, destination=destination, lock_timeout=0)
        assert_user_conversations_mirror(outcome.pipeline, truth)

        # A cell run again in the open notebook sees the new load.
        printed = opened.run(
            "print(int(q('SELECT sum(unread_messages_count) AS n FROM user_conversations').n[0]))"
        )
        assert printed.split() == [str(total_unread(emulator))]
    assert not stderr(opened.nb), stderr(opened.nb)


def test_query_waits_while_a_run_writes_the_file(
    emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook, database = project_layout(tmp_path)
    run_pipeline(emulator, destination=dlt.destinations.duckdb(str(database)))
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)
    users = sum(len(emulator.users(service["sid"])) for service in emulator.services())

    with open_notebook(notebook, cwd=notebook.parent) as opened:
        writer = duckdb.connect(str(database))  # what a load in progress does to the file
        try:
            # The writer "finishes" as soon as the notebook says it waits for it.
            opened.client.on_stream = lambda text: writer.close() if WAITING in text else None
            printed = opened.run("print(len(q('SELECT sid FROM users')))")
        finally:
            writer.close()

    lines = printed.splitlines()
    assert len(lines) == 2 and WAITING in lines[0], printed  # one line saying it waits
    assert lines[1] == str(users)


# -- History ---------------------------------------------------------------------------------


def history_truth(emu: Any) -> dict[str, Any]:
    """What the history cell should show for the emulator's current data (nulls count 0)."""
    services = {s["sid"]: s["friendly_name"] for s in emu.services()}
    identities = {(sid, u["sid"]): u["identity"] for sid in services for u in emu.users(sid)}
    rows = emu.all_user_conversations()
    by_user: Counter[str] = Counter()
    for row in rows:
        service, user = row["chat_service_sid"], row["user_sid"]
        label = f"{identities[service, user]} ({services[service]})"
        by_user[label] += row["unread_messages_count"] or 0
    return {
        "point": (
            sum(row["unread_messages_count"] or 0 for row in rows),
            len(rows),
            sum(row["conversation_state"] == "active" for row in rows),
        ),
        "by_user": dict(by_user),
    }


POINT_ROW = re.compile(r"^\d+\s+\d{4}-\d\d-\d\d \S+\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def displayed_backlog(cell: Any) -> list[tuple[int, ...]]:
    """The (unread, memberships, active_memberships) rows of the cell's displayed table."""
    tables = [
        out["data"]["text/plain"]
        for out in cell.outputs
        if out.output_type == "display_data" and "active_memberships" in out["data"]["text/plain"]
    ]
    assert len(tables) == 1, cell.outputs
    rows = [POINT_ROW.match(line) for line in tables[0].splitlines()[1:]]
    assert all(rows), tables[0]
    return [tuple(int(value) for value in row.groups()) for row in rows if row]


def assert_history_shows(opened: OpenNotebook, cell: Any, snapshots: list[dict[str, Any]]) -> None:
    """One point per history run, each equal to the truth snapshot taken right after it."""
    assert any("image/png" in out.get("data", {}) for out in cell.outputs)
    assert HISTORY_MARKER not in stdout([cell])
    latest = snapshots[-1]["point"][0]
    assert f"history points: {len(snapshots)}, latest unread: {latest:,}" in stdout([cell])
    assert displayed_backlog(cell) == [snapshot["point"] for snapshot in snapshots]

    # The top 5 users now, at every point: each value is that user's unread total then.
    records = json.loads(opened.run("print(top_users.to_json(orient='records'))"))
    points = sorted({record["at"] for record in records})
    assert len(points) == len(snapshots)
    by_point = [{r["label"]: r["unread"] for r in records if r["at"] == at} for at in points]
    for shown, snapshot in zip(by_point, snapshots, strict=True):
        assert set(shown) == set(by_point[-1])
        assert shown == {label: snapshot["by_user"][label] for label in shown}
    now = sorted(snapshots[-1]["by_user"].values(), reverse=True)[:5]
    assert sorted(by_point[-1].values(), reverse=True) == now


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
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(database))
    snapshots: list[dict[str, Any]] = []

    def history_run() -> None:
        run_pipeline(emulator, destination=destination, history=True, lock_timeout=0)
        snapshots.append(history_truth(emulator))

    history_run()  # one history run: one point
    with open_notebook(NOTEBOOK, cwd=tmp_path) as opened:
        assert f"database: {database}\n" in stdout(opened.nb.cells)
        history = opened.cell("HAS_HISTORY:")
        assert_history_shows(opened, history, snapshots)

        post_messages(emulator)  # unread counts grow for many members
        history_run()  # while the notebook is open
        assert snapshots[1]["point"] != snapshots[0]["point"]
        opened.rerun(history)
        assert_history_shows(opened, history, snapshots)
    assert not stderr(opened.nb), stderr(opened.nb)


# Run in the kernel: the history chart's layout as drawn, in display pixels (x0, y0, x1, y1).
HISTORY_LAYOUT = """
import json as _json
_fig = CHARTS["history"]
_fig.canvas.draw()
print(_json.dumps({
    "figure": list(_fig.bbox.extents),
    "axes": [
        {
            "title": ax.get_title(),
            "ylim": list(ax.get_ylim()),
            "area": list(ax.get_window_extent().extents),
            "lines": {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()},
        }
        for ax in _fig.axes
    ],
    "legends": [
        {
            "box": list(ax.get_legend().get_window_extent().extents),
            "texts": [text.get_text() for text in ax.get_legend().get_texts()],
        }
        for ax in _fig.axes
        if ax.get_legend() is not None
    ],
}, default=float))
"""


def overlaps(a: list[float], b: list[float]) -> bool:
    """Whether two (x0, y0, x1, y1) boxes share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_notebook_history_chart_starts_at_zero_and_its_legend_hides_no_line(
    start_emulator: Any, run_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both history panels count from zero (a few more unread messages on thousands must not
    look like a jump) and show their highest point; the legend lies outside every panel, inside
    the figure, and names every line of the top-users panel."""
    from twilio_conversations import twilio_conversations

    if "history" not in inspect.signature(twilio_conversations).parameters:
        pytest.skip("this version of the source has no history mode")
    database = tmp_path / "history.duckdb"
    emulator = start_emulator(seed=5, services=1, users=8, max_conversations=30)
    destination = dlt.destinations.duckdb(str(database))
    run_pipeline(emulator, destination=destination, history=True)
    post_messages(emulator)
    run_pipeline(emulator, destination=destination, history=True)  # a second point, higher
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(database))

    with open_notebook(NOTEBOOK, cwd=tmp_path) as opened:
        chart = json.loads(opened.run(HISTORY_LAYOUT))
    assert not stderr(opened.nb), stderr(opened.nb)

    panels = chart["axes"]
    assert len(panels) == 2, [panel["title"] for panel in panels]
    for panel in panels:
        bottom, top = panel["ylim"]
        assert bottom == 0, panel["title"]
        highest = max(max(values) for values in panel["lines"].values())
        assert highest > 0 and top > highest, (panel["title"], top, highest)
    (legend,) = chart["legends"]
    for panel in panels:
        assert not overlaps(legend["box"], panel["area"]), (panel["title"], legend, panel)
    x0, y0, x1, y1 = chart["figure"]
    box = legend["box"]
    assert x0 <= box[0] and y0 <= box[1] and box[2] <= x1 and box[3] <= y1, (box, chart["figure"])
    top_users = next(panel for panel in panels if "top 5" in panel["title"])
    assert len(top_users["lines"]) == 5
    assert sorted(legend["texts"]) == sorted(top_users["lines"])


# -- Finding the database file ---------------------------------------------------------------


def settings_cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source: str = next(c for c in nb.cells if c.cell_type == "code").source
    return source


def run_settings(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for folder in cwd.resolve().parents[2:]:  # above the test's own folders
        if any((folder / name).is_file() for name in (REAL_FILE, DEMO_FILE)):
            pytest.skip(f"a database file in {folder} would be found first")
    monkeypatch.chdir(cwd)
    namespace: dict[str, Any] = {}
    exec(compile(settings_cell(), "settings-cell", "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    ("files", "expected", "demo"),
    [
        pytest.param([DEMO_FILE], DEMO_FILE, True, id="only-the-demo"),
        pytest.param([DEMO_FILE, REAL_FILE], REAL_FILE, False, id="both"),
        pytest.param([f"notebooks/{DEMO_FILE}", REAL_FILE], REAL_FILE, False, id="real-further-up"),
        pytest.param(
            [f"notebooks/{REAL_FILE}", DEMO_FILE], f"notebooks/{REAL_FILE}", False, id="real-here"
        ),
    ],
)
def test_finds_the_real_database_before_the_demo(
    files: list[str],
    expected: str,
    demo: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB", raising=False)
    (tmp_path / "notebooks").mkdir()
    for name in files:
        (tmp_path / name).touch()

    namespace = run_settings(tmp_path / "notebooks", monkeypatch)

    assert namespace["DB_PATH"] == (tmp_path / expected).resolve()
    printed = capsys.readouterr().out
    assert printed.startswith(f"database: {(tmp_path / expected).resolve()}")
    assert ("demo" in printed) is demo, printed


def test_environment_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (DEMO_FILE, REAL_FILE, "chosen.duckdb"):
        (tmp_path / name).touch()
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(tmp_path / "chosen.duckdb"))

    assert run_settings(tmp_path, monkeypatch)["DB_PATH"] == (tmp_path / "chosen.duckdb").resolve()
    assert capsys.readouterr().out == f"database: {(tmp_path / 'chosen.duckdb').resolve()}\n"


def test_missing_database_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_CONVERSATIONS_DUCKDB", str(tmp_path / "missing.duckdb"))
    with pytest.raises(FileNotFoundError, match="TWILIO_CONVERSATIONS_DUCKDB"):
        run_settings(tmp_path, monkeypatch)
    monkeypatch.delenv("TWILIO_CONVERSATIONS_DUCKDB")
    with pytest.raises(FileNotFoundError, match="make demo"):
        run_settings(tmp_path, monkeypatch)


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"outputs committed in cell {cell.get('id')}"
            assert cell.execution_count is None, f"execution count in cell {cell.get('id')}"
