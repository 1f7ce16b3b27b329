"""Bad input gets one clear `error:` line and exit code 2 before any request; unusual but valid
input (odd identities, edge page sizes, empty services, unknown users) is handled correctly.

Cases already in tests/twilio_conversations/test_cli.py (IS123, a US-lookalike, page_size 0 and
5000, a base_url without scheme, plain http off loopback, missing credentials, an unknown
service) are not repeated. The CLI's `main()` runs in-process here: the same code path as the
console script, without paying for an interpreter start per case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from twilio_conversations import cli

from .helpers import FAST_RETRIES, assert_exact_mirror


@pytest.fixture
def tiny(start_emulator: Any) -> Any:
    return start_emulator(seed=12, services=1, users=4, max_conversations=12)


@pytest.fixture
def main(tiny: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`main(*args, **env)` -> (exit code, stdout, stderr lines), against the `tiny` emulator."""

    def _main(*args: str, **env: str) -> tuple[int, str, list[str]]:
        settings = {
            "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": tiny.base_url,
            "TWILIO_ACCOUNT_SID": tiny.account_sid,
            "TWILIO_AUTH_TOKEN": tiny.auth_token,
            "SOURCES__TWILIO_CONVERSATIONS__REQUEST_MAX_ATTEMPTS": "3",
            "SOURCES__TWILIO_CONVERSATIONS__REQUEST_MAX_RETRY_DELAY": "0.1",
            **env,
        }
        with monkeypatch.context() as patch:
            for name, value in settings.items():
                patch.setenv(name, value)
            code = cli.main(["run", "--progress", "none", *args])
        out, err = capsys.readouterr()
        return code, out, err.strip().splitlines()

    return _main


URL_WITH_TOKEN = "https://AC" + "1" * 32 + ":tok-in-url-9z@conversations.twilio.com"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--service-sid", "IS" + "A" * 32], {}, "is not a Conversation Service SID"),
        (["--service-sid", " "], {}, "service_sids contains an empty value"),
        (["--user-sid", "x" * 257], {}, "neither a User SID nor an identity of 1-256"),
        (["--max-workers", "0"], {}, "max_workers 0 must be from 1 to 256"),
        (["--max-workers", "257"], {}, "max_workers 257 must be from 1 to 256"),
        (["--page-size", "-1"], {}, "page_size -1 must be an integer from 1 to 1000"),
        (["--start-date", "2024-02-01", "--end-date", "2024-01-01"], {}, "must be after"),
        ([], {"TWILIO_ACCOUNT_SID": "AC123"}, "account_sid 'AC123' is not an Account SID"),
        ([], {"TWILIO_API_KEY": "SK1", "TWILIO_API_SECRET": "s"}, "is not an API Key SID"),
        ([], {"TWILIO_API_KEY": "SK" + "a" * 32}, "must be set together"),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__PAGE_SIZE": "many"}, "page_size"),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD": "-5"}, "users_per_load must be"),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD": "lots"}, "users_per_load"),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "https://"}, "must be an absolute URL"),
        ([], {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "ftp://127.0.0.1"}, "absolute URL"),
        (
            [],
            {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "https://conversations.twilio.com/v1"},
            "must be scheme and host only",
        ),
        (
            [],
            {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": URL_WITH_TOKEN},
            "base_url must not contain credentials",
        ),
        pytest.param(
            [],
            {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "http://127.0.0.1:port"},
            "base_url",
        ),
        pytest.param(
            [],
            {"SOURCES__TWILIO_CONVERSATIONS__BASE_URL": "http://[::1"},
            "base_url",
        ),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2_before_any_request(
    tiny: Any, main: Any, args: list[str], env: dict[str, str], message: str
) -> None:
    tiny.stats.reset()
    code, out, lines = main(*args, **env)
    assert (code, len(lines)) == (2, 1), lines
    assert lines[0].startswith("error: ") and message in lines[0], lines
    assert tiny.stats.snapshot().total == 0
    assert "tok-in-url-9z" not in out + "".join(lines)


def test_base_url_errors_never_echo_an_embedded_secret(main: Any) -> None:
    code, out, lines = main(
        SOURCES__TWILIO_CONVERSATIONS__BASE_URL="AC" + "1" * 32 + ":tok-in-url-9z@example.com"
    )
    assert code == 2 and len(lines) == 1
    assert "tok-in-url-9z" not in out + "".join(lines)


def test_non_integer_page_size_flag_is_a_usage_error(main: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        main("--page-size", "ten")
    assert exit_.value.code == 2  # argparse: usage, then "error: ... invalid int value: 'ten'"


@pytest.mark.parametrize(
    "identity",
    ["a/b?c#d%e ü+x@example.com", "percent%2Fencoded", "日本語 ユーザー", "dots/../../etc"],
)
def test_identities_with_reserved_and_unicode_characters_load(
    tiny: Any, main: Any, tmp_path: Path, identity: str
) -> None:
    service = tiny.default_service_sid
    user = tiny.store.create_user(service, identity)
    conversation = tiny.store.create_conversation(service, friendly_name="odd identity")
    tiny.store.join(service, user, conversation)
    code, out, lines = main("--user-sid", identity)
    assert code == 0, lines
    assert "users          1 scanned" in out, out
    with duckdb.connect(str(tmp_path / "twilio_conversations.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select user_sid, conversation_sid from twilio.user_conversations"
        ).fetchall()
    assert rows == [(user, conversation)]


def test_unknown_users_are_reported_not_fatal(tiny: Any, main: Any) -> None:
    unknown_sid = "US" + "0" * 32
    code, out, lines = main("--user-sid", unknown_sid, "--user-sid", "nobody@example.com")
    assert code == 0 and lines == [], lines
    assert f"not found      user '{unknown_sid}' is in no scanned service" in out
    assert "not found      user 'nobody@example.com' is in no scanned service" in out


@pytest.mark.parametrize("page_size", [1, 1000])
def test_edge_page_sizes_mirror_exactly(tiny: Any, run_pipeline: Any, page_size: int) -> None:
    outcome = run_pipeline(tiny, page_size=page_size, **FAST_RETRIES)
    assert_exact_mirror(outcome.pipeline, tiny)
    rows = len(tiny.all_user_conversations())
    if page_size == 1:  # one request per row, at least: every page was followed
        assert outcome.report.requests.requests >= rows


def test_empty_services_load_cleanly_and_later_users_arrive(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = start_emulator(seed=13, services=2, users=0)
    first = run_pipeline(emu, **FAST_RETRIES)
    assert first.rows_written == {"services": 2, "users": 0, "user_conversations": 0}
    assert first.report.users_scanned == 0
    service = emu.services()[1]["sid"]
    user = emu.store.create_user(service, "first@example.com")
    emu.store.join(service, user, emu.store.create_conversation(service, friendly_name="hi"))
    second = run_pipeline(emu, **FAST_RETRIES)
    assert second.rows_written == {"services": 0, "users": 1, "user_conversations": 1}
    assert_exact_mirror(second.pipeline, emu)
