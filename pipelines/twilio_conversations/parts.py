"""How a caller drives a run of the source: in several load packages ("parts"), each of about
`users_per_load` users, with what it read from the destination before the extract."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fingerprints import Held
    from .first_load import FirstLoad


class Parts:
    """How a run of the source is cut into load packages: made by the caller that loads it in
    parts (`loading.load_in_parts`) and given to the source (`parts=`).

    Each extract of the source is one part: `user_conversations` ends it once `size` more users
    are decided and written (`user_conversations.Scan`), and the caller normalizes and loads it
    before extracting the next, so a crash keeps the parts already loaded. `complete` says the
    scan reached its end, in the last part. Without a size (plain `pipeline.run`) the run is one
    part.

    `first_load` and `fingerprints` are what the caller read from the destination before the
    first extract (`loading._read_destination`), where it can wait for a DuckDB file another
    process holds; where it did not, the source reads them itself.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.complete = False
        self.first_load: FirstLoad | None = None  # whether the scan appends (`first_load.py`)
        self.fingerprints: dict[str, dict[str, Held]] | None = None  # (`fingerprints.py`)
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        """Stop what the scan has in flight (its listing, its fetches), where the caller stops
        before the scan is complete (a part failed to load)."""
        for callback in self._on_close:
            callback()
