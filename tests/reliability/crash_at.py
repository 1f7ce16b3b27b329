"""Run the CLI, or plain dlt's `load_in_parts`, but SIGKILL the process at one chosen point of
dlt's normalize or load step.

    python crash_at.py <point> run [cli args...]
    python crash_at.py <point> load_in_parts

A hook cannot be placed from outside a process at a precise point of a step that takes
milliseconds, so this wrapper installs it inside and then kills its own process with SIGKILL:
the same as `kill -9` arriving at that instant (no cleanup, no `finally`, no atexit). Before
dying it writes the point's name to `$CRASH_MARKER`, so the test knows the hook fired.

Points:
  normalize         normalized files written, the load package not yet committed
  load-copy         user_conversations rows copied into the staging dataset, the job not yet
                    marked complete (it runs again on resume)
  load-merge        the merge into user_conversations executed, the job not yet marked complete
  load-complete     every job done, the load not yet recorded in _dlt_loads
  after-part-N      the Nth load package of the run completely loaded, the run not yet done
                    (a long run loaded in parts: `users_per_load`)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def die(point: str) -> None:
    Path(os.environ["CRASH_MARKER"]).write_text(point)
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    if point == "normalize":
        from dlt.common.storages.load_storage import LoadStorage

        def commit_new_load_package(self: Any, load_id: str) -> None:
            die(point)

        LoadStorage.commit_new_load_package = commit_new_load_package  # type: ignore[method-assign]
    elif point == "load-copy":
        from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob

        copy_run = DuckDbCopyJob.run

        def run_copy(self: Any) -> None:
            copy_run(self)
            if self.load_table_name == "user_conversations":
                die(point)

        DuckDbCopyJob.run = run_copy  # type: ignore[method-assign]
    elif point == "load-merge":
        from dlt.destinations.job_client_impl import SqlLoadJob

        sql_run = SqlLoadJob.run

        def run_sql(self: Any) -> None:
            sql_run(self)
            if self.load_table_name == "user_conversations":
                die(point)

        SqlLoadJob.run = run_sql  # type: ignore[method-assign]
    elif point == "load-complete":
        from dlt.load.load import Load

        def complete_package(self: Any, *args: Any, **kwargs: Any) -> None:
            die(point)

        Load.complete_package = complete_package  # type: ignore[method-assign]
    elif point.startswith("after-part-"):
        from dlt.load.load import Load

        parts = int(point.removeprefix("after-part-"))
        complete = Load.complete_package
        loaded: list[str] = []

        def complete_part(self: Any, load_id: str, *args: Any, **kwargs: Any) -> None:
            complete(self, load_id, *args, **kwargs)
            loaded.append(load_id)
            if len(loaded) == parts:
                die(point)

        Load.complete_package = complete_part  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    if sys.argv[2] == "load_in_parts":  # a plain dlt pipeline, configured the dlt way
        import dlt
        from twilio_conversations import load_in_parts

        pipeline = dlt.pipeline("twilio_conversations", destination="duckdb", dataset_name="twilio")
        load_in_parts(pipeline)
        sys.exit(0)
    from twilio_conversations.cli import main

    sys.exit(main(sys.argv[2:]))
