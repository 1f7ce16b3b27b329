"""The `user_conversations` resource: each listed user's conversations, fetched in parallel,
judged by change capture and written as arrow tables; and the `users` rows, from the same
listings. One record's walk through it: docs/architecture.md.

Every run reads every scanned user's list (the API has no server-side filter) and writes only
the partitions that changed; see `changes.py` for why `date_updated` alone cannot say that.
"""

from __future__ import annotations

import functools
import queue
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, Any

import dlt
from dlt.sources import DltResource

from . import changes, current, fingerprints, first_load
from .client import TwilioClient
from .columns import (
    MERGE,
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_COLUMNS,
    USERS_COLUMNS,
    add_table_variant,
    with_parsed_attributes,
)
from .discovery import Catalog
from .errors import TwilioAPIError
from .history import HISTORY_TABLE, history_versions, keeps_history
from .parts import PAUSE, Parts
from .pii import KEEP_ALL, PiiPolicy
from .report import RunReport
from .settings import (
    ARROW_BATCH_ROWS,
    DELETED_COLUMN,
    DRAIN_ROUNDS,
    FETCH_AHEAD_PER_WORKER,
    USER_CONVERSATIONS_KEY,
    USER_CONVERSATIONS_PATH,
)
from .window import UpdatedWindow

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Settings:
    """The source's arguments, checked."""

    service_sids: list[str]
    user_refs: list[str]
    page_size: int
    max_workers: int
    window: UpdatedWindow
    history: bool | None = None  # None: as the dataset has it (`history.keeps_history`)
    pii: PiiPolicy = KEEP_ALL
    first_load_holder: str | None = None  # None: the pipeline's name, folder and host


def _first_load(holder: str | None) -> first_load.FirstLoad:
    """Whether this run appends its user conversations (`first_load.py`), decided here where no
    runner decided it before the extract (plain dlt)."""
    try:
        pipeline = dlt.current.pipeline()
        state = dlt.current.resource_state()
        dropped = dlt.current.load_package_state()["state"].get("dropped_tables", [])
    except Exception:  # iterated outside a pipeline run: nothing to append to
        return first_load.FirstLoad()
    return first_load.decide(
        pipeline,
        known=fingerprints.MARKER in state or fingerprints.LEGACY_KEY in state,
        emptied=any(table["name"] == "user_conversations" for table in dropped),
        holder=holder,
    )


def _is_table(item: Any) -> bool:
    """Whether `item` is an arrow table of the resource's own table (not a marked item)."""
    pyarrow = sys.modules.get("pyarrow")  # imported once a table was built
    return pyarrow is not None and isinstance(item, pyarrow.Table)


def _user_tombstones(service_sid: str, user_sids: Iterable[str]) -> list[dict[str, Any]]:
    """`users` rows that delete these users of a service."""
    return [
        {"sid": sid, "chat_service_sid": service_sid, DELETED_COLUMN: True} for sid in user_sids
    ]


@dataclass
class _UserFetch:
    """One user's conversations as read, with what change capture needs to judge them."""

    service_sid: str
    user_sid: str
    rows: Sequence[Mapping[str, Any]]  # those in the window, the PII policy applied
    found: bool = True  # False: the user vanished (404) between listing and reading
    fingerprint: str = ""
    fetched: int = 0  # rows the API listed, in the window or not
    newest: str | None = None  # the latest date_updated among the rows


