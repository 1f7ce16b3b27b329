"""Hand the memory a finished pipeline step freed back to the operating system.

Extract churns through every row as Python dicts and arrow buffers, normalize through every
user record. Freed, most of that memory stays with the allocators (glibc's heaps, pyarrow's
pool), and the process would carry it into the load, where DuckDB's buffers come on top
(docs/performance.md, "Figures behind the code's choices").
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def release_free_memory() -> None:
    """Return free allocator memory to the OS; best effort, a no-op where unsupported."""
    pyarrow = sys.modules.get("pyarrow")  # not imported: a run that wrote nothing has no pool
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim() -> Callable[[int], int] | None:
    # glibc only: musl and the macOS allocator have no malloc_trim.
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
