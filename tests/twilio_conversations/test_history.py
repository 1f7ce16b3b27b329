"""History mode, from its first load: at every load's moment, the versions valid then are what
the API returned then, field by field.

The emulator's truth is snapshotted after each run; the moment of run i is any instant between
its end and the next run's start. Every kind of change is applied through the emulator's real
write endpoints (joins, leaves, a user leaving everything, a deleted user, read state moving
without `date_updated`), and one run changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from changes_scenario import apply_every_change
from mirror import (
    USER_CONVERSATION_KEY,
    assert_rows_equal,
    assert_user_conversations_mirror,
    expected_user_conversations,
    loaded_table,
)
from twilio_writes import TwilioWrites

HISTORY = "user_conversations_history"


def valid_at(pipeline: Any, moment: datetime) -> Any:
    return loaded_table(
        pipeline,
        HISTORY,
        USER_CONVERSATION_KEY,
        where="_dlt_valid_from <= %s AND (_dlt_valid_to IS NULL OR _dlt_valid_to > %s)",
        params=(moment, moment),
    )[0]


def count(pipeline: Any, where: str = "TRUE") -> int:
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name(HISTORY)
        return int(client.execute_sql(f"SELECT count(*) FROM {table} WHERE {where}")[0][0])


def changed_or_gone(before: dict[Any, Any], after: dict[Any, Any]) -> int:
    """Rows of `before` that `after` changed or does not have: the versions a load closes (and,
    with the arguments swapped, the versions it adds)."""
    return sum(1 for key, row in before.items() if after.get(key) != row)


def test_versions_valid_at_each_load_are_what_the_api_returned(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    snapshots: list[dict[Any, Any]] = []
    moments: list[datetime] = []

    def load() -> Any:
        outcome = run_pipeline(emulator, history=True, **destination)
        snapshots.append(expected_user_conversations(emulator.all_user_conversations()))
        moments.append(datetime.now(UTC))
        return outcome

    first = load()
    # From the very first load: validity columns, and every version valid from its load.
    assert count(first.pipeline) == len(snapshots[0]) > 0
    assert count(first.pipeline, "_dlt_valid_from IS NULL") == 0

    scenario = apply_every_change(emulator)
    assert scenario.deleted_users and scenario.emptied_users
    load()

    versions = count(first.pipeline)
    unchanged = load()
    assert unchanged.rows_written[HISTORY] == 0
    assert count(first.pipeline) == versions, "an unchanged run adds no version"

    # Read state moves without date_updated; a user is deleted with all their rows.
    api = TwilioWrites(emulator)
    service = emulator.services()[1]["sid"]
    users = [
        u["sid"] for u in emulator.users(service) if emulator.user_conversations(service, u["sid"])
    ]
    reader, deleted = users[0], users[1]
    row = emulator.user_conversations(service, reader)[0]
    api.set_read_state(service, reader, row["conversation_sid"], NotificationLevel="muted")
    api.delete_user(service, deleted)
    last = load()

    assert count(last.pipeline, "_dlt_valid_from IS NULL") == 0
    for i, (moment, truth) in enumerate(zip(moments, snapshots, strict=True)):
        assert_rows_equal(truth, valid_at(last.pipeline, moment), f"{HISTORY} at load {i + 1}")
    # Closed are exactly the versions that changed or vanished, load by load.
    transitions = list(zip(snapshots, snapshots[1:], strict=False))
    closed = sum(changed_or_gone(before, after) for before, after in transitions)
    added = sum(changed_or_gone(after, before) for before, after in transitions)
    assert count(last.pipeline, "_dlt_valid_to IS NOT NULL") == closed
    assert count(last.pipeline) == len(snapshots[0]) + added


def test_history_turned_on_later_starts_from_the_whole_current_state(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    """A pipeline that ran without history, then with it: the first history load records every
    current row, not only the rows that happened to change, so the versions valid from then on
    are the API's."""
    run_pipeline(emulator, **destination)
    service = emulator.services()[0]["sid"]
    user = next(
        u["sid"] for u in emulator.users(service) if emulator.user_conversations(service, u["sid"])
    )
    row = emulator.user_conversations(service, user)[0]
    TwilioWrites(emulator).set_read_state(
        service, user, row["conversation_sid"], NotificationLevel="muted"
    )
    first_history = run_pipeline(emulator, history=True, **destination)
    truth = expected_user_conversations(emulator.all_user_conversations())
    moment = datetime.now(UTC)
    assert_rows_equal(truth, valid_at(first_history.pipeline, moment), HISTORY)
    assert count(first_history.pipeline, "_dlt_valid_from IS NULL") == 0

    unchanged = run_pipeline(emulator, history=True, **destination)
    assert unchanged.rows_written == {
        "services": 0,
        "users": 0,
        "user_conversations": 0,
        HISTORY: 0,
    }