def user_conversations_resource(catalog: Catalog, settings: Settings, parts: Parts) -> DltResource:
    fetch = functools.partial(_fetch_user, catalog.client, settings)

    @dlt.resource(
        name="user_conversations",
        primary_key=USER_CONVERSATION_KEY,
        merge_key=("chat_service_sid", "user_sid"),
        write_disposition=MERGE,
        columns=USER_CONVERSATIONS_COLUMNS,
    )
    def user_conversations() -> Iterator[Any]:
        """Each scanned user's conversations; a changed user's rows are replaced as a whole.
        Where the dataset keeps history, each table also goes to `user_conversations_history`."""
        history = keeps_history(settings.history)
        decision = catalog.report.first_load or _first_load(settings.first_load_holder)
        _users_file_format_as_the_resource_s()
        # A first load appends (`first_load.py`): the hint goes with the first table.
        append = dlt.mark.make_hints(write_disposition="append") if decision.append else None
        for item in parts.resume("user_conversations", functools.partial(run, decision)):
            versions = history_versions(item) if history else None
            if append is not None and _is_table(item):
                item, append = dlt.mark.with_hints(item, append), None
            yield item
            if versions is not None:
                yield versions

    def run(decision: first_load.FirstLoad) -> Iterator[Any]:
        resource_state = dlt.current.resource_state()
        batches = _ArrowBatches(current.load_id())
        new_history = settings.history is True and current.first_time(HISTORY_TABLE)
        state = fingerprints.open_fingerprints(
            "user_conversations", catalog.report.fingerprints_read
        )
        if state and catalog.scans_all_users and catalog.scans_all_services:
            # Twilio's lists carry no totals: the users the destination holds are the best
            # guess of how many this scan reaches (progress lines say "of N").
            catalog.report.users_known = sum(len(users) for users in state.values())
        capture = _UserChanges(
            state,
            catalog.report,
            batches,
            newest=resource_state.get("date_updated_cursor"),
            # History turned on for a pipeline that already mirrors the API: its first history
            # load records every current row, not only those that changed since the last run.
            rewrite_all=new_history,
        )
        first_time = current.first_time("user_conversations") or new_history
        users_state = resource_state.setdefault("users", {})
        # Where a pipeline made when `users` was a resource of its own noted its fingerprints.
        users_state.update(dlt.current.source_state().get("resources", {}).pop("users", {}))
        users = _ListedUsers(
            fingerprints.open_fingerprints("users", catalog.report.fingerprints_read, users_state),
            settings.pii,
        )
        if current.first_time("users"):
            yield dlt.mark.with_table_name(dlt.mark.materialize_table_schema(), "users")
        services = catalog.services()
        with ThreadPoolExecutor(settings.max_workers, "twilio-user") as pool:
            for service in services:
                service_sid = service["sid"]
                listed = fingerprints.listed(state, service_sid)
                tasks = _user_tasks(catalog, service_sid, listed, users)
                # One stream of fetches for the whole listing, across the parts: the fetches
                # already submitted go on while a part is normalized and loaded.
                fetches = _Fetches(
                    pool, fetch, tasks, settings.max_workers * FETCH_AHEAD_PER_WORKER
                )
                committed = catalog.report.users_changed
                drained = False  # a part was cut for this service's drain
                for done, result in enumerate(fetches, 1):
                    yield from capture.user(result)
                    if fingerprints.pending(state) >= ARROW_BATCH_ROWS:
                        yield from fingerprints.rows_to_load(state)
                    if done % settings.page_size == 0:
                        yield from users.changed(service_sid)
                    decided = catalog.report.users_changed - committed
                    if not parts.size or not decided:
                        continue  # nothing to commit: a load would cost time and keep nothing
                    # A part every `parts.size` users, and once where the last fetches drain.
                    at_drain = not drained and _worth_a_part_while_draining(
                        decided, fetches, settings.max_workers
                    )
                    if done % parts.size and not at_drain:
                        continue
                    drained = drained or at_drain
                    # A part's users are decided: their rows and fingerprints go in this load.
                    yield from batches.flush()
                    yield from fingerprints.rows_to_load(state)
                    yield from users.changed(service_sid)
                    yield from fingerprints.rows_to_load(users.state)
                    capture.save_cursor()
                    yield PAUSE
                    batches.load_id = current.load_id()
                    committed = catalog.report.users_changed
                yield from users.changed(service_sid)
                if catalog.listed_all_users(service_sid):
                    yield from capture.vanished_users(service_sid, listed)
                    yield from users.vanished(service_sid)
        yield from batches.flush()
        if first_time and not batches.made:
            # An empty arrow table, not dlt's marker: the marker takes dlt's dict path, whose
            # `_dlt_id NOT NULL` column the arrow rows that follow do not carry. At the end,
            # not first: the pyarrow import it needs would delay the first request.
            yield batches.table([])
        if catalog.scans_all_services:
            yield from capture.vanished_services({s["sid"] for s in services})
            yield from users.vanished_services({s["sid"] for s in services})
        yield from fingerprints.rows_to_load(state)
        yield from fingerprints.rows_to_load(users.state)
        if decision.token:  # the scan is complete: the claim of the first load is finished
            yield first_load.finished(decision.token)
        catalog.report.unresolved_users = catalog.unresolved_user_refs()
        capture.save_cursor()

    add_table_variant(user_conversations, "users", MERGE, USERS_COLUMNS, ("sid",))
    return first_load.add_table(fingerprints.add_table(user_conversations))


