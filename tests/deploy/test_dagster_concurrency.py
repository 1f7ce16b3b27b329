"""The shipped deploy/dagster/dagster.yaml keeps the recipe's runs from overlapping, for real.

The recipes' jobs carry a `dagster/concurrency_key` tag, which Dagster enforces only where the
instance sets a limit for it. Here a real deployment (a DAGSTER_HOME holding the shipped file, a
code server for the recipe, `dagster-daemon run`) and runs submitted with `dagster job launch`
show that a second run of `twilio_conversations_job` stays QUEUED while the first is in progress
and starts only after it ends; and, the control, that without the file the two run at once.

The emulator holds the first run in progress: its `RequestGate` holds every request until the
test opens it, so "in progress" is a known state, not a matter of timing. That the daemon looked
at the second run and left it queued is shown by a witness: an untagged job in a code location
of its own, submitted after the second run. The daemon launches queued runs first in, first out,
so once the witness has run, the second run was either launched before it or held by the limit.

Dagster runs in the interpreter named by DAGSTER_PYTHON (as in test_orchestrators.py); the tests
skip, saying so, where Dagster is not installed. The emulator serves in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twilio_emulator import RequestGate

REPO = Path(__file__).resolve().parents[2]
DAGSTER_DIR = REPO / "deploy" / "dagster"
SHIPPED_INSTANCE = DAGSTER_DIR / "dagster.yaml"
DEFINITIONS = DAGSTER_DIR / "definitions.py"
RECIPES = [DEFINITIONS, DAGSTER_DIR / "accounts.py"]
JOB = "twilio_conversations_job"
CONCURRENCY_KEY = "dagster/concurrency_key"
RESULT_MARK = "RESULT:"
DEADLINE = 60.0  # seconds any one awaited condition may take before the test fails
# Each run executes its steps in its own process rather than one process per step (the default):
# the same run, queued and limited the same way, started sooner.
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})

# The witness's code location: the recipe's stays as shipped.
WITNESS = """
import dagster as dg


@dg.op
def witness() -> None:
    pass


@dg.job
def witness_job() -> None:
    witness()


defs = dg.Definitions(jobs=[witness_job])
"""

# Creates the instance's storage (SQLite files in DAGSTER_HOME) before several processes share
# it: two processes creating it at once collide on its schema migrations.
CREATE_STORAGE = """
from dagster import DagsterInstance

with DagsterInstance.get() as instance:
    instance.get_runs(limit=1)
print("RESULT:null")
"""

# Polls the instance until every run in `wanted` has one of its statuses, or the deadline; prints
# the status and recorded start and end of those runs and of the runs in `also`.
WAIT_FOR_RUNS = """
import json, sys, time
from dagster import DagsterInstance

