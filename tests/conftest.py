"""Shared fixtures: an isolated dlt environment, the emulator on a free port, a throwaway
PostgreSQL server, and helpers that compare a destination with the emulator's truth."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TWILIO_ENV = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET")


@pytest.fixture(autouse=True)
def isolated_dlt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own working directory, dlt data dir and no ambient credentials."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / ".dlt_data"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "WARNING")
    for name in list(os.environ):
        if name.startswith(("SOURCES__", "DESTINATION__", "TWILIO_")) or name in TWILIO_ENV:
            monkeypatch.delenv(name, raising=False)
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port; yields a dlt credentials URL.

    The server is initdb'ed into a temporary directory and stopped afterwards. As root (CI),
    it runs as the `postgres` system user, since PostgreSQL refuses to run as root.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs them")
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install postgresql"
        )
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="tc-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    try:
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(base / "server.log"),
                "-w",
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        # trust auth ignores the password, but dlt requires one in the credentials
        yield f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


# -- Emulator and pipelines --------------------------------------------------------------------


@pytest.fixture
def start_emulator() -> Iterator[Any]:
    """Factory: `start_emulator(users=5, ...)` serves a fresh emulator until the test ends;
    `start_emulator(subaccounts=2, subaccount_api_keys=True, subaccount_statuses=(...), ...)`
    serves a parent account and subaccounts, each with its own data."""
    from twilio_emulator import DataSpec, EmulatorConfig, run_emulator

    stack = contextlib.ExitStack()
    accounts = ("subaccounts", "subaccount_api_keys", "subaccount_statuses")

    def start(config: Any = None, **spec: Any) -> Any:
        if config is None:
            options = {k: spec.pop(k) for k in accounts if k in spec}
            config = EmulatorConfig(data=DataSpec(**spec), **options)
        return stack.enter_context(run_emulator(config))

    with stack:
        yield start


@pytest.fixture
def emulator(start_emulator: Any) -> Any:
    """A small emulator: 2 services x 12 users, some with more than 50 conversations."""
    return start_emulator(seed=11, services=2, users=12, max_conversations=70)


@pytest.fixture
def run_pipeline(isolated_dlt: Path) -> Any:
    """`run_pipeline(emu, destination=..., **source_kwargs)` -> RunOutcome in this test's dirs."""
    import dlt
    from twilio_conversations.credentials import TwilioCredentials
    from twilio_conversations.runner import make_pipeline, run

    def _run(
        emu: Any,
        destination: Any = None,
        full_refresh: bool = False,
        dataset: str = "twilio",
        lock_timeout: float | None = None,
        resources: list[str] | None = None,
        **source_kwargs: Any,
    ) -> Any:
        credentials = TwilioCredentials()
        credentials.account_sid = emu.account_sid
        credentials.auth_token = emu.auth_token
        source_kwargs.setdefault("credentials", credentials)
        source_kwargs.setdefault("base_url", emu.base_url)
        destination = destination or dlt.destinations.duckdb(str(isolated_dlt / "test.duckdb"))
        pipeline = make_pipeline(
            destination, dataset, progress=None, pipelines_dir=str(isolated_dlt / "pipelines")
        )
        outcome = run(
            pipeline,
            full_refresh=full_refresh,
            source_kwargs=source_kwargs,
            lock_timeout=lock_timeout,
            resources=resources,
        )
        outcome.pipeline = pipeline
        return outcome

    return _run


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def destination(request: pytest.FixtureRequest, isolated_dlt: Path) -> dict[str, Any]:
    """run_pipeline kwargs for each tested destination: a DuckDB file, or a schema of its own
    on the session's throwaway PostgreSQL server."""
    import dlt

    if request.param == "duckdb":
        return {"destination": dlt.destinations.duckdb(str(isolated_dlt / "test.duckdb"))}
    url = request.getfixturevalue("postgres_server")
    dataset = "t_" + hashlib.blake2b(str(isolated_dlt).encode(), digest_size=6).hexdigest()
    return {"destination": dlt.destinations.postgres(url), "dataset": dataset}


@pytest.fixture
def settings_at_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """DuckDB's memory_limit and threads as each load step starts (`duckdb_settings.py`)."""
    from dlt.pipeline import trace as dlt_trace
    from duckdb_settings import DuckDbSettingsAtLoad

    spy = DuckDbSettingsAtLoad()
    monkeypatch.setattr(dlt_trace, "TRACKING_MODULES", [*dlt_trace.TRACKING_MODULES, spy])
    yield spy
