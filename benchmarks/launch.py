"""Run one command and write its own wall time and resource usage to a JSON file.

Usage: python -I -S launch.py RESULT.json -- CMD ...

Why a launcher: Linux folds the RSS of the process that spawned a child into the child's
``ru_maxrss`` (exec records the old address space's high-water mark, and with vfork that is the
parent's), so a benchmark harness holding 1.7 GB reported 1.7 GB for a contender that peaked at
~500 MB. Spawned from this small process, the contender's ``ru_maxrss`` is its own (plus this
launcher's ~10 MB, below any contender's). Standard library only, so it starts fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: launch.py RESULT.json -- CMD ...", file=sys.stderr)
        return 2
    result_path, cmd = argv[0], argv[2:]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    # The harness stops a contender that runs past its deadline by signalling this launcher.
    signal.signal(signal.SIGTERM, lambda *_: proc.kill())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as out:
        json.dump(
            {
                "wall_s": wall,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
                "returncode": code,
            },
            out,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
