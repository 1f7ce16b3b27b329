"""The console script as a user or a scheduler runs it: a real process, against the emulator."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "twilio_conversations.cli"]


def emulator_env(emu: Any, **extra: str) -> dict[str, str]:
    """This process's environment plus the emulator's credentials (Twilio's variable names)."""
    return {
        **os.environ,
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        **extra,
    }


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`twilio-conversations <args>` in `cwd`, waited for, its output captured."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=os.environ.copy() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def banner(process: subprocess.Popen[str]) -> list[str]:
    """The emulator's lines up to the one about its data (it prints them at once, flushed)."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    assert selector.select(timeout=60), "no output from the emulator"
    lines: list[str] = []
    while not lines or not lines[-1].startswith("Data:"):
        line = process.stdout.readline()  # the rest may already sit in the pipe's buffer
        assert line, f"the emulator exited: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


@contextmanager
def serving(*command: str | Path) -> Iterator[tuple[str, list[str]]]:
    """The emulator as a process of its own (`command`, e.g. `twilio-emulator --port 0 ...`):
    its base URL and banner lines while the block runs, then Ctrl-C."""
    process = subprocess.Popen(
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = banner(process)
        url = re.search(r"listening on (http://\S+)", lines[0])
        assert url, lines
        yield url.group(1), lines
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
