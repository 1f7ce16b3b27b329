"""`check_setup` (`twilio-conversations check`): each check against the real thing, the emulator,
a DuckDB file another process holds, a throwaway PostgreSQL server, and what it says compared
with what `run` says for the same setup. Settings come the way a run takes them: the
environment, through dlt."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from twilio_conversations import cli
from twilio_conversations.setup_check import (
    MAX_SERVICES,
    USERS_PAGE_SIZE,
    CheckReport,
    check_setup,
    region_of,
)

SECTION = "SOURCES__TWILIO_CONVERSATIONS__"


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`configure(emu, **SETTINGS)`: the emulator's credentials and origin in the environment,
    plus `SOURCES__TWILIO_CONVERSATIONS__<KEY>` for each setting, as a user sets them."""

    def apply(emu: Any, **settings: str) -> None:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", emu.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", emu.auth_token)
        monkeypatch.setenv(SECTION + "BASE_URL", emu.base_url)
        for key, value in settings.items():
            monkeypatch.setenv(SECTION + key.upper(), value)

    return apply


def run_line(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """`twilio-conversations run` in this process: its exit code and its stderr lines."""
    capsys.readouterr()
    code = cli.main(["run", "--progress", "none", *args])
    return code, capsys.readouterr().err.strip().splitlines()


def line(report: CheckReport, what: str) -> str:
    (found,) = [c.line() for c in report.checks if c.what == what]
    return found


def scratch_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "twilio-conversations-check-*")))


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# -- all ok, in a handful of requests, writing nothing -----------------------------------------


def test_all_ok_against_the_emulator_in_a_handful_of_requests_writing_nothing(
    emulator: Any, configure: Any, isolated_dlt: Path
) -> None:
    configure(emulator)
    before, scratch = tree(isolated_dlt), scratch_folders()
    emulator.stats.reset()

    report = check_setup()

    assert report.exit_code == 0 and report.errors == [], report.text()
    services = emulator.services()
    assert f"{len(services)} visible (every service" in line(report, "services")
    users = [c.detail for c in report.checks if c.what == "users"]
    assert sorted(users) == sorted(
        f"{s['sid']} ({s['friendly_name']}): {len(emulator.users(s['sid']))} listed"
        for s in services
    )
    assert f"account {emulator.account_sid} with its auth token" in line(report, "credentials")
    assert f"{emulator.base_url} answered: loopback" in line(report, "origin")
    assert "duckdb ./twilio_conversations.duckdb: not created yet" in line(report, "destination")
    # One page of services, then one page of users per service (at most MAX_SERVICES of them):
    # the bound holds whatever the account's size; here every service is looked at.
    sent = emulator.stats.snapshot().total
    assert sent == report.requests == 1 + min(len(services), MAX_SERVICES)
    assert f"· {sent} API request(s) answered (0 retries)" in report.lines[-1]
    assert report.lines[-1].startswith(f"check: all {len(report.checks)} checks ok")
    # Nothing written: no DuckDB file, no pipeline folder (DLT_DATA_DIR), no scratch folder left.
    assert tree(isolated_dlt) == before
    assert not (isolated_dlt / "twilio_conversations.duckdb").exists()
    assert not (isolated_dlt / ".dlt_data").exists()
    assert scratch_folders() == scratch


def test_after_a_run_the_check_changes_no_byte_of_its_file_or_state(
    emulator: Any, configure: Any, isolated_dlt: Path, capsys: Any
) -> None:
    configure(emulator)
    assert run_line(capsys) == (0, [])
    before = tree(isolated_dlt)
    assert any(name.startswith(".dlt_data/") for name in before)  # the run's pipeline state

    report = check_setup()

    assert report.exit_code == 0, report.text()
    assert "opens, no other process holds it" in line(report, "destination")
    assert re.search(r"twilio: \d+ table\(s\) and view\(s\)$", line(report, "dataset"))
    assert tree(isolated_dlt) == before


