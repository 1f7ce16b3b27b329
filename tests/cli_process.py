"""The console script as a user or a scheduler runs it: a real process, against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
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
