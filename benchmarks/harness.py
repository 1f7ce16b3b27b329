"""Plumbing shared by the benchmarks: the emulator process, timed children, checks, mutations."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from twilio_emulator import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN

from . import dlt_minimum

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
LAUNCHER = Path(__file__).resolve().parent / "launch.py"
AUTH = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)


class BenchmarkError(RuntimeError):
    """A contender failed or loaded wrong data: the benchmark is void."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Workload:
    name: str
    users: int
    conversations_per_user: int | None  # None: the emulator's mix (rows known only to it)
    services: int = 1
    latency_ms: float = 0.0

    @property
    def rows(self) -> int:
        if self.conversations_per_user is None:
            raise BenchmarkError(f"{self.name}: a mixed workload's rows come from the emulator")
        return self.services * self.users * self.conversations_per_user


class EmulatorProcess:
    """``python -m twilio_emulator`` as a separate process on a free loopback port."""

    def __init__(self, workload: Workload, log_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.workload = workload
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"emulator-{workload.name}-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        cmd = [
            PYTHON,
            "-m",
            "twilio_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--services",
            str(workload.services),
            "--users",
            str(workload.users),
            *(
                ["--conversations-per-user", str(workload.conversations_per_user)]
                if workload.conversations_per_user is not None
                else []  # the emulator's mix of 0, a few and more than a page
            ),
            "--latency-ms",
            str(workload.latency_ms),
            *extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        per_user = workload.conversations_per_user or 60  # the mix averages well under 60
        self._wait_ready(timeout=120 + workload.services * workload.users * per_user / 10_000)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchmarkError(f"emulator exited with {self.proc.returncode}")
            try:
                if requests.get(f"{self.base_url}/v1/Services", auth=AUTH, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise BenchmarkError("emulator did not answer in time")

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading and changing the emulated account over HTTP -----------------------------------

    def probe(self, requests_n: int = 300) -> dict[str, float]:
        """The emulator's own time per request: one keep-alive session, one page at a time.

        ``server_ms`` is the handler time the emulator reports (Twilio-Request-Duration);
        ``client_ms`` is the round trip a client sees, JSON decoding included.
        """
        session = requests.Session()
        session.auth = AUTH
        service = self._list(session, f"{self.base_url}/v1/Services", "services")[0]["sid"]
        users_url = f"{self.base_url}/v1/Services/{service}/Users?PageSize=50"
        users = session.get(users_url, timeout=30).json()["users"]
        urls = [
            f"{self.base_url}/v1/Services/{service}/Users/{u['sid']}/Conversations?PageSize=50"
            for u in users
        ]
        server = 0.0
        started = time.perf_counter()
        for i in range(requests_n):
            response = session.get(urls[i % len(urls)], timeout=30)
            response.json()
            server += float(response.headers.get("Twilio-Request-Duration", "nan"))
        elapsed = time.perf_counter() - started
        return {
            "requests": requests_n,
            "client_ms": 1000 * elapsed / requests_n,
            "server_ms": 1000 * server / requests_n,
        }

    def _list(self, session: requests.Session, url: str, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            body = session.get(next_url, timeout=30).json()
            out.extend(body[key])
            next_url = body["meta"]["next_page_url"]
        return out

    def change_users(self, share: float) -> dict[tuple[str, str, str], str]:
        """Toggle the notification level of one conversation of every n-th user.

        A read-state change: it does not move the conversation's date_updated, so only a
        connector that compares content sees it. Returns {(service, user, conversation): level}.
        """
        session = requests.Session()
        session.auth = AUTH
        changed: dict[tuple[str, str, str], str] = {}
        step = max(1, round(1 / share))
        for service in self._list(session, f"{self.base_url}/v1/Services?PageSize=100", "services"):
            users = self._list(
                session, f"{self.base_url}/v1/Services/{service['sid']}/Users?PageSize=50", "users"
            )
            for user in sorted(users, key=lambda u: u["sid"])[::step]:
                base = f"{self.base_url}/v1/Services/{service['sid']}/Users/{user['sid']}"
                first = session.get(f"{base}/Conversations?PageSize=1", timeout=30).json()
                row = first["conversations"][0]
                level = "default" if row["notification_level"] == "muted" else "muted"
                response = session.post(
                    f"{base}/Conversations/{row['conversation_sid']}",
                    data={"NotificationLevel": level},
                    timeout=30,
                )
                if response.status_code != 200:
                    raise BenchmarkError(f"emulator refused a change: {response.text[:200]}")
                changed[(service["sid"], user["sid"], row["conversation_sid"])] = level
        return changed


@dataclass
class ChildResult:
    """One contender run: wall time and the child's own resource usage (wait4, via launch.py)."""

    name: str
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    emulator_cpu_s: float
    stdout: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def launched(cmd: Sequence[str], usage_path: Path) -> list[str]:
    """`cmd` spawned by launch.py, which writes its wait4 figures to `usage_path`: spawned from
    this process, the child's ru_maxrss would include this process's own RSS."""
    return [PYTHON, "-I", "-S", str(LAUNCHER), str(usage_path), "--", *cmd]


def run_child(
    name: str,
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    emulator: EmulatorProcess,
    timeout: float = 3600,
) -> ChildResult:
    """Run ``cmd`` and measure it; raise BenchmarkError when it fails."""
    cwd.mkdir(parents=True, exist_ok=True)
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    # Write back what the previous contender left in the page cache (the baseline leaves about
    # 100 MB), so its disk writes are not timed as part of the next contender's run.
    os.sync()
    emu_cpu = emulator.cpu_seconds()
    usage_path = cwd / "usage.json"
    usage_path.unlink(missing_ok=True)
    launcher = launched(cmd, usage_path)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(launcher, env=dict(env), cwd=cwd, stdout=out, stderr=err)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
            raise BenchmarkError(f"{name} timed out after {timeout:.0f} s") from None
    stdout = out_path.read_text()
    if proc.returncode != 0:
        tail = err_path.read_text().strip().splitlines()[-5:]
        raise BenchmarkError(f"{name} exited with {proc.returncode}: " + " | ".join(tail))
    usage = json.loads(usage_path.read_text())
    return ChildResult(
        name=name,
        wall_s=usage["wall_s"],
        user_s=usage["user_s"],
        sys_s=usage["sys_s"],
        max_rss_mb=usage["max_rss_kib"] / 1024,
        emulator_cpu_s=emulator.cpu_seconds() - emu_cpu,
        stdout=stdout,
    )


def run_dlt_minimum(emulator: EmulatorProcess, work: Path) -> ChildResult:
    """`benchmarks.dlt_minimum` in a fresh `work`: dlt's own cost for one row, checked loaded."""
    cwd = fresh_dir(work)
    cmd = [PYTHON, "-m", "benchmarks.dlt_minimum"]
    result = run_child("dlt minimum", cmd, contender_env(emulator, cwd), cwd, emulator)
    result.extra["db_rows"] = check_rows(
        "dlt minimum", cwd / dlt_minimum.DATABASE, dlt_minimum.TABLE, 1
    )
    return result


def contender_env(emulator: EmulatorProcess, workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: emulator URL and demo credentials, an own DLT_DATA_DIR."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PYTHONPATH=str(REPO),
        TWILIO_ACCOUNT_SID=AUTH[0],
        TWILIO_AUTH_TOKEN=AUTH[1],
        SOURCES__TWILIO_CONVERSATIONS__BASE_URL=emulator.base_url,
        DLT_DATA_DIR=str(workdir / "dlt_data"),
        RUNTIME__DLTHUB_TELEMETRY="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def count_rows(db: Path, table: str) -> int:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def check_rows(name: str, db: Path, table: str, expected: int) -> int:
    found = count_rows(db, table)
    if found != expected:
        raise BenchmarkError(f"{name}: {table} in {db} holds {found:,} rows, expected {expected:,}")
    return found


def check_levels(db: Path, table: str, expected: Mapping[tuple[str, str, str], str]) -> None:
    """The changed rows carry the emulator's new values (an incremental run that skips is void)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        got = {
            (s, u, c): level
            for s, u, c, level in con.execute(
                "SELECT chat_service_sid, user_sid, conversation_sid, notification_level "
                f"FROM {table}"
            ).fetchall()
        }
    finally:
        con.close()
    wrong = [key for key, level in expected.items() if got.get(key) != level]
    if wrong:
        raise BenchmarkError(f"{len(wrong)} changed rows not updated in {db}, e.g. {wrong[0]}")


_SUMMARY_REQUESTS = re.compile(r"requests\s+([\d,]+)\s+\(([\d,]+) retries\)")
_SUMMARY_ROWS = re.compile(r"user_conversations ([\d,]+)")
_SUMMARY_CHANGED = re.compile(r"([\d,]+) changed")


def parse_summary(stdout: str) -> dict[str, int]:
    """The numbers of ``twilio-conversations run``'s summary."""

    def num(pattern: re.Pattern[str], group: int = 1) -> int:
        match = pattern.search(stdout)
        if not match:
            raise BenchmarkError(f"no {pattern.pattern!r} in the summary: {stdout[-300:]!r}")
        return int(match.group(group).replace(",", ""))

    return {
        "requests": num(_SUMMARY_REQUESTS),
        "retries": num(_SUMMARY_REQUESTS, 2),
        "rows_written": num(_SUMMARY_ROWS),
        "users_changed": num(_SUMMARY_CHANGED),
    }


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise BenchmarkError(f"no JSON result line in {stdout[-300:]!r}")
