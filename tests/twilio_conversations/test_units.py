"""Pure pieces: change capture, the date_updated window, record shaping, configuration checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from twilio_conversations import changes
from twilio_conversations.credentials import TwilioCredentials
from twilio_conversations.discovery import (
    user_path,
    validate_max_workers,
    validate_page_size,
    validate_service_sids,
    validate_user_refs,
)
from twilio_conversations.errors import ConfigurationError
from twilio_conversations.records import (
    parse_attributes,
    user_conversations_table,
    user_tombstones_table,
)
from twilio_conversations.window import UpdatedWindow

IS = "IS" + "0" * 32
US = "US" + "1" * 32


def row(conversation: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "chat_service_sid": IS,
        "user_sid": US,
        "conversation_sid": conversation,
        "unread_messages_count": 1,
        "date_updated": "2024-01-01T00:00:00Z",
        "timers": {},
        "attributes": "{}",
    }
    base.update(fields)
    return base


class TestChanges:
    def test_fingerprint_ignores_list_order_but_not_content(self) -> None:
        a, b = row("CH1"), row("CH2")
        assert changes.fingerprint([a, b], "conversation_sid") == changes.fingerprint(
            [b, a], "conversation_sid"
        )
        changed = row("CH2", unread_messages_count=2)
        assert changes.fingerprint([a, b], "conversation_sid") != changes.fingerprint(
            [a, changed], "conversation_sid"
        )
        assert len(changes.fingerprint([], "conversation_sid")) == 2 * changes.FINGERPRINT_BYTES

    def test_new_changed_unchanged_vanished(self) -> None:
        state: changes.FingerprintState = {}
        assert changes.has_changed(state, IS, US, "f1")
        changes.remember(state, IS, US, "f1")
        assert not changes.has_changed(state, IS, US, "f1")
        assert changes.has_changed(state, IS, US, "f2")
        changes.remember(state, IS, "US2", "f3")
        assert changes.vanished(state, IS, {US}) == ["US2"]
        changes.forget(state, IS, ["US2", US])
        assert state == {}
        changes.remember(state, "IS_gone", US, "f")
        assert changes.vanished_scopes(state, {IS}) == ["IS_gone"]

    def test_changed_records_remembers_what_it_returns(self) -> None:
        state: changes.FingerprintState = {}
        a, b = {"sid": "US1", "identity": "a"}, {"sid": "US2", "identity": "b"}
        assert changes.changed_records(state, IS, [a, b]) == [a, b]
        assert changes.changed_records(state, IS, [a, b]) == []
        renamed = {"sid": "US2", "identity": "bee"}
        assert changes.changed_records(state, IS, [a, renamed]) == [renamed]


class TestWindow:
    def test_open_window_keeps_everything(self) -> None:
        rows = [row("CH1", date_updated=None), row("CH2")]
        assert UpdatedWindow.from_config(None, None).select(rows) == rows

    def test_bounds_are_half_open(self) -> None:
        window = UpdatedWindow.from_config("2024-01-01", "2024-02-01T00:00:00Z")
        assert window.contains("2024-01-01T00:00:00Z")
        assert window.contains("2024-01-31T23:59:59Z")
        assert not window.contains("2024-02-01T00:00:00Z")
        assert not window.contains("2023-12-31T23:59:59Z")
        assert not window.contains(None)
        assert window.start == datetime(2024, 1, 1, tzinfo=UTC)

    def test_lookback_is_a_rolling_start(self) -> None:
        now = datetime(2024, 3, 1, tzinfo=UTC)
        window = UpdatedWindow.from_config(None, None, lookback_days=10, now=now)
        assert window.start == datetime(2024, 2, 20, tzinfo=UTC)
        later = UpdatedWindow.from_config("2024-02-25", None, lookback_days=10, now=now)
        assert later.start == datetime(2024, 2, 25, tzinfo=UTC)
        with pytest.raises(ConfigurationError, match="lookback_days"):
            UpdatedWindow.from_config(None, None, lookback_days=0)

    @pytest.mark.parametrize(("start", "end"), [("yesterday", None), ("2024-02-01", "2024-01-01")])
    def test_bad_windows_are_rejected(self, start: str, end: str | None) -> None:
        with pytest.raises(ConfigurationError):
            UpdatedWindow.from_config(start, end)


class TestRecords:
    def test_typed_table(self) -> None:
        table = user_conversations_table(
            [
                row(
                    "CH1",
                    timers={"date_inactive": "2024-01-02T00:00:00Z", "date_closed": None},
                    attributes='{"topic": "billing"}',
                    links={"participant": "p", "conversation": "c"},
                ),
                row("CH2", attributes="not json", last_read_message_index=None),
            ]
        )
        assert table.schema.field("date_updated").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("unread_messages_count").type == pa.int64()
        first, second = table.to_pylist()
        assert first["timers__date_inactive"] == datetime(2024, 1, 2, tzinfo=UTC)
        assert first["links__participant"] == "p"
        assert json.loads(first["attributes_json"]) == {"topic": "billing"}
        assert second["attributes"] == "not json" and second["attributes_json"] is None
        assert not any(r["_deleted"] for r in (first, second))

    def test_new_api_fields_become_columns(self) -> None:
        table = user_conversations_table([row("CH1", brand_new=5), row("CH2", brand_new=None)])
        assert table.column("brand_new").to_pylist() == [5, None]

    def test_values_that_do_not_fit_go_to_a_variant_column(self) -> None:
        table = user_conversations_table(
            [row("CH1", unread_messages_count="12"), row("CH2", unread_messages_count=4)]
        )
        assert table.column("unread_messages_count").to_pylist() == [None, 4]
        assert table.column("unread_messages_count__v_text").to_pylist() == ["12", None]

    def test_new_field_changing_type_lands_in_a_variant(self) -> None:
        table = user_conversations_table(
            [row("CH1", priority="high")], stored_types={"priority": "bigint"}
        )
        assert "priority" not in table.column_names
        assert table.column("priority__v_text").to_pylist() == ["high"]

    def test_tombstones(self) -> None:
        (tomb,) = user_tombstones_table([(IS, US)]).to_pylist()
        assert (tomb["chat_service_sid"], tomb["user_sid"], tomb["_deleted"]) == (IS, US, True)

    def test_parse_attributes(self) -> None:
        assert parse_attributes("{}") == "{}"
        assert parse_attributes("{bad") is None
        assert parse_attributes(None) is None


class TestConfiguration:
    def test_service_sids(self) -> None:
        assert validate_service_sids([IS, IS]) == [IS]
        assert validate_service_sids(f"{IS},{IS}") == [IS]
        for bad in ("IS123", "is" + "0" * 32, "IS" + "G" * 32, "US" + "0" * 32):
            with pytest.raises(ConfigurationError, match="not a Conversation Service SID"):
                validate_service_sids([bad])

    def test_user_refs(self) -> None:
        assert validate_user_refs([US, "alice@example.com", "a/b?c#d%e ü"]) == [
            US,
            "alice@example.com",
            "a/b?c#d%e ü",
        ]
        with pytest.raises(ConfigurationError, match="looks like a SID"):
            validate_user_refs(["US" + "Z" * 32])
        with pytest.raises(ConfigurationError):
            validate_user_refs(["x" * 257])
        with pytest.raises(ConfigurationError, match="empty"):
            validate_user_refs([""])

    def test_user_path_encodes_identities(self) -> None:
        assert user_path(IS, "a/b?c#d%e ü").endswith("/Users/a%2Fb%3Fc%23d%25e%20%C3%BC")

    @pytest.mark.parametrize("size", [0, 1001, -1])
    def test_page_size(self, size: int) -> None:
        with pytest.raises(ConfigurationError, match="page_size"):
            validate_page_size(size)
        assert validate_page_size(1) == 1 and validate_page_size(1000) == 1000

    def test_max_workers(self) -> None:
        with pytest.raises(ConfigurationError):
            validate_max_workers(0)


class TestCredentials:
    def test_token_pair_and_env_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "a" * 32)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
        creds = TwilioCredentials()
        creds.resolve()
        assert creds.basic_auth_pair() == ("AC" + "a" * 32, "secret")

    def test_api_key_wins(self) -> None:
        creds = TwilioCredentials()
        creds.account_sid, creds.auth_token = "AC" + "a" * 32, "t"
        creds.api_key_sid, creds.api_key_secret = "SK" + "b" * 32, "s"
        assert creds.basic_auth_pair() == ("SK" + "b" * 32, "s")

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({}, "credentials missing"),
            ({"account_sid": "AC1", "auth_token": "t"}, "not an Account SID"),
            ({"api_key_sid": "SK" + "b" * 32}, "set together"),
            ({"api_key_sid": "KS1", "api_key_secret": "s"}, "not an API Key SID"),
        ],
    )
    def test_incomplete_or_malformed(self, fields: dict[str, str], message: str) -> None:
        creds = TwilioCredentials()
        for name, value in fields.items():
            setattr(creds, name, value)
        with pytest.raises(ConfigurationError, match=message):
            creds.basic_auth_pair()


# -- the bounded worker pool --------------------------------------------------------------------


class _Recording:
    """A thread pool's `submit` that keeps the futures it hands out, for a test to watch."""

    def __init__(self, pool: Any, futures: list[Any]) -> None:
        self.pool, self.futures = pool, futures

    def submit(self, fn: Any, *args: Any) -> Any:
        self.futures.append(self.pool.submit(fn, *args))
        return self.futures[-1]