def _fetch_user(
    client: TwilioClient, settings: Settings, service_sid: str, user_sid: str
) -> _UserFetch:
    """Read one user's whole conversation list (run in a worker thread), keep the rows in the
    window and fingerprint them."""
    path = USER_CONVERSATIONS_PATH.format(service_sid=service_sid, user=user_sid)
    try:
        # One row per conversation: paging can serve a row again on a later page (offset paging
        # when a row is inserted ahead, keyset paging when it is updated between two requests);
        # the copy served last is the API's latest word.
        by_key = {
            record["conversation_sid"]: record
            for page in client.iter_pages(
                path,
                USER_CONVERSATIONS_KEY,
                {"PageSize": settings.page_size},
                record_key="conversation_sid",
            )
            for record in page
        }
    except TwilioAPIError as exc:
        if exc.status == 404:
            return _UserFetch(service_sid, user_sid, [], found=False)
        raise
    fetched = list(by_key.values())
    # The PII policy before the fingerprint: a policy change rewrites the partitions it changes.
    rows = settings.pii.apply("user_conversations", settings.window.select(fetched))
    digest = changes.fingerprint(rows, sort_key="conversation_sid")
    newest = max((r["date_updated"] for r in rows if r.get("date_updated")), default=None)
    return _UserFetch(service_sid, user_sid, rows, True, digest, len(fetched), newest)


class _Outcome(Enum):
    """What one user's fetch means for the destination."""

    SKIPPED = auto()  # not found (404) when read: listed, so kept, not taken as gone
    UNCHANGED = auto()  # the fingerprint the destination holds: nothing to write
    CHANGED = auto()  # rows that replace the user's partition
    EMPTIED = auto()  # no rows where the destination holds some: a tombstone removes them
    NEW_EMPTY = auto()  # a user new to the destination, without rows: nothing to write


def _decide(state: changes.FingerprintState, result: _UserFetch) -> _Outcome:
    """Judge `result` against the fingerprints; a changed user's new fingerprint is remembered."""
    if not result.found:
        return _Outcome.SKIPPED
    if not changes.has_changed(state, result.service_sid, result.user_sid, result.fingerprint):
        return _Outcome.UNCHANGED
    known = changes.is_known(state, result.service_sid, result.user_sid)
    changes.remember(state, result.service_sid, result.user_sid, result.fingerprint)
    if result.rows:
        return _Outcome.CHANGED
    # The user left every conversation (or none is in the window).
    return _Outcome.EMPTIED if known else _Outcome.NEW_EMPTY