def test_a_mistyped_setting_that_widens_nothing_is_a_warning_as_in_a_run(
    emulator: Any, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    configure(emulator, pagesize="10")

    report = check_setup()

    assert report.exit_code == 0, report.text()
    assert line(report, "settings").endswith(
        "resolved as a run resolves them; 1 warning(s) about them above"
    )
    assert "did you mean `page_size`" in caplog.text


def test_more_services_and_users_than_a_page_say_so_without_reading_further(
    start_emulator: Any, configure: Any
) -> None:
    emu = start_emulator(seed=3, services=7, users=USERS_PAGE_SIZE + 5, max_conversations=3)
    configure(emu, page_size="6")  # a first page of services shorter than the list
    emu.stats.reset()

    report = check_setup()

    assert report.exit_code == 0, report.text()
    assert len(emu.services()) > 6
    assert f"6+ visible (the list has more pages); users looked at in the first {MAX_SERVICES}" in (
        line(report, "services")
    )
    users = [c.detail for c in report.checks if c.what == "users"]
    assert len(users) == MAX_SERVICES
    # one page each, of the run's page size at most USERS_PAGE_SIZE
    page = min(6, USERS_PAGE_SIZE)
    assert all(u.endswith(f": {page}+ listed (more pages)") for u in users), users
    assert emu.stats.snapshot().total == report.requests == 1 + MAX_SERVICES


def test_configured_users_are_resolved_and_a_missing_one_is_a_warning(
    emulator: Any, configure: Any
) -> None:
    service = emulator.services()[0]["sid"]
    user = emulator.users(service)[0]
    configure(emulator, user_sids=f'["{user["identity"]}", "nobody-here"]')
    emulator.stats.reset()

    report = check_setup()

    assert report.exit_code == 0, report.text()  # a run goes on, and says "not found"
    users = [c for c in report.checks if c.what == "users"]
    found = [c for c in users if c.status == "ok"]
    assert len(found) == 1 and f"found in {service}" in found[0].detail
    assert f"as {user['sid']}" in found[0].detail
    (missing,) = [c for c in users if c.status == "warn"]
    assert "'nobody-here': not in the 2 service(s) checked" in missing.detail
    assert "1 warning(s)" in report.lines[-1]
    # services page + each user looked up per service until found
    assert emulator.stats.snapshot().total == report.requests <= 1 + 2 * len(emulator.services())


# -- the Twilio side fails as the run fails ------------------------------------------------------


def test_wrong_auth_token_gives_the_runs_line_and_exit_code(
    emulator: Any, configure: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(emulator)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    emulator.stats.reset()

    report = check_setup()

    assert emulator.stats.snapshot().total == 1, "one request; a 401 is not retried"
    assert line(report, "credentials").startswith("FAILED   credentials  authentication failed")
    assert "skipped" in line(report, "services")
    assert "wrong-token" not in report.text()
    code, lines = run_line(capsys)
    assert code == report.exit_code == 1
    assert lines == [f"error: {m}" for m in report.errors] and len(lines) == 1


def test_unreachable_origin_fails_with_the_runs_line(
    configure: Any, emulator: Any, capsys: Any
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    configure(emulator, base_url=closed, request_max_attempts="2")

    report = check_setup()

    assert report.exit_code == 1, report.text()
    assert line(report, "origin").startswith(f"FAILED   origin       could not reach {closed}")
    assert "skipped" in line(report, "credentials")
    (message,) = report.errors
    assert message.startswith(f"could not reach {closed}: connection refused")
    code, lines = run_line(capsys)
    attempts = re.compile(r"\(\d+ attempt\(s\) in \d+ s\)")  # the waits are random
    assert code == report.exit_code
    assert [attempts.sub("", x) for x in lines] == [attempts.sub("", f"error: {message}")]


def test_missing_credentials_exit_2_with_the_runs_line(
    emulator: Any, configure: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(emulator)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    emulator.stats.reset()

    report = check_setup()

    assert report.exit_code == 2
    assert line(report, "settings").startswith("FAILED   settings     credentials missing")
    assert emulator.stats.snapshot().total == 0
    # the destination is still checked
    assert line(report, "destination").startswith("ok ")
    assert run_line(capsys) == (2, [f"error: {m}" for m in report.errors])


def test_a_service_the_credentials_cannot_see_is_reported_as_run_reports_it(
    emulator: Any, configure: Any, capsys: Any
) -> None:
    missing = "IS" + "f" * 32
    configure(emulator, service_sids=f'["{missing}"]')

    report = check_setup()

    assert report.exit_code == 2
    assert line(report, "credentials").startswith("ok ")  # the listing was answered
    assert report.errors == [
        f"service {missing} not found: not listed by {emulator.base_url}/v1/Services "
        "for these credentials"
    ]
    assert run_line(capsys) == (2, [f"error: {m}" for m in report.errors])


def test_a_widening_typo_stops_the_check_as_it_stops_the_run(
    emulator: Any, configure: Any, capsys: Any
) -> None:
    configure(emulator, service_sid=f'["{emulator.services()[0]["sid"]}"]')
    emulator.stats.reset()

    report = check_setup()

    assert report.exit_code == 2 and "did you mean `service_sids`" in report.errors[0]
    assert emulator.stats.snapshot().total == 0
    assert run_line(capsys) == (2, [f"error: {m}" for m in report.errors])


def test_several_accounts_are_each_checked(start_emulator: Any, configure: Any) -> None:
    emu = start_emulator(seed=5, services=1, users=3, max_conversations=2, subaccounts=2)
    configure(emu, subaccounts="true", accounts_base_url=emu.base_url)

    report = check_setup()

    assert report.exit_code == 0, report.text()
    assert line(report, "accounts").startswith(f"ok       accounts     {len(emu.accounts)} listed")
    credentials = [c.detail for c in report.checks if c.what == "credentials"]
    assert len(credentials) == len(emu.accounts)
    datasets = [c.detail for c in report.checks if c.what == "dataset"]
    assert all(d.startswith("twilio_ac") for d in datasets) and len(datasets) == len(emu.accounts)


def test_region_of_names_twilios_regions() -> None:
    assert region_of("https://conversations.twilio.com") == "Twilio region us1 (the default)"
    assert (
        region_of("https://conversations.dublin.ie1.twilio.com")
        == "Twilio region ie1 through edge dublin"
    )
    assert "not the Conversations API's host" in region_of("https://chat.twilio.com")
    assert region_of("http://127.0.0.1:8080").startswith("loopback")
    assert region_of("https://twilio.example.com").startswith("not a Twilio host")


# -- DuckDB --------------------------------------------------------------------------------------

HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
con.execute("select count(*) from information_schema.tables").fetchall()
print("holding", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def duckdb_file(isolated_dlt: Path) -> Path:
    path = isolated_dlt / "twilio_conversations.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema twilio; create table twilio.services (sid varchar)")
    return path


def test_an_existing_duckdb_file_opens_and_stays_as_it_was(
    emulator: Any, configure: Any, duckdb_file: Path, isolated_dlt: Path
) -> None:
    configure(emulator)
    before = tree(isolated_dlt)

    report = check_setup()

    assert report.exit_code == 0, report.text()
    assert "opens, no other process holds it" in line(report, "destination")
    assert line(report, "dataset").endswith("twilio: 1 table(s) and view(s)")
    assert tree(isolated_dlt) == before  # no byte of the file, no .wal, nothing else


@pytest.mark.parametrize("mode", ["ro", "rw"], ids=["reader", "writer"])
def test_a_duckdb_file_another_process_holds_is_named_in_one_line(
    emulator: Any, configure: Any, duckdb_file: Path, mode: str
) -> None:
    configure(emulator)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(duckdb_file), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        report = check_setup()
    finally:
        holder.kill()
        holder.wait()

    assert report.exit_code == 1
    (message,) = report.errors
    assert message.startswith("./twilio_conversations.duckdb is held open by ")
    assert f"(PID {holder.pid}): a run now waits up to 600 s (lock_timeout)" in message
    assert "\n" not in message


def test_a_missing_duckdb_folder_fails(emulator: Any, configure: Any, monkeypatch: Any) -> None:
    configure(emulator)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "/nonexistent-folder/x.duckdb")

    report = check_setup()

    assert report.exit_code == 1
    assert report.errors == [
        "duckdb /nonexistent-folder/x.duckdb: its folder /nonexistent-folder does not exist"
    ]
    assert not os.path.exists("/nonexistent-folder")


def test_an_unknown_destination_gives_the_runs_line(
    emulator: Any, configure: Any, capsys: Any
) -> None:
    configure(emulator)

    report = check_setup("duckdbb")

    assert report.exit_code == 2 and report.errors[0].startswith("unknown destination 'duckdbb'")
    assert line(report, "services").startswith("ok ")  # the API side is still checked
    assert run_line(capsys, "--destination", "duckdbb") == (
        2,
        [f"error: {m}" for m in report.errors],
    )


def test_a_local_filesystem_destination(
    emulator: Any, configure: Any, monkeypatch: Any, isolated_dlt: Path
) -> None:
    configure(emulator)
    monkeypatch.setenv("DESTINATION__FILESYSTEM__BUCKET_URL", str(isolated_dlt / "lake"))

    report = check_setup("filesystem")

    assert report.exit_code == 0, report.text()
    assert "lake: not created yet; writable" in line(report, "destination")
    assert not (isolated_dlt / "lake").exists()


def test_a_destination_without_sql_is_configured_but_not_reached(
    emulator: Any, configure: Any
) -> None:
    configure(emulator)

    report = check_setup("dummy")

    assert report.exit_code == 0, report.text()
    assert line(report, "destination") == (
        "skipped  destination  dummy: configured; reachability not checked"
    )


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_reachable_and_writable_creates_nothing(
    emulator: Any, configure: Any, monkeypatch: Any, postgres_server: str
) -> None:
    configure(emulator)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres_server)
    dataset = "check_" + hashlib.blake2b(os.getcwd().encode(), digest_size=6).hexdigest()

    report = check_setup("postgres", dataset)

    assert report.exit_code == 0, report.text()
    assert "connected as postgres; may create schemas" in line(report, "destination")
    assert line(report, "dataset").endswith(f"{dataset}: not created yet; postgres may create it")
    import psycopg2

    with psycopg2.connect(postgres_server) as con, con.cursor() as cursor:
        cursor.execute("select count(*) from pg_namespace where nspname like %s", (dataset + "%",))
        assert cursor.fetchone() == (0,)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found or (candidates[-1] if candidates else None)


PASSWORD = "right-password"


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[str]:
    """A PostgreSQL server that checks passwords (scram-sha-256; the session's server trusts
    every connection, so a wrong password would pass there); yields its host:port."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    base = Path(tempfile.mkdtemp(prefix="tc-pg-scram-"))
    run_as: list[str] = []
    (base / "pw").write_text(PASSWORD + "\n")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        for path in (base, base / "pw"):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = base / "data"
    init = [initdb, "-D", str(data), "-U", "postgres", "--auth=scram-sha-256"]
    try:
        subprocess.run(
            [*run_as, *init, f"--pwfile={base / 'pw'}", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-w",
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_postgres_wrong_password_gives_the_runs_line(
    emulator: Any, configure: Any, monkeypatch: Any, password_postgres: str, capsys: Any
) -> None:
    configure(emulator)
    url = f"postgresql://postgres:wrong-password@{password_postgres}/postgres"
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)

    report = check_setup("postgres")

    assert report.exit_code == 1
    (message,) = report.errors
    assert 'password authentication failed for user "postgres"' in message
    assert "wrong-password" not in report.text()
    assert run_line(capsys, "--destination", "postgres") == (1, [f"error: {message}"])


@pytest.mark.postgres
def test_postgres_user_without_create_privilege_fails(
    emulator: Any, configure: Any, monkeypatch: Any, password_postgres: str
) -> None:
    import psycopg2

    admin = f"postgresql://postgres:{PASSWORD}@{password_postgres}/postgres"
    with psycopg2.connect(admin) as con, con.cursor() as cursor:
        cursor.execute("drop role if exists reader; create role reader login password 'r-pass'")
    configure(emulator)
    monkeypatch.setenv(
        "DESTINATION__POSTGRES__CREDENTIALS",
        f"postgresql://reader:r-pass@{password_postgres}/postgres",
    )

    report = check_setup("postgres")

    assert report.exit_code == 1
    assert "connected as reader" in line(report, "destination")
    assert line(report, "dataset").startswith("FAILED   dataset ")
    assert report.errors == [
        "postgres: reader may not create schemas in this database (CREATE privilege): a run "
        "could not create the dataset twilio"
    ]
