"""`dlt.sources.incremental("date_updated", initial_value=…, end_value=…)` as the window, the way
dlt users and orchestrators' backfills pass one: the same rows as start_date/end_date, decided per
user, and no cursor state of its own. Expected rows: the emulator's truth, filtered here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dlt
import pytest
from mirror import assert_user_conversations_mirror
from twilio_conversations import twilio_conversations
from twilio_conversations.credentials import TwilioCredentials
from twilio_conversations.errors import ConfigurationError


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def test_an_incremental_on_date_updated_is_the_window(emulator: Any, run_pipeline: Any) -> None:
    truth = emulator.all_user_conversations()
    stamps = sorted(r["date_updated"] for r in truth)
    start, end = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    window = dlt.sources.incremental("date_updated", initial_value=start, end_value=end)
    outcome = run_pipeline(emulator, date_updated=window)
    loaded = assert_user_conversations_mirror(
        outcome.pipeline, truth, Window(moment(start), moment(end))
    )
    assert loaded == sum(1 for s in stamps if start <= s < end)
    resources = outcome.pipeline.state["sources"]["twilio_conversations"]["resources"]
    assert "incremental" not in resources["user_conversations"], "no cursor state of its own"

    # A later interval with an open end brings in the newer rows and drops nothing it should keep.
    later = dlt.sources.incremental("date_updated", initial_value=start)
    wider = run_pipeline(emulator, date_updated=later)
    assert assert_user_conversations_mirror(wider.pipeline, truth, Window(moment(start), None)) == (
        sum(1 for s in stamps if s >= start)
    )


def credentials() -> TwilioCredentials:
    given = TwilioCredentials()
    given.account_sid, given.auth_token = "AC" + "0" * 32, "x" * 32
    return given


@pytest.mark.parametrize(
    ("incremental", "extra", "message"),
    [
        (dlt.sources.incremental("date_created"), {}, "cursor_path is 'date_created'"),
        (
            dlt.sources.incremental("date_updated", initial_value="2024-01-01", range_start="open"),
            {},
            "range_start='open' is not supported",
        ),
        (
            dlt.sources.incremental("date_updated", initial_value="2024-01-01"),
            {"start_date": "2023-01-01"},
            "date_updated and start_date both set the window",
        ),
        (
            dlt.sources.incremental("date_updated", initial_value="last tuesday"),
            {},
            "date_updated initial_value 'last tuesday' is not an ISO 8601",
        ),
    ],
    ids=["other-cursor", "open-start", "two-windows", "bad-timestamp"],
)
def test_a_window_the_source_cannot_honour_is_refused_in_one_line(
    incremental: Any, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        twilio_conversations(credentials=credentials(), date_updated=incremental, **extra)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