class _UserChanges:
    """What one run of `user_conversations` writes, user by user, and the report's counters."""

    def __init__(
        self,
        state: changes.FingerprintState,
        report: RunReport,
        batches: _ArrowBatches,
        newest: str | None,
        rewrite_all: bool = False,
    ) -> None:
        self.state = state
        self.report = report
        self.batches = batches
        self.newest = newest  # the latest date_updated seen so far, in this run or before
        self.rewrite_all = rewrite_all  # unchanged users' rows are written too

    def user(self, result: _UserFetch) -> Iterator[pa.Table]:
        """Count one fetched user; buffer their rows if they changed, or write a tombstone."""
        outcome = _decide(self.state, result)
        if outcome is _Outcome.UNCHANGED and self.rewrite_all and result.rows:
            outcome = _Outcome.CHANGED
        if outcome is _Outcome.SKIPPED:
            self.report.skip(result.service_sid, result.user_sid, "not found (404) when read")
            return
        self.report.users_scanned += 1
        self.report.conversation_rows_fetched += result.fetched
        if result.newest and (self.newest is None or result.newest > self.newest):
            self.newest = result.newest
        if outcome is not _Outcome.UNCHANGED:
            self.report.users_changed += 1
        if outcome is _Outcome.CHANGED:
            yield from self.batches.add(result.rows)
        elif outcome is _Outcome.EMPTIED:
            yield self.batches.tombstones([(result.service_sid, result.user_sid)])

    def save_cursor(self) -> None:
        """Informational cursor in this load's resource state: the newest date_updated seen,
        as `incremental` would show it."""
        if self.newest:
            dlt.current.resource_state()["date_updated_cursor"] = self.newest

    def vanished_users(self, service_sid: str, listed: fingerprints.Listed) -> Iterator[pa.Table]:
        """Tombstones for the users the destination holds in a service its listing no longer
        has. Users skipped after a 404 were listed, so they are kept, not taken as gone."""
        gone = changes.drop_vanished(self.state, service_sid, listed)
        if gone:
            self.report.users_removed += len(gone)
            yield self.batches.tombstones((service_sid, sid) for sid in gone)

    def vanished_services(self, seen: set[str]) -> Iterator[pa.Table]:
        """Tombstones for every user of the services the destination holds that a complete scan
        no longer saw."""
        for service_sid, gone in changes.drop_vanished_scopes(self.state, seen).items():
            self.report.users_removed += len(gone)
            yield self.batches.tombstones((service_sid, sid) for sid in gone)