@pytest.mark.parametrize(
    ("all_submitted", "decided", "running", "workers", "cut"),
    [
        # Runs of benchmarks.timeline (100 ms, 3,000 users) at the last submission:
        (True, 1721, 1279, 32, True),  # 32 workers: 40 requests a worker still to go
        (True, 2051, 949, 64, True),  # 64 workers, room for 40 of them: 15 a worker
        (True, 2858, 142, 64, False),  # 64 workers, the listing the bound: 2 a worker
        (True, 5, 95, 16, False),  # a small account: hardly anything decided yet
        (True, 50, 50, 16, False),  # ...nor later, when the drain is short
        (False, 2000, 1000, 32, False),  # users still being submitted: not a drain yet
    ],
)
def test_a_part_is_cut_where_the_drain_outlasts_its_cost_and_the_decided_are_the_bulk(
    all_submitted: bool, decided: int, running: int, workers: int, cut: bool
) -> None:
    from types import SimpleNamespace

    from twilio_conversations.settings import DRAIN_ROUNDS
    from twilio_conversations.user_conversations import _worth_a_part_while_draining

    assert DRAIN_ROUNDS == 5  # the cases above are read against it
    fetches = SimpleNamespace(all_submitted=all_submitted, running=running)
    assert _worth_a_part_while_draining(decided, fetches, workers) is cut  # type: ignore[arg-type]


