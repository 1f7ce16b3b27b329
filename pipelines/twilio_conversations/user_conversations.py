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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from .discovery import Catalog, _Listing
from .errors import TwilioAPIError
from .history import HISTORY_TABLE, history_versions, keeps_history
from .parts import Parts
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
    """Whether this run appends its user conversations (`first_load.py`)."""
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


def user_conversations_resource(scan: Scan) -> DltResource:
    @dlt.resource(
        name="user_conversations",
        primary_key=USER_CONVERSATION_KEY,
        merge_key=("chat_service_sid", "user_sid"),
        write_disposition=MERGE,
        columns=USER_CONVERSATIONS_COLUMNS,
    )
    def user_conversations() -> Iterator[Any]:
        """Each scanned user's conversations; a changed user's rows are replaced as a whole.
        Where the dataset keeps history, each table also goes to `user_conversations_history`.
        One part of the scan (`Scan.part`): all of it, unless the run is loaded in parts."""
        _users_file_format_as_the_resource_s()
        yield from scan.part()

    add_table_variant(user_conversations, "users", MERGE, USERS_COLUMNS, ("sid",))
    return first_load.add_table(fingerprints.add_table(user_conversations))


class Scan:
    """One run's scan of the scanned users: each one read, judged by change capture and written
    (with the `users` rows and the bookkeeping), in parts of `parts.size` users.

    Each extract runs `part`, a fresh generator that goes on from where the last part stopped:
    what the scan has read so far is kept here as plain data (the fingerprints, the users listed,
    the service being listed with its fetches in flight). The fetches submitted go on while a
    part is normalized and loaded. Deletions are decided at the end of a complete listing, and
    the scan's last part says so in `parts.complete`.
    """

    def __init__(self, catalog: Catalog, settings: Settings, parts: Parts) -> None:
        self.catalog, self.settings, self.parts = catalog, settings, parts
        self.report = catalog.report
        self._opened = False
        self._services: list[dict[str, Any]] = []
        self._next_service = 0  # index of the next service to list
        self._service: _ServiceScan | None = None  # the service being listed
        self._pool: ThreadPoolExecutor | None = None
        # Decided in the first part, for the whole scan (`_open`).
        self._append: Any = None  # dlt's append hint, until the first table of a first load
        self._history = False
        self._token: str | None = None
        self._first_time = False
        self._state: changes.FingerprintState
        self._batches: _ArrowBatches
        self._capture: _UserChanges
        self._users: _ListedUsers
        parts.on_close(self.close)

    def part(self) -> Iterator[Any]:
        """This extract's part of the scan; the rest of it where the scan is not loaded in
        parts."""
        if self.parts.complete:
            return
        try:
            if not self._opened:
                yield from self._open()
            self._batches.load_id = current.load_id()
            committed = self.report.users_changed
            while self._service is not None or self._start_next_service():
                service = self._service
                assert service is not None
                while (result := service.fetches.next()) is not None:
                    yield from self._wrote(self._capture.user(result))
                    if fingerprints.pending(self._state) >= ARROW_BATCH_ROWS:
                        rows = fingerprints.rows_to_load(self._state, self._users.state)
                        yield from self._wrote(rows)
                    if service.fetches.done % self.settings.page_size == 0:
                        yield from self._wrote(self._users.changed(service.sid))
                    decided = self.report.users_changed - committed
                    if decided and self._part_ends(service, decided):
                        # A part's users are decided: their rows and fingerprints go in this load.
                        yield from self._wrote(self._end_of_part(service.sid))
                        return
                yield from self._wrote(self._end_of_service(service))
            yield from self._wrote(self._end_of_scan())
        except BaseException:
            self.close()
            raise

    def _wrote(self, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, each followed by its history versions where the dataset keeps history, the
        first table of a first load with dlt's append hint."""
        for item in items:
            versions = history_versions(item) if self._history else None
            if self._append is not None and _is_table(item):
                item, self._append = dlt.mark.with_hints(item, self._append), None
            yield item
            if versions is not None:
                yield versions

    def _open(self) -> Iterator[Any]:
        """The scan's start, in its first part: what the destination holds, and the decisions
        that hold for the whole scan."""
        settings, report = self.settings, self.report
        decision = self.parts.wait(lambda: _first_load(settings.first_load_holder))
        self._token = decision.token
        # A first load appends (`first_load.py`): the hint goes with the first table.
        self._append = dlt.mark.make_hints(write_disposition="append") if decision.append else None
        self._history = keeps_history(settings.history)
        resource_state = dlt.current.resource_state()
        new_history = settings.history is True and current.first_time(HISTORY_TABLE)
        self._state = fingerprints.open_fingerprints("user_conversations", wait=self.parts.wait)
        if self._state and self.catalog.scans_all_users and self.catalog.scans_all_services:
            # Twilio's lists carry no totals: the users the destination holds are the best
            # guess of how many this scan reaches (progress lines say "of N").
            report.users_known = sum(len(users) for users in self._state.values())
        self._batches = _ArrowBatches(current.load_id())
        self._capture = _UserChanges(
            self._state,
            report,
            self._batches,
            newest=resource_state.get("date_updated_cursor"),
            # History turned on for a pipeline that already mirrors the API: its first history
            # load records every current row, not only those that changed since the last run.
            rewrite_all=new_history,
        )
        self._first_time = current.first_time("user_conversations") or new_history
        users_state = resource_state.setdefault("users", {})
        # Where a pipeline made when `users` was a resource of its own noted its fingerprints.
        users_state.update(dlt.current.source_state().get("resources", {}).pop("users", {}))
        self._users = _ListedUsers(
            fingerprints.open_fingerprints("users", users_state, self.parts.wait),
            settings.pii,
            report,
        )
        if current.first_time("users"):
            yield dlt.mark.with_table_name(dlt.mark.materialize_table_schema(), "users")
        self._services = self.catalog.services()
        self._pool = ThreadPoolExecutor(settings.max_workers, "twilio-user")
        self._opened = True

    def _start_next_service(self) -> bool:
        """Start listing the next service and fetching its users; False once none is left."""
        if self._next_service >= len(self._services):
            return False
        service_sid = self._services[self._next_service]["sid"]
        self._next_service += 1
        assert self._pool is not None
        fetch = functools.partial(_fetch_user, self.catalog.client, self.settings)
        self._service = _ServiceScan(
            service_sid,
            self.catalog.listing(service_sid),
            fingerprints.listed(self._state, service_sid),
            self._users,
            self._pool,
            fetch,
            self.settings.max_workers * FETCH_AHEAD_PER_WORKER,
        )
        return True

    def _part_ends(self, service: _ServiceScan, decided: int) -> bool:
        """Whether the part ends here, with `decided` users decided since it began: every
        `parts.size` users, and once a service where the last fetches drain, if that is worth
        it (`_worth_a_part_while_draining`)."""
        size = self.parts.size
        if not size:
            return False  # one part: a load would cost time and keep nothing
        at_drain = not service.drained and _worth_a_part_while_draining(
            decided, service.fetches, self.settings.max_workers
        )
        service.drained = service.drained or at_drain
        return at_drain or service.fetches.done % size == 0

    def _end_of_part(self, service_sid: str) -> Iterator[Any]:
        yield from self._batches.flush()
        yield from self._users.changed(service_sid)
        yield from fingerprints.rows_to_load(self._state, self._users.state)
        self._capture.save_cursor()

    def _end_of_service(self, service: _ServiceScan) -> Iterator[Any]:
        """The service's listing is complete: the users it no longer has are removed."""
        self._service = None
        self.report.users_held_peak = max(self.report.users_held_peak, service.listing.peak)
        service.close()
        yield from self._users.changed(service.sid)
        if self.catalog.listed_all_users(service.sid):
            yield from self._capture.vanished_users(service.sid, service.listed)
            yield from self._users.vanished(service.sid)

    def _end_of_scan(self) -> Iterator[Any]:
        """Every service is listed: what no service has any more is removed, and the scan is
        complete."""
        self.close()
        yield from self._batches.flush()
        if self._first_time and not self._batches.made:
            # An empty arrow table, not dlt's marker: the marker takes dlt's dict path, whose
            # `_dlt_id NOT NULL` column the arrow rows that follow do not carry. At the end,
            # not first: the pyarrow import it needs would delay the first request.
            yield self._batches.table([])
        if self.catalog.scans_all_services:
            seen = {s["sid"] for s in self._services}
            yield from self._capture.vanished_services(seen)
            yield from self._users.vanished_services(seen)
        yield from fingerprints.rows_to_load(self._state, self._users.state)
        if self._token:  # the scan is complete: the claim of the first load is finished
            yield first_load.finished(self._token)
        self.report.unresolved_users = self.catalog.unresolved_user_refs()
        self._capture.save_cursor()
        self.parts.complete = True

    def close(self) -> None:
        """Stop the listing and the fetches in flight (the scan ended, or failed)."""
        if self._service is not None:
            self._service.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


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
    RECORDED = auto()  # unchanged, written as they are: history turned on records them


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
            self.report.users_recorded += 1  # written as they are: history's first versions
            outcome = _Outcome.RECORDED
        if outcome is _Outcome.SKIPPED:
            self.report.skip(result.service_sid, result.user_sid, "not found (404) when read")
            return
        self.report.users_scanned += 1
        self.report.conversation_rows_fetched += result.fetched
        if result.newest and (self.newest is None or result.newest > self.newest):
            self.newest = result.newest
        if outcome not in (_Outcome.UNCHANGED, _Outcome.RECORDED):
            self.report.users_changed += 1
        if outcome in (_Outcome.CHANGED, _Outcome.RECORDED):
            yield from self.batches.add(result.rows)
        elif outcome is _Outcome.EMPTIED:
            yield self._tombstones([(result.service_sid, result.user_sid)])

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
            yield self._tombstones([(service_sid, sid) for sid in gone])

    def vanished_services(self, seen: set[str]) -> Iterator[pa.Table]:
        """Tombstones for every user of the services the destination holds that a complete scan
        no longer saw."""
        for service_sid, gone in changes.drop_vanished_scopes(self.state, seen).items():
            self.report.users_removed += len(gone)
            yield self._tombstones([(service_sid, sid) for sid in gone])

    def _tombstones(self, partitions: list[tuple[str, str]]) -> pa.Table:
        self.report.rows_deleted["user_conversations"] += len(partitions)
        return self.batches.tombstones(partitions)


class _ArrowBatches:
    """Changed users' rows, handed to dlt in arrow tables of `ARROW_BATCH_ROWS` rows, and
    tombstone tables.

    pyarrow (with `records.py`) is imported only when a table is built, so a run with nothing to
    write never loads it; see docs/architecture.md ("Measurements behind the code").
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


class _ServiceScan:
    """One service being scanned: its listing, read ahead by a thread of its own, and the
    fetches of the users it lists. Each SID listed is added to `listed`, each record to the
    `users` to write."""

    def __init__(
        self,
        sid: str,
        listing: _Listing,
        listed: fingerprints.Listed,
        users: _ListedUsers,
        pool: ThreadPoolExecutor,
        fetch: Any,
        max_in_flight: int,
    ) -> None:
        self.sid, self.listing, self.listed, self.users = sid, listing, listed, users
        self.fetches = _Fetches(pool, fetch, self._next_task, max_in_flight)
        self.drained = False  # a part was cut where this service's last fetches drain
        self._taken: list[dict[str, Any]] = []

    def _next_task(self) -> tuple[str, str] | None:
        """(service, user) for the listing's next user; None at its end. Pulled as workers
        free up, so the listing's next page is read while the first users' conversations are
        being fetched."""
        if not self._taken:
            self._taken = self.listing.take()[::-1]
            if not self._taken:
                return None
        user = self._taken.pop()
        self.listed.add(user["sid"])
        self.users.arrived.append(user)
        return self.sid, user["sid"]

    def close(self) -> None:
        self.listing.close()
        self.fetches.cancel()


class _ListedUsers:
    """The `users` table, written from the listings `user_conversations` reads: each user as
    listed, when changed; users a complete listing no longer has are removed."""

    def __init__(
        self, state: changes.FingerprintState, policy: PiiPolicy, report: RunReport
    ) -> None:
        self.state = state
        self.policy = policy
        self.report = report
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
            self.report.rows_deleted["users"] += len(gone)
            yield dlt.mark.with_table_name(_user_tombstones(service_sid, gone), "users")

    def vanished_services(self, seen: set[str]) -> Iterator[Any]:
        """Tombstones for every user of the services a complete scan no longer saw."""
        for service_sid, gone in changes.drop_vanished_scopes(self.state, seen).items():
            self.report.rows_deleted["users"] += len(gone)
            yield dlt.mark.with_table_name(_user_tombstones(service_sid, gone), "users")


class _Fetches:
    """`fn(*task)` for each task `next_task` gives until it gives None, run in `pool` with at
    most `max_in_flight` pending; `next` hands out the results as they finish.

    Each finished result is handed out as soon as the next task has been submitted, not when
    the bound is reached: the bound fills only when the tasks outrun the fetches or the caller
    is away (a part's pause).

    Bounding the queue keeps memory flat for services with tens of thousands of users. Finished
    futures arrive through a queue fed by their done-callbacks: `concurrent.futures.wait` locks
    and unlocks every pending future on each call, which showed in profiles (figures in
    docs/architecture.md, "Measurements behind the code").

    Once the tasks have run out (`all_submitted`), `running` says how many fetches are not
    finished yet: those that drain the pool.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        fn: Any,
        next_task: Callable[[], tuple[str, str] | None],
        max_in_flight: int,
    ) -> None:
        self._pool, self._fn, self._next_task = pool, fn, next_task
        self._max_in_flight = max_in_flight
        self._pending: set[Future[_UserFetch]] = set()  # submitted, not handed out yet
        self._finished: queue.SimpleQueue[Future[_UserFetch]] = queue.SimpleQueue()
        self.all_submitted = False
        self.done = 0  # results handed out

    @property
    def running(self) -> int:
        return len(self._pending) - self._finished.qsize()

    def next(self) -> _UserFetch | None:
        """The next finished fetch, having submitted tasks while there is room and none has
        finished; None once every task's result was handed out."""
        while not self.all_submitted and self._finished.empty():
            if len(self._pending) >= self._max_in_flight:
                break
            task = self._next_task()
            if task is None:
                self.all_submitted = True
                break
            future = self._pool.submit(self._fn, *task)
            self._pending.add(future)
            future.add_done_callback(self._finished.put)
        if not self._pending:
            return None
        future = self._finished.get()
        self._pending.discard(future)
        self.done += 1
        try:
            return future.result()
        except BaseException:
            self.cancel()  # the run fails: the fetches not started yet are not worth making
            raise

    def __iter__(self) -> Iterator[_UserFetch]:
        return iter(self.next, None)

    def cancel(self) -> None:
        """Cancel the fetches not started yet."""
        for future in self._pending:
            future.cancel()


def _worth_a_part_while_draining(decided: int, fetches: _Fetches, workers: int) -> bool:
    """Whether to load the `decided` users now, as a part of their own, while the fetches still
    running drain the pool (a service's users all submitted).

    The part's normalize and load then overlap the drain instead of following it: worth a part's
    fixed cost when the drain lasts at least `DRAIN_ROUNDS` requests a worker and the decided
    users are the bulk, not fewer than those still to come. Figures in docs/performance.md
    ("Figures behind the code's choices").
    """
    running = fetches.running
    return fetches.all_submitted and running >= DRAIN_ROUNDS * workers and decided >= running
