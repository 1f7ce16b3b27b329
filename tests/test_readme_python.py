"""The README's Python blocks, run as written, in order, in a fresh folder against the emulator
(with the credentials and base URL the README tells to set), each as a process of its own. The
result is checked against the emulator's truth, not against what the blocks print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_every_python_block_of_the_readme_runs_as_written(
    emulator: Any, isolated_dlt: Path
) -> None:
    assert len(BLOCKS) >= 3, "the README's Python blocks: the dlt way, load_in_parts, reading"
    for block in BLOCKS:
        # The install the README gives has no pandas (the notebooks extra brings it).
        assert ".df()" not in block and "import pandas" not in block, block
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": emulator.account_sid,
        "TWILIO_AUTH_TOKEN": emulator.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emulator.base_url,
    }
    for block in BLOCKS:
        done = subprocess.run(
            [sys.executable, "-c", block],
            cwd=isolated_dlt,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block}\n{done.stderr}"

    # Its own file, not the CLI's (`twilio_conversations.duckdb`), holding the emulator's rows.
    assert not (isolated_dlt / "twilio_conversations.duckdb").exists()
    with duckdb.connect(str(isolated_dlt / "my_twilio.duckdb"), read_only=True) as con:
        [(rows,)] = con.sql("SELECT count(*) FROM twilio.user_conversations").fetchall()
        [(views,)] = con.sql(
            "SELECT count(*) FROM information_schema.views WHERE table_schema = 'twilio'"
        ).fetchall()
    assert rows == len(emulator.all_user_conversations())
    assert views == 3