def _next(tasks: Any) -> Any:
    """The tasks of an iterator, one a call, None at its end (as `_Fetches` takes them)."""
    return lambda: next(tasks, None)


def test_fetches_count_those_still_running_once_all_are_submitted() -> None:
    """`running` counts the fetches not finished yet; one finished and not handed out is done."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from twilio_conversations.user_conversations import _Fetches

    gates = {f"US{i}": threading.Event() for i in range(3)}
    futures: list[Future[Any]] = []

    def fetch(service: str, user: str) -> str:
        assert gates[user].wait(timeout=60), "never released"  # a guard against hanging only
        return user

    def tasks() -> Any:
        yield from (("IS", f"US{i}") for i in range(3))
        gates["US0"].set()  # asked for a fourth task: all three are submitted

    with ThreadPoolExecutor(3) as real:
        try:
            fetches = _Fetches(_Recording(real, futures), fetch, _next(tasks()), max_in_flight=8)  # type: ignore[arg-type]
            results = iter(fetches)
            assert next(results) == "US0"
            assert (fetches.all_submitted, fetches.running) == (True, 2)
            queued = threading.Event()
            # Registered after the pool's own callback: when it has run, US1's result is queued.
            futures[1].add_done_callback(lambda _: queued.set())
            gates["US1"].set()
            assert queued.wait(timeout=60), "US1 never finished"
            assert fetches.running == 1  # US1 waits to be handed out, but no longer runs
            gates["US2"].set()
            assert sorted(results) == ["US1", "US2"]
            assert fetches.running == 0
        finally:
            for gate in gates.values():
                gate.set()  # a failed assertion must not leave the pool waiting


def test_bounded_parallel_yields_every_result_with_a_bounded_queue() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from twilio_conversations.user_conversations import _Fetches

    lock = threading.Lock()
    submitted = 0
    consumed = 0
    most_ahead = 0

    def tasks() -> Any:
        nonlocal submitted, most_ahead
        for i in range(200):
            with lock:
                submitted += 1
                most_ahead = max(most_ahead, submitted - consumed)
            yield ("IS", f"US{i}")

    with ThreadPoolExecutor(4) as pool:
        results = []
        for result in _Fetches(pool, lambda s, u: (s, u), _next(tasks()), max_in_flight=8):
            with lock:
                consumed += 1
            results.append(result)
    assert sorted(results) == sorted(("IS", f"US{i}") for i in range(200))
    assert most_ahead <= 8  # never more than max_in_flight submitted and not yet handed out


def test_bounded_parallel_hands_out_a_finished_result_at_the_next_task() -> None:
    """A result that has finished is handed out once the next task is submitted, not held until
    `max_in_flight` tasks are ahead: the bound is room for a caller that is away (a part's
    pause), not a delay for one that is not."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from twilio_conversations.user_conversations import _Fetches

    release, queued = threading.Event(), threading.Event()
    futures: list[Future[Any]] = []
    handed_out: list[str] = []
    seen_when_asked: list[list[str]] = []

    def fetch(service: str, user: str) -> str:
        if user == "US0":
            assert release.wait(timeout=60), "never released"  # a guard against hanging only
        return user

    def tasks() -> Any:
        yield ("IS", "US0")
        # Registered after the pool's own callback (US0 is still held): when it has run,
        # US0's result is queued for handing out.
        futures[0].add_done_callback(lambda _: queued.set())
        release.set()
        assert queued.wait(timeout=60), "US0 never finished"
        for i in range(1, 5):
            seen_when_asked.append(list(handed_out))
            yield ("IS", f"US{i}")

    with ThreadPoolExecutor(2) as real:
        for result in _Fetches(_Recording(real, futures), fetch, _next(tasks()), max_in_flight=8):  # type: ignore[arg-type]
            handed_out.append(result)
    assert sorted(handed_out) == [f"US{i}" for i in range(5)]
    assert "US0" in seen_when_asked[1], f"US0 was held back: {seen_when_asked}"


