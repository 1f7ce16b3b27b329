"""Secrets stay secret: credentials go only to the configured host, never over plain HTTP off
loopback, and never into output, logs, exceptions, dlt's trace or state, files or the
destination."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
import requests_mock as rm
from dlt.pipeline.exceptions import PipelineStepFailed
from mirror import loaded_rows
from twilio_conversations import cli
from twilio_conversations.client import RetryPolicy, TwilioClient
from twilio_conversations.errors import UnsafeUrlError
from twilio_conversations.runner import make_pipeline, run
from twilio_emulator import DataSpec, EmulatorConfig

from .helpers import FAST_RETRIES, assert_exact_mirror, run_cli

REPO = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "5ec7e7" * 5 + "ab"
TOKEN = "tok-Zq8v1Xw3Kp9Lm2Rt"  # distinctive, appears nowhere unless leaked
KEY_SID = "SK" + "0a1b2c3d" * 4
KEY_SECRET = "sec-Hj4Nb7Vc2Mx6Qa0P"


class Recorder:
    """A second loopback server that records every request (path, Authorization) it gets and
    answers with a valid empty page, as a malicious or mistaken host would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.requests.append((self.path, self.headers.get("Authorization")))
                body = json.dumps(
                    {
                        "services": [{"sid": "IS" + "e" * 32}],
                        "users": [],
                        "conversations": [],
                        "meta": {"next_page_url": None},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def emulator_linking_to(start_emulator: Any, other: str, **spec: Any) -> Any:
    """An emulator whose every `*_url` (next_page_url included) points at `other`."""
    data = DataSpec(**{"seed": 4, "services": 2, "users": 12, "max_conversations": 40, **spec})
    return start_emulator(EmulatorConfig(data=data, public_url=other))


def test_next_page_url_on_another_host_is_refused_not_followed(
    start_emulator: Any, run_pipeline: Any, recorder: Recorder
) -> None:
    emu = emulator_linking_to(start_emulator, recorder.url)
    real = f"http://127.0.0.1:{emu.port}"
    with pytest.raises(PipelineStepFailed) as failure:
        run_pipeline(emu, base_url=real, page_size=5, **FAST_RETRIES)
    cause = cli._root_cause(failure.value)
    assert isinstance(cause, UnsafeUrlError)
    line = cli._one_line(cause)
    assert line.startswith(f"refusing next_page_url on another host: {recorder.url}/v1/"), line
    assert recorder.requests == [], "the other host must never be contacted"


def test_urls_and_links_in_records_are_data_never_requests(
    start_emulator: Any, run_pipeline: Any, recorder: Recorder
) -> None:
    # No list needs a second page, so the run succeeds; every url/links field names the other
    # host and is stored as it came, but none is ever requested.
    emu = emulator_linking_to(start_emulator, recorder.url)
    outcome = run_pipeline(emu, base_url=f"http://127.0.0.1:{emu.port}", **FAST_RETRIES)
    assert_exact_mirror(outcome.pipeline, emu)
    links = loaded_rows(outcome.pipeline, "user_conversations", ["url", "links__conversation"])
    assert links and all(r["url"].startswith(recorder.url) for r in links)
    assert recorder.requests == []


def test_redirect_to_another_host_is_refused_not_followed(recorder: Recorder) -> None:
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"{recorder.url}/v1/Services")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        client = TwilioClient(
            f"http://127.0.0.1:{api.server_port}",
            (ACCOUNT_SID, TOKEN),
            RetryPolicy(max_attempts=2, backoff_factor=0.01, max_delay=0.05, timeout=5),
        )
        with pytest.raises(
            UnsafeUrlError, match=r"refusing to follow a redirect \(HTTP 302\)"
        ) as failure:
            list(client.iter_pages("/v1/Services", "services"))
    finally:
        api.shutdown()
        api.server_close()
    assert TOKEN not in str(failure.value)
    assert recorder.requests == [], "a redirect off the configured host is never followed"


def test_next_page_url_downgraded_to_plain_http_is_refused() -> None:
    base = "https://conversations.twilio.com"
    client = TwilioClient(base, (ACCOUNT_SID, TOKEN), RetryPolicy(max_attempts=1))
    page = {"services": [{"sid": "IS1"}], "meta": {"next_page_url": None}}
    with rm.Mocker() as mock:
        mock.get(
            f"{base}/v1/Services",
            json={**page, "meta": {"next_page_url": "http://conversations.twilio.com/v1/S?p=2"}},
        )
        clear = mock.get("http://conversations.twilio.com/v1/S", json=page)
        with pytest.raises(UnsafeUrlError, match="another host"):
            list(client.iter_pages("/v1/Services", "services"))
    assert clear.call_count == 0


# -- secrets never written anywhere ------------------------------------------------------------


def needles(user: str, secret: str) -> list[bytes]:
    """The secret as text, and as it travels: the Basic auth header value."""
    basic = base64.b64encode(f"{user}:{secret}".encode())
    return [secret.encode(), basic, secret.encode("utf-16-le")]


def files_containing(root: Path, patterns: list[bytes], skip: set[Path]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip:
            data = path.read_bytes()
            found.extend(f"{path.relative_to(root)}: {p!r}" for p in patterns if p in data)
    return found


def destination_cells_containing(database: Path, text: str) -> list[str]:
    found = []
    with duckdb.connect(str(database), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns"
        ).fetchall()
        for schema, table, column in columns:
            hits = con.execute(
                f'select count(*) from "{schema}"."{table}" '
                f"where cast(\"{column}\" as varchar) like '%' || ? || '%'",
                [text],
            ).fetchone()
            if hits and hits[0]:
                found.append(f"{schema}.{table}.{column}")
    return found


@pytest.fixture
def secret_emulator(start_emulator: Any) -> Any:
    config = EmulatorConfig(
        account_sid=ACCOUNT_SID,
        auth_token=TOKEN,
        api_key_sid=KEY_SID,
        api_key_secret=KEY_SECRET,
        data=DataSpec(seed=8, services=1, users=8, max_conversations=30),
    )
    return start_emulator(config)


@pytest.mark.parametrize("provided_by", ["dlt-env", "twilio-env-api-key"])
def test_secrets_never_appear_in_output_logs_trace_state_files_or_destination(
    secret_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    provided_by: str,
) -> None:
    emu = secret_emulator
    user, secret = (KEY_SID, KEY_SECRET) if "api-key" in provided_by else (ACCOUNT_SID, TOKEN)
    if provided_by == "dlt-env":  # resolved by dlt itself: it shows up in dlt's trace
        monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__ACCOUNT_SID", user)
        monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__AUTH_TOKEN", secret)
    else:
        monkeypatch.setenv("TWILIO_API_KEY", user)
        monkeypatch.setenv("TWILIO_API_SECRET", secret)
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__BASE_URL", emu.base_url)
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)

    def fresh_pipeline() -> dlt.Pipeline:
        return make_pipeline(
            dlt.destinations.duckdb(str(tmp_path / "test.duckdb")),
            "twilio",
            progress="log",
            pipelines_dir=str(tmp_path / "pipelines"),
        )

    pipeline = fresh_pipeline()
    outcome = run(pipeline, source_kwargs=dict(FAST_RETRIES))
    assert outcome.report.users_scanned == 8  # the credentials were resolved and used
    texts = {
        "summary": cli.format_summary(outcome),
        "trace": str(pipeline.last_trace),
        "trace json": json.dumps(pipeline.last_trace.asdict(), default=str),
        "state": json.dumps(pipeline.state, default=str),
        "load info": str(outcome.load_info),
    }

    # A failing run: the exception, its traceback and the failed run's trace.
    emu.faults.inject("503", count=10_000, path_contains="/Conversations")
    with pytest.raises(PipelineStepFailed) as failure:
        run(fresh_pipeline(), source_kwargs=dict(FAST_RETRIES))
    texts["exception"] = "".join(traceback.format_exception(failure.value))
    texts["error line"] = cli._one_line(cli._root_cause(failure.value))
    texts["failed trace"] = json.dumps(failure.value.pipeline.last_trace.asdict(), default=str)

    captured = capsys.readouterr()
    texts["stdout"], texts["stderr"], texts["logs"] = captured.out, captured.err, caplog.text
    assert "DEBUG" in caplog.text  # the logs really were at DEBUG level
    patterns = needles(user, secret)
    leaks = [name for name, text in texts.items() if any(p.decode() in text for p in patterns[:2])]
    assert leaks == []
    assert files_containing(tmp_path, patterns, set()) == []
    assert destination_cells_containing(tmp_path / "test.duckdb", secret) == []
    assert destination_cells_containing(tmp_path / "test.duckdb", patterns[1].decode()) == []


def test_cli_never_prints_or_writes_secrets_even_at_debug(
    secret_emulator: Any, tmp_path: Path
) -> None:
    """Credentials from `.dlt/secrets.toml`, as the README advises (a fresh process reads it)."""
    emu = secret_emulator
    secrets = tmp_path / ".dlt" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text(
        "[sources.twilio_conversations.credentials]\n"
        f'account_sid = "{ACCOUNT_SID}"\nauth_token = "{TOKEN}"\n'
    )
    debug = {"RUNTIME__LOG_LEVEL": "DEBUG", "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}
    ok = run_cli(emu, "run", "--progress", "log", cwd=tmp_path, **debug)
    assert ok.returncode == 0, ok.stderr
    emu.faults.inject("503", count=10_000, path_contains="/Conversations")
    # TWILIO_CONVERSATIONS_DEBUG re-raises: the full traceback goes to stderr.
    failed = run_cli(
        emu, "run", "--progress", "log", cwd=tmp_path, TWILIO_CONVERSATIONS_DEBUG="1", **debug
    )
    assert failed.returncode != 0 and "Traceback" in failed.stderr
    output = ok.stdout + ok.stderr + failed.stdout + failed.stderr
    assert "DEBUG" in output
    patterns = needles(ACCOUNT_SID, TOKEN)
    assert [p for p in patterns[:2] if p.decode() in output] == []
    assert files_containing(tmp_path, patterns, {secrets}) == []
    assert destination_cells_containing(tmp_path / "test.duckdb", TOKEN) == []


def test_secrets_toml_is_git_ignored_and_only_the_example_is_tracked() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".dlt/secrets.toml"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, ".dlt/secrets.toml must be git-ignored"
    example = subprocess.run(
        ["git", "check-ignore", "-q", ".dlt/example.secrets.toml"], cwd=REPO, check=False
    )
    assert example.returncode == 1, "the example must stay tracked"
    tracked = subprocess.run(
        ["git", "ls-files", "*secrets*"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [".dlt/example.secrets.toml"]