class _ArrowBatches:
    """Changed users' rows, handed to dlt in arrow tables of `ARROW_BATCH_ROWS` rows, and
    tombstone tables.

    pyarrow (with `records.py`) is imported only when a table is built, so a run with nothing to
    write never loads it; see docs/performance.md ("Where the time goes", 12).
    """

    def __init__(self, load_id: str | None) -> None:
        self.load_id = load_id
        self.rows: list[Mapping[str, Any]] = []
        self.made = False  # whether a table was built

    def add(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[pa.Table]:
        """Buffer `rows`; yield a table once the buffer holds a batch."""
        self.rows.extend(rows)
        if len(self.rows) >= ARROW_BATCH_ROWS:
            yield from self.flush()

    def flush(self) -> Iterator[pa.Table]:
        """Yield the rows buffered so far, if any, as one table."""
        if self.rows:
            yield self.table(self.rows)
            self.rows = []

    def table(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        from .records import user_conversations_table

        self.made = True
        return user_conversations_table(rows, self.load_id, current.stored_column_types())

    def tombstones(self, partitions: Iterable[tuple[str, str]]) -> pa.Table:
        from .records import user_tombstones_table

        self.made = True
        return user_tombstones_table(partitions, self.load_id)


def _users_file_format_as_the_resource_s() -> None:
    """Give the `users` table the file format of the resource's own table: dlt sets a run's
    `loader_file_format` on that one only, and `users` rows would take the destination's
    default (insert statements, jsonl) instead of parquet."""
    try:
        resource = dlt.current.resource()
    except Exception:  # iterated outside a pipeline run
        return
    file_format = resource.compute_table_schema().get("file_format")
    if file_format:
        resource.apply_hints(table_name="users", create_table_variant=True, file_format=file_format)


def _user_tasks(
    catalog: Catalog, service_sid: str, listed: fingerprints.Listed, users: _ListedUsers
) -> Iterator[tuple[str, str]]:
    """(service, user) for each user of the listing, adding each SID to `listed` and each
    record to the `users` to write.

    Pulled as workers free up, so the listing's next page is read while the first users'
    conversations are being fetched.
    """
    for user in catalog.iter_users(service_sid):
        listed.add(user["sid"])
        users.arrived.append(user)
        yield service_sid, user["sid"]


class _ListedUsers:
    """The `users` table, written from the listings `user_conversations` reads: each user as
    listed, when changed; users a complete listing no longer has are removed."""

    def __init__(self, state: changes.FingerprintState, policy: PiiPolicy) -> None:
        self.state = state
        self.policy = policy
        self.arrived: list[dict[str, Any]] = []  # listed since the last `changed`
        self._listed: dict[str, fingerprints.Listed] = {}

    def changed(self, service_sid: str) -> Iterator[Any]:
        """`users` rows of the users listed since the last call that changed."""
        batch, self.arrived = self.arrived, []
        if not batch:
            return
        listed = self._listed.setdefault(service_sid, fingerprints.listed(self.state, service_sid))
        for record in batch:
            listed.add(record["sid"])
        # The PII policy before the fingerprint: a policy change rewrites the users.
        rows = self.policy.apply("users", batch)
        changed = changes.changed_records(self.state, service_sid, rows)
        if changed:
            yield dlt.mark.with_table_name([with_parsed_attributes(r) for r in changed], "users")

    def vanished(self, service_sid: str) -> Iterator[Any]:
        """Tombstones for the users of the service its complete listing no longer has."""
        listed = self._listed.pop(service_sid, None) or fingerprints.listed(self.state, service_sid)
        gone = changes.drop_vanished(self.state, service_sid, listed)
        if gone:
            yield dlt.mark.with_table_name(_user_tombstones(service_sid, gone), "users")

    def vanished_services(self, seen: set[str]) -> Iterator[Any]:
        """Tombstones for every user of the services a complete scan no longer saw."""
        for service_sid, gone in changes.drop_vanished_scopes(self.state, seen).items():
            yield dlt.mark.with_table_name(_user_tombstones(service_sid, gone), "users")


class _Fetches:
    """`fn(*task)` for each task, run in `pool` with at most `max_in_flight` pending; iterating
    yields the results as they finish.

    Each finished result is yielded as soon as the next task has been submitted, not when the
    bound is reached: the bound fills only when the tasks outrun the fetches or the caller is
    away (a part's pause).

    Bounding the queue keeps memory flat for services with tens of thousands of users. Finished
    futures arrive through a queue fed by their done-callbacks: `concurrent.futures.wait` locks
    and unlocks every pending future on each call, which showed in profiles (figures in
    docs/performance.md, "Where the time goes", 8).

    Once the tasks have run out (`all_submitted`), `running` says how many fetches are not
    finished yet: those that drain the pool.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        fn: Any,
        tasks: Iterator[tuple[str, str]],
        max_in_flight: int,
    ) -> None:
        self._pool, self._fn, self._tasks, self._max_in_flight = pool, fn, tasks, max_in_flight
        self._pending: set[Future[_UserFetch]] = set()  # submitted, not handed out yet
        self._finished: queue.SimpleQueue[Future[_UserFetch]] = queue.SimpleQueue()
        self.all_submitted = False

    @property
    def running(self) -> int:
        return len(self._pending) - self._finished.qsize()

    def __iter__(self) -> Iterator[_UserFetch]:
        finished, pending = self._finished, self._pending
        try:
            for task in self._tasks:
                future = self._pool.submit(self._fn, *task)
                pending.add(future)
                future.add_done_callback(finished.put)
                while len(pending) >= self._max_in_flight or not finished.empty():
                    yield self._next_result()
            self.all_submitted = True
            while pending:
                yield self._next_result()
        finally:
            for future in pending:
                future.cancel()

    def _next_result(self) -> _UserFetch:
        future = self._finished.get()
        self._pending.discard(future)
        return future.result()


def _worth_a_part_while_draining(decided: int, fetches: _Fetches, workers: int) -> bool:
    """Whether to load the `decided` users now, as a part of their own, while the fetches still
    running drain the pool (a service's users all submitted).

    The part's normalize and load then overlap the drain instead of following it: worth a part's
    fixed cost when the drain lasts at least `DRAIN_ROUNDS` requests a worker and the decided
    users are the bulk, not fewer than those still to come. Figures in docs/performance.md
    ("Loading while the last fetches drain").
    """
    running = fetches.running
    return fetches.all_submitted and running >= DRAIN_ROUNDS * workers and decided >= running
