"""The command line: every flag documented, flags mapped to the config, a real serve + Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest
import requests
from twilio_emulator import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, cli

FLAGS = [
    "--host",
    "--port",
    "--public-url",
    "--account-sid",
    "--auth-token",
    "--api-key-sid",
    "--api-key-secret",
    "--seed",
    "--services",
    "--users",
    "--max-conversations",
    "--conversations-per-user",
    "--page-size-policy",
    "--latency-ms",
    "--fault-rate",
    "--fault-kinds",
    "--fault-seed",
    "--retry-after",
    "--slow-ms",
    "--account-concurrency",
    "--other-traffic",
    "--limit-retry-after",
    "--verbose",
]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_help_documents_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twilio_emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for flag in FLAGS:
        assert re.search(rf"{flag}\b[^\n]*\n?\s+\S", result.stdout), flag
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for action in parser._actions:  # noqa: SLF001
        assert action.help, action.option_strings


def test_flags_map_to_the_config() -> None:
    args = _parse(
        "--port=0",
        "--seed=9",
        "--services=2",
        "--users=7",
        "--max-conversations=60",
        "--conversations-per-user=4",
        "--latency-ms=5",
        "--fault-rate=0.25",
        "--fault-kinds=503,drop",
        "--page-size-policy=strict",
        "--api-key-sid=SK" + "2" * 32,
        "--api-key-secret=s",
    )
    config = cli.config_from_args(args)
    assert config.port == 0 and config.host == "127.0.0.1"
    assert (config.data.seed, config.data.services, config.data.users) == (9, 2, 7)
    assert config.data.max_conversations == 60 and config.data.conversations_per_user == 4
    assert config.latency_ms == 5 and config.fault_rate == 0.25
    assert config.fault_kinds == ("503", "drop") and config.page_size_policy == "strict"
    assert config.account_sid == DEMO_ACCOUNT_SID and config.auth_token == DEMO_AUTH_TOKEN
    assert config.api_key_sid == "SK" + "2" * 32


@pytest.mark.parametrize(
    "argv",
    [["--fault-rate=2"], ["--page-size-policy=loose"], ["--users=-1"], ["--port=x"]],
)
def test_bad_flags_are_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_unknown_fault_kind_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_parse("--port=0", "--fault-kinds=teapot")) == 2
    assert "teapot" in capsys.readouterr().err


# `python -m twilio_emulator` that dumps every thread's stack on SIGUSR1, so a test that finds
# it still running can say where it was.
_EMULATOR_WITH_STACK_DUMPS = (
    "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1); "
    "from twilio_emulator.cli import main; sys.exit(main())"
)


def test_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _EMULATOR_WITH_STACK_DUMPS,
            "--port",
            "0",
            "--users",
            "3",
            "--services",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=30), "no output from the emulator"
        first = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        credentials = process.stdout.readline()  # the demo's token opens nothing real: shown
        assert f"account SID {DEMO_ACCOUNT_SID}, auth token {DEMO_AUTH_TOKEN}" in credentials
        response = requests.get(
            f"{match.group(1)}/v1/Users", auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN), timeout=10
        )
        assert response.status_code == 200 and len(response.json()["users"]) == 3
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)
            time.sleep(1)
            process.kill()
            _, stderr = process.communicate()
            pytest.fail(f"still running 30 s after SIGINT; its threads:\n{stderr}")
        assert code == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigint_stops_it_even_when_the_parent_ignored_sigint() -> None:
    """Background jobs of non-interactive shells (and some test runners' workers) start with
    SIGINT ignored, which Python keeps; Ctrl-C / `kill -INT` must stop the emulator anyway."""
    process = subprocess.Popen(
        [sys.executable, "-m", "twilio_emulator", "--port", "0", "--users", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_banner_shows_the_demo_token_but_not_a_given_one() -> None:
    demo = cli._credential_lines(cli.config_from_args(_parse("--port=0")), "http://127.0.0.1:1")
    assert f"TWILIO_AUTH_TOKEN={DEMO_AUTH_TOKEN} " in demo[-1]
    assert demo[-1].endswith("twilio-conversations run --base-url http://127.0.0.1:1")
    given = _parse(
        "--port=0", "--auth-token=t0ps3cret", "--api-key-sid=SK1", "--api-key-secret=k3y"
    )
    lines = cli._credential_lines(cli.config_from_args(given), "http://127.0.0.1:1")
    assert "t0ps3cret" not in "".join(lines) and "k3y" not in "".join(lines)
    assert any("API key SID SK1" in line for line in lines)
