"""A run loaded in several load packages ("parts"), each of about `users_per_load` users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .report import RunReport

PAUSE = object()  # yielded by a resource's run at the end of a part (see `Parts`)


class Parts:
    """A run loaded in several load packages ("parts") of about `report.users_per_load` users.

    Each resource's run is one generator for the whole run (`resume` keeps it between the
    extracts): `user_conversations` yields `PAUSE` once a part's users are decided and written,
    which ends this extract's share of it. The caller (the runner) extracts, normalizes and
    loads again while `unfinished`, so a crash keeps the parts already loaded; deletions are
    still decided only at the end of a complete listing, in the last part. A part also ends
    once where a service's last fetches drain, if that is worth it
    (`user_conversations._worth_a_part_while_draining`). Without `users_per_load` (plain dlt)
    there is one part.
    """

    def __init__(self, report: RunReport) -> None:
        self.report = report
        self._runs: dict[str, Iterator[Any]] = {}
        self._finished: set[str] = set()

    @property
    def size(self) -> int | None:
        return self.report.users_per_load

    def resume(self, name: str, start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """This extract's part of the run of resource `name` (started by `start` the first
        time)."""
        if name in self._finished:
            return
        run = self._runs.setdefault(name, start())
        try:
            for item in run:
                if item is PAUSE:
                    return
                yield item
            self._finished.add(name)
            self._runs.pop(name, None)
        finally:
            self.report.unfinished = bool(self._runs)
