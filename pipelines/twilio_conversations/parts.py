"""How a caller drives a run of the source: in several load packages ("parts"), each of about
`users_per_load` users, reading the destination in the caller's way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Wait(Protocol):
    """Runs a read of the destination, waiting as the caller does for a DuckDB file another
    process holds (`file_lock.FileAccess.call`)."""

    def __call__(self, step: Callable[[], T]) -> T: ...


def at_once(step: Callable[[], T]) -> T:
    return step()


class Parts:
    """How a run of the source is cut into load packages: made by the caller that loads it in
    parts (`loading.load_in_parts`) and given to the source (`parts=`).

    Each extract of the source is one part: `user_conversations` ends it once `size` more users
    are decided and written (`user_conversations.Scan`), and the caller normalizes and loads it
    before extracting the next, so a crash keeps the parts already loaded. `complete` says the
    scan reached its end, in the last part. Without a size (plain `pipeline.run`) the run is one
    part. `wait`: how the source reads the destination (whether the run appends, the
    fingerprints), where the caller waits for a DuckDB file another process holds.
    """

    def __init__(self, size: int | None = None, wait: Wait = at_once) -> None:
        self.size = size
        self.complete = False
        self.wait = wait
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        """Stop what the scan has in flight (its listing, its fetches), where the caller stops
        before the scan is complete (a part failed to load)."""
        for callback in self._on_close:
            callback()
