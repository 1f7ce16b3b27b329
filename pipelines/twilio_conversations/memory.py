"""Hand the memory a finished pipeline step freed back to the operating system.

Extract churns through every row as Python dicts and arrow buffers, normalize through every
user record. Freed, most of that memory stays with the allocators (glibc's heaps, pyarrow's
pool), and the process would carry it into the load, where DuckDB's buffers come on top
(docs/performance.md, "Figures behind the code's choices").
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dlt.common.pipeline import SupportsPipeline
from dlt.pipeline import trace

# dlt steps before which the memory of the previous one is released.
_RELEASE_BEFORE = ("normalize", "load")


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


class _ReleaseBetweenSteps:
    """A dlt tracking module (`SupportsTracking`): dlt calls it as each step of a run starts."""

    def __init__(self, pipeline: SupportsPipeline) -> None:
        self.pipeline = pipeline

    def on_start_trace(self, trace: Any, step: str, pipeline: SupportsPipeline) -> None:
        pass

    def on_start_trace_step(self, trace: Any, step: str, pipeline: SupportsPipeline) -> None:
        if pipeline is self.pipeline and step in _RELEASE_BEFORE:
            release_free_memory()

    def on_end_trace_step(
        self,
        trace: Any,
        step: Any,
        pipeline: SupportsPipeline,
        step_info: Any,
        send_state: bool,
    ) -> None:
        pass

    def on_end_trace(self, trace: Any, pipeline: SupportsPipeline, send_state: bool) -> None:
        pass


@contextmanager
def released_between_steps(pipeline: SupportsPipeline) -> Iterator[None]:
    """While in the block, freed memory goes back to the OS before `pipeline` normalizes and
    before it loads (dlt's tracking modules are its hook for "a step starts")."""
    module = _ReleaseBetweenSteps(pipeline)
    trace.TRACKING_MODULES.append(module)
    try:
        yield
    finally:
        trace.TRACKING_MODULES.remove(module)
