"""The `date_updated` window: which rows a run considers at all (start date, backfill end)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ConfigurationError


def parse_timestamp(value: str | datetime, *, setting: str) -> datetime:
    """Parse an ISO 8601 date or timestamp as UTC (naive values are taken as UTC)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ConfigurationError(
                f"{setting} {value!r} is not an ISO 8601 date or timestamp (e.g. 2024-01-31 or "
                "2024-01-31T12:00:00Z)"
            ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class UpdatedWindow:
    """Rows with `start <= date_updated < end` are in scope; either bound may be open.

    Like `initial_value`/`end_value` of `dlt.sources.incremental`, but applied to each user's
    list separately, so no user's rows are dropped because another user's are newer.
    """

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def from_config(
        cls,
        start_date: str | datetime | None,
        end_date: str | datetime | None,
        lookback_days: float | None = None,
        now: datetime | None = None,
    ) -> UpdatedWindow:
        """Build the window; `lookback_days` is a rolling start (the later of it and start_date)."""
        start = parse_timestamp(start_date, setting="start_date") if start_date else None
        end = parse_timestamp(end_date, setting="end_date") if end_date else None
        if lookback_days is not None:
            if lookback_days <= 0:
                raise ConfigurationError(f"lookback_days {lookback_days!r} must be positive")
            rolling = (now or datetime.now(UTC)) - timedelta(days=lookback_days)
            start = max(start, rolling) if start else rolling
        if start and end and end <= start:
            raise ConfigurationError(
                f"end_date {end_date!r} must be after start_date {start_date!r}"
            )
        return cls(start, end)

    @classmethod
    def from_incremental(
        cls,
        incremental: Any,
        start_date: str | datetime | None,
        end_date: str | datetime | None,
        lookback_days: float | None = None,
    ) -> UpdatedWindow:
        """The window of a `dlt.sources.incremental("date_updated", initial_value=…,
        end_value=…)`, the way orchestrators hand backfill intervals to dlt sources.

        Only its bounds are used, applied to each user's list (its cursor state would drop
        users' rows, see the class doc); settings the window cannot honour are refused.
        """
        if incremental.cursor_path != "date_updated":
            raise ConfigurationError(
                f"date_updated: the incremental's cursor_path is {incremental.cursor_path!r}; "
                "only 'date_updated' is a window of this source"
            )
        unsupported = [
            f"{name}={value!r}"
            for name, value, default in (
                ("range_start", incremental.range_start, "closed"),
                ("range_end", incremental.range_end, "open"),
                ("last_value_func", incremental.last_value_func, max),
                ("lag", getattr(incremental, "lag", None), None),
            )
            if value != default
        ]
        if unsupported:
            raise ConfigurationError(
                f"date_updated: {', '.join(unsupported)} is not supported: the window is "
                "initial_value <= date_updated < end_value (range_start='closed', "
                "range_end='open')"
            )
        start, end = incremental.initial_value, incremental.end_value
        given = [name for name, value in (("start_date", start_date), ("end_date", end_date))
                 if value is not None]  # fmt: skip
        if given and (start is not None or end is not None):
            raise ConfigurationError(
                f"date_updated and {' and '.join(given)} both set the window: give one of them"
            )
        return cls.from_config(
            parse_timestamp(start, setting="date_updated initial_value") if start else None,
            parse_timestamp(end, setting="date_updated end_value") if end else None,
            lookback_days,
        )

    @property
    def is_open(self) -> bool:
        return self.start is None and self.end is None

    def contains(self, date_updated: str | None) -> bool:
        if self.is_open:
            return True
        if not date_updated:
            return self.start is None
        moment = parse_timestamp(date_updated, setting="date_updated")
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )

    def select(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return (
            list(rows)
            if self.is_open
            else [r for r in rows if self.contains(r.get("date_updated"))]
        )
