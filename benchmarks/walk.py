"""The walk of one user conversation record through the connector: the stack, frame by frame,
where a user's page of conversations is decoded (a worker thread) and where its rows become the
arrow table handed to dlt (dlt's extract thread), for a plain `pipeline.run(twilio_conversations())`
against the emulator. docs/architecture.md reports it.

    .venv/bin/python -m benchmarks.walk
"""

from __future__ import annotations

import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
import twilio_conversations
from twilio_conversations import client, records
from twilio_conversations.credentials import TwilioCredentials
from twilio_emulator import DataSpec, EmulatorConfig, run_emulator

PACKAGE = str(Path(twilio_conversations.__file__).parent)


def _where(frame: traceback.FrameSummary) -> str:
    path = frame.filename
    if path.startswith(PACKAGE):
        return f"twilio_conversations/{os.path.relpath(path, PACKAGE)}:{frame.name}"
    return f"{path.split('site-packages/')[-1].split('/lib/python3')[-1]}:{frame.name}"


def _recording(seen: dict[str, list[str]], name: str, wrapped: Callable[..., Any]) -> Any:
    def record(*args: Any, **kwargs: Any) -> Any:
        if name not in seen and (name != "decoded" or args[1] == "conversations"):
            seen[name] = [_where(f) for f in traceback.extract_stack()[:-1]]
        return wrapped(*args, **kwargs)

    return record


def main() -> None:
    seen: dict[str, list[str]] = {}
    client._decode = _recording(seen, "decoded", client._decode)  # type: ignore[assignment]
    records.user_conversations_table = _recording(  # type: ignore[assignment]
        seen, "to dlt", records.user_conversations_table
    )
    spec = DataSpec(seed=1, services=1, users=5, max_conversations=3)
    with run_emulator(EmulatorConfig(data=spec)) as emu, tempfile.TemporaryDirectory() as work:
        credentials = TwilioCredentials()
        credentials.account_sid, credentials.auth_token = emu.account_sid, emu.auth_token
        pipeline = dlt.pipeline(
            "walk",
            destination=dlt.destinations.duckdb(os.path.join(work, "walk.duckdb")),
            dataset_name="twilio",
            pipelines_dir=os.path.join(work, "pipelines"),
        )
        pipeline.run(
            twilio_conversations.twilio_conversations(
                credentials=credentials, base_url=emu.base_url
            )
        )
    for name, frames in seen.items():
        ours = [f for f in frames if f.startswith("twilio_conversations/")]
        modules = {f.split(":")[0] for f in ours}
        counts = f"{len(ours)} of the connector's in {len(modules)} modules"
        print(f"{name}: {len(frames)} frames, {counts}")
        for frame in frames:
            print(f"    {frame}")


if __name__ == "__main__":
    main()