wanted, also = json.loads(sys.argv[1]), json.loads(sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
with DagsterInstance.get() as instance:
    while True:
        records = {run_id: instance.get_run_record_by_id(run_id) for run_id in [*wanted, *also]}
        runs = {
            run_id: record and {
                "status": record.dagster_run.status.value,
                "start": record.start_time,
                "end": record.end_time,
            }
            for run_id, record in records.items()
        }
        done = all(runs[i] and runs[i]["status"] in s for i, s in wanted.items())
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # poll interval
print("RESULT:" + json.dumps({"done": done, "runs": runs}))
"""

# The run tag limits of the instance in DAGSTER_HOME, as Dagster reads them, and the concurrency
# key of every job in the recipes.
LIMITS_AND_KEYS = """
import importlib.util, json, sys
from dagster import DagsterInstance

keys = {}
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for job in module.defs.get_repository_def().get_all_jobs():
        if not job.name.startswith("__"):
            keys[job.name] = job.tags.get("dagster/concurrency_key")
with DagsterInstance.get() as instance:
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
print("RESULT:" + json.dumps({"limits": limits, "keys": keys}))
"""


def run_script(python: str, script: str, args: list[str], env: dict[str, str], cwd: Path) -> Any:
    """Run `script` in `python` with `args`; it prints one `RESULT:<json>` line, returned parsed."""
    done = subprocess.run(
        [python, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEADLINE + 60,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert done.returncode == 0 and results, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(results[-1][len(RESULT_MARK) :])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Deployment:
    """Dagster as deployed, in a fresh DAGSTER_HOME: a code server per code location, a
    workspace naming them, and the daemon. Each process has a session of its own, so stopping
    it stops what it started too (the run workers a code server launches)."""

    def __init__(self, python: str, home: Path, env: dict[str, str], locations: dict[str, Path]):
        self.python, self.home, self.locations = python, home, locations
        self.env = {**env, "DAGSTER_HOME": str(home)}
        self.workspace = home / "workspace.yaml"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        run_script(self.python, CREATE_STORAGE, [], self.env, self.home)
        entries = []
        for name, path in self.locations.items():
            port = free_port()
            self._spawn(
                name,
                ["-m", "dagster", "api", "grpc", "-f", str(path), "-p", str(port)]
                + ["--location-name", name],
            )
            entries.append(
                {"grpc_server": {"host": "localhost", "port": port, "location_name": name}}
            )
        for name in self.locations:
            self._wait_for_log(name, "Started Dagster code server")
        self.workspace.write_text(json.dumps({"load_from": entries}))  # JSON is YAML
        self._spawn("daemon", ["-m", "dagster._daemon", "run", "-w", str(self.workspace)])

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.home / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [self.python, *args],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for_log(self, name: str, line: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while line not in self.log(name):
            assert self.processes[name].poll() is None, f"{name} exited:\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{name} not ready:\n{self.log(name)}"
            time.sleep(0.1)  # poll interval

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")[-5000:]

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)

    def stop(self) -> None:
        """The daemon first, asked to stop; then the code servers, killed with their sessions:
        a run held at the emulator's gate would not end on a request."""
        daemon = self.processes.get("daemon")
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)
        for process in reversed(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def launch(self, location: str, job: str) -> str:
        """Submit a run of `job` with `dagster job launch`: the run queue holds it until the
        daemon dequeues it. Returns the run's id."""
        run_id = str(uuid.uuid4())
        done = subprocess.run(
            [self.python, "-m", "dagster", "job", "launch", "-w", str(self.workspace)]
            + ["-l", location, "-j", job, "--run-id", run_id, "--config-json", IN_PROCESS],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=DEADLINE + 60,
        )
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        return run_id

    def wait_for(self, wanted: dict[str, list[str]], also: tuple[str, ...] = ()) -> dict[str, Any]:
        """Each run's status, start and end (the runs of `wanted` and `also`), once every run of
        `wanted` has one of the statuses it names."""
        args = [json.dumps(wanted), json.dumps(also), str(DEADLINE)]
        result = run_script(self.python, WAIT_FOR_RUNS, args, self.env, self.home)
        assert result["done"], f"{wanted} not reached: {result['runs']}\n{self.logs()}"
        runs: dict[str, Any] = result["runs"]
        return runs


@pytest.fixture
def gated_emulator(start_emulator: Any) -> Any:
    """A small emulator whose gate holds every request until the test opens it."""
    emu = start_emulator(seed=5, services=1, users=3, max_conversations=5)
    emu.gate = RequestGate()
    return emu


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, dagster_python: str, gated_emulator: Any, tmp_path: Path
) -> Iterator[Deployment]:
    """A started Deployment serving the recipe (`twilio_conversations`) and the witness
    (`witness`), loading from the gated emulator into a DuckDB file. Its DAGSTER_HOME holds the
    shipped dagster.yaml, or nothing with `@pytest.mark.parametrize("deployment", [False],
    indirect=True)`."""
    emu = gated_emulator
    home = tmp_path / "dagster_home"
    home.mkdir()
    if getattr(request, "param", True):
        shutil.copy(SHIPPED_INSTANCE, home / "dagster.yaml")
    witness = tmp_path / "witness.py"
    witness.write_text(WITNESS)
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        "TWILIO_CONVERSATIONS_DESTINATION": "duckdb",
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "dagster.duckdb"),
    }
    locations = {"twilio_conversations": DEFINITIONS, "witness": witness}
    deployment = Deployment(dagster_python, home, env, locations)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def test_shipped_instance_limits_every_recipe_job_to_one_run(
    dagster_python: str, tmp_path: Path
) -> None:
    """Dagster reads the shipped file, and it limits each recipe job's concurrency key to 1."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(SHIPPED_INSTANCE, home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    result = run_script(
        dagster_python, LIMITS_AND_KEYS, [str(path) for path in RECIPES], env, tmp_path
    )
    keys = result["keys"]
    assert keys == {
        "twilio_conversations_job": "twilio_conversations",
        "twilio_conversations_accounts_job": "twilio_conversations_accounts",
    }
    for value in keys.values():
        assert {"key": CONCURRENCY_KEY, "value": value, "limit": 1} in result["limits"]


@pytest.mark.slow
def test_shipped_instance_queues_a_second_run_until_the_first_ends(
    deployment: Deployment, gated_emulator: Any
) -> None:
    """With the shipped file, the second run waits in the queue for the first to end."""
    gate: RequestGate = gated_emulator.gate
    first = deployment.launch("twilio_conversations", JOB)
    second = deployment.launch("twilio_conversations", JOB)
    witness = deployment.launch("witness", "witness_job")
    runs = deployment.wait_for({witness: ["SUCCESS"]}, also=(first, second))
    # The witness, submitted after the second run, has run: the daemon has looked at the second
    # run and left it queued, while the first is in progress (the gate keeps it from ending).
    assert runs[first]["status"] in ("STARTING", "STARTED"), runs
    assert runs[second]["status"] == "QUEUED", runs
    assert gate.wait_for_arrivals(1, timeout=DEADLINE), deployment.logs()
    runs = deployment.wait_for({first: ["STARTED"], second: ["QUEUED"]})
    # A run waits on one request at a time: nothing but the first has reached the emulator.
    assert gate.arrivals == 1
    gate.open()
    runs = deployment.wait_for({first: ["SUCCESS", "FAILURE"], second: ["SUCCESS", "FAILURE"]})
    assert runs[first]["status"] == runs[second]["status"] == "SUCCESS", deployment.logs()
    # The second started only after the first had ended.
    assert runs[second]["start"] >= runs[first]["end"]


@pytest.mark.slow
@pytest.mark.parametrize("deployment", [False], indirect=True, ids=["no dagster.yaml"])
def test_without_the_shipped_instance_two_runs_overlap(
    deployment: Deployment, gated_emulator: Any
) -> None:
    """The control: the same two runs, in an instance without the file, run at once."""
    gate: RequestGate = gated_emulator.gate
    first = deployment.launch("twilio_conversations", JOB)
    second = deployment.launch("twilio_conversations", JOB)
    # Both runs are in progress at once: each holds its one request at the gate.
    assert gate.wait_for_arrivals(2, timeout=DEADLINE), deployment.logs()
    runs = deployment.wait_for({first: ["STARTED"], second: ["STARTED"]})
    assert runs[first]["end"] is None and runs[second]["end"] is None