def test_bounded_parallel_raises_the_first_failure_and_cancels_the_rest() -> None:
    """Two workers, four tasks in flight: US0 fails once the fourth task is on its way, every
    other task that starts blocks until the failure has propagated. So at most US0, US1 and US2
    (taken by US0's freed worker) ever start before the failure; US3 is still queued then and
    must be cancelled, not run once the workers are released."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from twilio_conversations.user_conversations import _Fetches

    release, fourth = threading.Event(), threading.Event()
    lock = threading.Lock()
    started: list[str] = []
    submitted: list[str] = []

    def fetch(service: str, user: str) -> str:
        with lock:
            started.append(user)
        if user == "US0":
            assert fourth.wait(timeout=60), "never asked for US3"  # a guard against hanging
            raise RuntimeError("boom")
        assert release.wait(timeout=60), "never released"  # a guard against hanging only
        return user

    def tasks() -> Any:
        for i in range(100):
            submitted.append(f"US{i}")
            if i == 3:
                fourth.set()  # US3 is submitted before anything finished is handed out
            yield ("IS", f"US{i}")

    try:
        with ThreadPoolExecutor(2) as pool:
            with pytest.raises(RuntimeError, match="boom"):
                for _ in _Fetches(pool, fetch, _next(tasks()), max_in_flight=4):
                    pass  # pragma: no cover - only US0 can finish, and it fails
            release.set()  # only now can any worker take another task
    finally:
        release.set()
    # The pool has drained: whatever was not cancelled has run by now.
    assert submitted == ["US0", "US1", "US2", "US3"]  # the bound: four in flight, no more
    assert {"US0", "US1"} <= set(started) <= {"US0", "US1", "US2"}, started
    assert "US3" not in started, "a task still queued when the failure arrived was run"


# -- the user listing, read ahead ----------------------------------------------------------------


class _Pages:
    """A listing of `pages` pages of two users each, recording each page asked for and, at each
    ask, how many users the test's reader had taken by then."""

    def __init__(self, pages: int, fail_at: int | None = None) -> None:
        self.asked = 0
        self.pages = pages
        self.fail_at = fail_at
        self.taken = 0  # set by the test as its reader takes users
        self.taken_at_ask: list[int] = []

    def __iter__(self) -> Any:
        for number in range(self.pages):
            self.asked += 1
            self.taken_at_ask.append(self.taken)
            if number == self.fail_at:
                raise RuntimeError(f"page {number} failed")
            yield [{"sid": f"US{number}a"}, {"sid": f"US{number}b"}]


def _listing(pages: _Pages, read_ahead: int = 4) -> Any:
    from twilio_conversations.discovery import _Listing

    return _Listing(pages, read_ahead=read_ahead, chunk=2).start()


def _read(listing: Any) -> Any:
    """Every record, as the scan takes them."""
    while batch := listing.take():
        yield from batch


def _sids(pages: int) -> list[str]:
    return [f"US{n}{x}" for n in range(pages) for x in "ab"]


def test_the_reader_gets_every_user_once_in_order_and_each_page_is_asked_once() -> None:
    pages = _Pages(5)
    assert [u["sid"] for u in _read(_listing(pages))] == _sids(5)
    assert pages.asked == 5


def test_the_listing_reads_ahead_of_the_reader_by_a_bounded_amount() -> None:
    pages = _Pages(30)
    reader = _read(_listing(pages, read_ahead=4))
    for user in reader:
        pages.taken += 1
        assert user["sid"] == _sids(30)[pages.taken - 1]
    # Page p (2 users each) is asked for only while the reader is fewer than 4 users behind
    # what has arrived, and the reader's progress is seen a chunk (2 users) at a time.
    for page, taken in enumerate(pages.taken_at_ask):
        assert 2 * page - taken < 4 + 2, f"page {page} asked with the reader at {taken}"


def test_a_failed_page_fails_the_reader_and_never_ends_a_listing_early() -> None:
    reader = _read(_listing(_Pages(3, fail_at=1)))
    # What arrived, then the failure, not a short "complete" list.
    assert [next(reader)["sid"], next(reader)["sid"]] == ["US0a", "US0b"]
    with pytest.raises(RuntimeError, match="page 1 failed"):
        next(reader)