def current_versions(pipeline: Any) -> Any:
    return loaded_table(pipeline, HISTORY, USER_CONVERSATION_KEY, where="_dlt_valid_to IS NULL")[0]


def test_history_is_kept_by_every_run_once_the_dataset_has_it(
    emulator: Any, run_pipeline: Any
) -> None:
    """History is the dataset's, not a run's: a run without the flag (here a plain
    `pipeline.run(twilio_conversations())`, as an orchestrator runs it) keeps it too, so the
    current versions equal the mirror after every run and none is left open for a membership
    that ended."""
    from twilio_conversations import twilio_conversations
    from twilio_conversations.credentials import TwilioCredentials

    api = TwilioWrites(emulator)

    def end_a_membership() -> None:
        api.leave(*_a_membership(emulator))

    def assert_current_is_the_mirror(pipeline: Any) -> None:
        truth = expected_user_conversations(emulator.all_user_conversations())
        assert_rows_equal(truth, current_versions(pipeline), HISTORY)

    first = run_pipeline(emulator, history=True)
    pipeline = first.pipeline
    assert_current_is_the_mirror(pipeline)

    end_a_membership()
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = emulator.account_sid, emulator.auth_token
    pipeline.run(twilio_conversations(credentials=credentials, base_url=emulator.base_url))
    assert_current_is_the_mirror(pipeline)

    end_a_membership()
    without_flag = run_pipeline(emulator)  # the CLI's runner, no flag either
    assert without_flag.rows_written[HISTORY] > 0, "history was not written"
    assert_current_is_the_mirror(pipeline)

    end_a_membership()
    run_pipeline(emulator, history=True)
    assert_current_is_the_mirror(pipeline)


def test_a_dataset_without_history_gets_no_history_table(emulator: Any, run_pipeline: Any) -> None:
    outcome = run_pipeline(emulator)
    assert HISTORY not in outcome.rows_written
    assert not has_history_table(outcome.pipeline)


def test_history_turned_off_on_purpose_is_no_longer_written_and_says_so(
    emulator: Any, run_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`history = false` (or `--no-history`) is the one way to stop keeping history: the table
    stays as the last history run left it, and every such run warns that it is not current."""
    first = run_pipeline(emulator, history=True)
    versions = count(first.pipeline)
    TwilioWrites(emulator).leave(*_a_membership(emulator))
    off = run_pipeline(emulator, history=False)
    assert off.rows_written[HISTORY] == 0
    assert count(first.pipeline) == versions
    assert "history = false: user_conversations_history is no longer kept current" in caplog.text
    assert_user_conversations_mirror(off.pipeline, emulator.all_user_conversations())


def has_history_table(pipeline: Any) -> bool:
    with pipeline.sql_client() as client:
        tables = client.execute_sql("SELECT table_name FROM information_schema.tables")
    return (HISTORY,) in {tuple(row) for row in tables}


def _a_membership(emulator: Any) -> tuple[str, str, str]:
    service = emulator.services()[0]["sid"]
    user = next(
        u["sid"]
        for u in emulator.users(service)
        if len(emulator.user_conversations(service, u["sid"])) >= 2
    )
    return service, user, emulator.user_conversations(service, user)[0]["conversation_sid"]
