"""dlt source for Twilio Conversations: services, users and each user's conversations.

The seed endpoint is `GET /v1/Services/{ChatServiceSid}/Users/{UserSid}/Conversations`, reached by
discovery (`/v1/Services` -> `/v1/Services/{IS}/Users` -> each user's list) or by configured SIDs.
Every run reads every scanned user's list (the API has no server-side filter) and writes only
the partitions that changed; see `changes.py` for why `date_updated` alone cannot say that.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import queue
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, auto
from typing import TYPE_CHECKING, Any

import dlt
from dlt.common.schema.typing import TMergeDispositionDict, TScd2StrategyDict
from dlt.common.typing import TSecretStrValue
from dlt.sources import DltResource

from . import changes, fingerprints, first_load
from .accounts import SETTING_KEYS as ACCOUNT_SETTING_KEYS
from .client import RetryPolicy, TwilioClient
from .columns import (
    SERVICES_COLUMNS,
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_COLUMNS,
    USERS_COLUMNS,
    add_table_variant,
    with_parsed_attributes,
)
from .config_check import check_settings
from .credentials import TwilioCredentials
from .discovery import (
    Catalog,
    validate_max_workers,
    validate_page_size,
    validate_service_sids,
    validate_user_refs,
)
from .dlt_logs import quiet_expected_dlt_warnings
from .errors import TwilioAPIError
from .pii import KEEP_ALL, PiiPolicy, parse_policy
from .report import RunReport
from .settings import (
    ARROW_BATCH_ROWS,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_WORKERS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REQUEST_MAX_ATTEMPTS,
    DEFAULT_REQUEST_MAX_RETRY_DELAY,
    DEFAULT_REQUEST_TIMEOUT,
    DELETED_COLUMN,
    DRAIN_ROUNDS,
    FETCH_AHEAD_PER_WORKER,
    USER_CONVERSATIONS_KEY,
    USER_CONVERSATIONS_PATH,
)
from .window import UpdatedWindow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RunReport", "TwilioCredentials", "twilio_conversations"]

HISTORY_TABLE = "user_conversations_history"  # history mode's scd2 table
_log = logging.getLogger("twilio_conversations")

# Mistyped keys that would widen a run to more data than the user asked for: such a typo fails
# the run before any request (`check_settings`); other typos warn.
WIDENING_KEYS = (
    "service_sids",
    "user_sids",
    "start_date",
    "end_date",
    "lookback_days",
    "date_updated",
    # and keys whose typo would write PII the policy says to hash or drop
    "pii",
    "pii_hash_key",
    # and the accounts: ignoring a mistyped list would load the section's own account instead
    "accounts",
    "subaccounts",
)

# Merging on the partition key replaces a changed user's rows wholesale (delete-insert), so rows
# the API no longer lists disappear, while users not sent in this load stay untouched.
_MERGE: TMergeDispositionDict = {"disposition": "merge", "strategy": "delete-insert"}


@dlt.source(name="twilio_conversations", max_table_nesting=1)
def twilio_conversations(
    credentials: TwilioCredentials = dlt.secrets.value,
    base_url: str = DEFAULT_BASE_URL,
    service_sids: Sequence[str] | None = None,
    user_sids: Sequence[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_workers: int = DEFAULT_MAX_WORKERS,
    start_date: str | datetime | None = None,
    end_date: str | datetime | None = None,
    lookback_days: float | None = None,
    date_updated: dlt.sources.incremental[str] | None = None,
    request_max_attempts: int = DEFAULT_REQUEST_MAX_ATTEMPTS,
    request_max_retry_delay: float = DEFAULT_REQUEST_MAX_RETRY_DELAY,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    history: bool | None = None,
    pii: dict[str, Any] | None = None,
    pii_hash_key: TSecretStrValue | None = None,
    run_report: RunReport | None = None,
) -> Sequence[DltResource]:
    """Twilio Conversations services, users and user conversations.

    Args:
        credentials: Account SID + Auth Token, or API Key SID + secret.
        base_url: API origin; plain http is accepted for loopback only (the emulator).
        service_sids: Scan only these Conversation Services (`IS…`); all visible ones if empty.
        user_sids: Scan only these users (`US…` SIDs or identities) in each scanned service.
        page_size: Records per page to ask for (1-1000); the server may return fewer.
        max_workers: Users fetched in parallel (each user's pages stay in order).
        start_date: Only rows with `date_updated` at or after this moment are kept.
        end_date: Only rows with `date_updated` before this moment are kept (backfill windows).
        lookback_days: A rolling start: only rows updated in the last N days are kept (rows
            that age out are removed from the mirror).
        date_updated: The same window as a `dlt.sources.incremental("date_updated",
            initial_value=..., end_value=...)` (initial inclusive, end exclusive), as
            orchestrators pass backfill intervals; applied to each user's list, its cursor
            state unused. Instead of start_date/end_date.
        request_max_attempts: Attempts per request before the run fails.
        request_max_retry_delay: Cap in seconds on one backoff wait (`Retry-After` included).
        request_timeout: Seconds to wait for a connection or a response.
        history: Keep every version of each user conversation, with validity ranges, in
            `user_conversations_history` (dlt `scd2`). Unset: as the dataset has it (kept once
            a run turned it on); False: turned off on purpose, the table no longer kept current.
        pii: Per-column PII policy, `{"users.identity": "hash", ...}`: `keep` (the default),
            `hash` or `drop`, applied to every record before anything is written (`pii.py`).
        pii_hash_key: The secret key of `hash` (HMAC-SHA-256), at least 16 characters.
        run_report: Collects counters for the run summary; a fresh one when omitted.

    Returns:
        The resources `services`, `users` and `user_conversations`, plus
        `user_conversations_history` in history mode (as a table of `user_conversations`).
    """
    check_settings(SETTING_KEYS, WIDENING_KEYS)
    quiet_expected_dlt_warnings()
    report = run_report if run_report is not None else RunReport()
    settings = _Settings(
        service_sids=validate_service_sids(service_sids),
        user_refs=validate_user_refs(user_sids),
        page_size=validate_page_size(page_size),
        max_workers=validate_max_workers(max_workers),
        window=(
            UpdatedWindow.from_config(start_date, end_date, lookback_days)
            if date_updated is None
            else UpdatedWindow.from_incremental(date_updated, start_date, end_date, lookback_days)
        ),
        history=history if history is None else bool(history),
        pii=parse_policy(pii, pii_hash_key),
    )
    client = TwilioClient(
        base_url,
        credentials.basic_auth_pair(),
        RetryPolicy(
            max_attempts=request_max_attempts,
            max_delay=request_max_retry_delay,
            timeout=request_timeout,
        ),
        report.requests,
        max_in_flight=settings.max_workers,
    )
    report.concurrency = client.concurrency
    catalog = Catalog(client, settings.page_size, settings.service_sids, settings.user_refs, report)
    parts = _Parts(report)
    # `users` is a table of `user_conversations`, which reads each service's user listing once
    # and writes the users as they are listed.
    return [
        services_resource(catalog, parts),
        user_conversations_resource(catalog, settings, parts),
    ]


# Every key `[sources.twilio_conversations]` may hold: the source's arguments (dlt injects them,
# `run_report` is the caller's) and the runner's own `lock_timeout` and `users_per_load`.
SETTING_KEYS = (
    *(name for name in inspect.signature(twilio_conversations).parameters if name != "run_report"),
    "lock_timeout",
    "users_per_load",
    # several accounts in one run (`accounts.py`), read by the runner
    *ACCOUNT_SETTING_KEYS,
)


@dataclass(frozen=True)
class _Settings:
    service_sids: list[str]
    user_refs: list[str]
    page_size: int
    max_workers: int
    window: UpdatedWindow
    history: bool | None = None  # None: as the dataset has it (`_keeps_history`)
    pii: PiiPolicy = KEEP_ALL


_PAUSE = object()  # yielded by a resource's run at the end of a part (see `_Parts`)


class _Parts:
    """A run loaded in several load packages ("parts") of about `report.users_per_load` users.

    Each resource's run is one generator for the whole run (`resume` keeps it between the
    extracts): `user_conversations` yields `_PAUSE` once a part's users are decided and written,
    which ends this extract's share of it. The caller (the runner) extracts, normalizes and
    loads again while `unfinished`, so a crash keeps the parts already loaded; deletions are
    still decided only at the end of a complete listing, in the last part. A part also ends
    once where a service's last fetches drain, if that is worth it
    (`_worth_a_part_while_draining`). Without `users_per_load` (plain dlt) there is one part.
    """

    def __init__(self, report: RunReport) -> None:
        self.report = report
        self._runs: dict[str, Iterator[Any]] = {}
        self._finished: set[str] = set()
        self._load_id: str | None = None

    @property
    def size(self) -> int | None:
        return self.report.users_per_load

    def resume(self, name: str, start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """This extract's part of the run of resource `name` (started by `start` the first
        time)."""
        load_id = _current_load_id()
        if load_id != self._load_id:  # a new extract: a new part
            self._load_id = load_id
        if name in self._finished:
            return
        run = self._runs.setdefault(name, start())
        try:
            for item in run:
                if item is _PAUSE:
                    return
                yield item
            self._finished.add(name)
            self._runs.pop(name, None)
        finally:
            self.report.unfinished = bool(self._runs)


def services_resource(catalog: Catalog, parts: _Parts) -> DltResource:
    @dlt.resource(
        name="services",
        primary_key="sid",
        write_disposition=_MERGE,
        columns=SERVICES_COLUMNS,
    )
    def services() -> Iterator[list[dict[str, Any]]]:
        """Conversation Services (`IS…`), written when they change."""
        yield from parts.resume("services", run)

    def run() -> Iterator[Any]:
        if _first_time("services"):
            yield dlt.mark.materialize_table_schema()
        state = fingerprints.open_fingerprints("services", catalog.report.fingerprints_read)
        records = catalog.services()
        changed = [
            with_parsed_attributes(r) for r in changes.changed_records(state, "services", records)
        ]
        if catalog.scans_all_services:
            gone = changes.drop_vanished(state, "services", {r["sid"] for r in records})
            changed.extend({"sid": sid, DELETED_COLUMN: True} for sid in gone)
        if changed:
            yield changed
        yield from _fingerprint_rows(state)

    return fingerprints.add_table(services)


def _fingerprint_rows(state: changes.FingerprintState) -> Iterator[Any]:
    """The fingerprints changed since the last call, as rows of their table, in this load
    (none where they are kept in the resource state)."""
    if not isinstance(state, fingerprints.Fingerprints):
        return
    rows = state.rows()
    if rows:
        from .records import fingerprints_table

        table = fingerprints_table(rows, _current_load_id())
        yield dlt.mark.with_table_name(table, fingerprints.TABLE)


def _first_load() -> first_load.FirstLoad:
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


def user_conversations_resource(
    catalog: Catalog, settings: _Settings, parts: _Parts
) -> DltResource:
    fetch = functools.partial(_fetch_user, catalog.client, settings)

    @dlt.resource(
        name="user_conversations",
        primary_key=USER_CONVERSATION_KEY,
        merge_key=("chat_service_sid", "user_sid"),
        write_disposition=_MERGE,
        columns=USER_CONVERSATIONS_COLUMNS,
    )
    def user_conversations() -> Iterator[Any]:
        """Each scanned user's conversations; a changed user's rows are replaced as a whole.
        Where the dataset keeps history, each table also goes to `user_conversations_history`."""
        history = _keeps_history(settings.history)
        decision = catalog.report.first_load or _first_load()
        _users_file_format_as_the_resource_s()
        # A first load appends (`first_load.py`): the hint goes with the first table.
        append = dlt.mark.make_hints(write_disposition="append") if decision.append else None
        for item in parts.resume("user_conversations", functools.partial(run, decision)):
            versions = _history_versions(item) if history else None
            if append is not None and _is_table(item):
                item, append = dlt.mark.with_hints(item, append), None
            yield item
            if versions is not None:
                yield versions

    def run(decision: first_load.FirstLoad) -> Iterator[Any]:
        resource_state = dlt.current.resource_state()
        batches = _ArrowBatches(_current_load_id())
        new_history = settings.history is True and _first_time(HISTORY_TABLE)
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
        first_time = _first_time("user_conversations") or new_history
        users_state = resource_state.setdefault("users", {})
        # Where a pipeline made when `users` was a resource of its own noted its fingerprints.
        users_state.update(dlt.current.source_state().get("resources", {}).pop("users", {}))
        users = _ListedUsers(
            fingerprints.open_fingerprints("users", catalog.report.fingerprints_read, users_state),
            settings.pii,
        )
        if _first_time("users"):
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
                        yield from _fingerprint_rows(state)
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
                    yield from _fingerprint_rows(state)
                    yield from users.changed(service_sid)
                    yield from _fingerprint_rows(users.state)
                    capture.save_cursor()
                    yield _PAUSE
                    batches.load_id = _current_load_id()
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
        yield from _fingerprint_rows(state)
        yield from _fingerprint_rows(users.state)
        if decision.token:  # the scan is complete: the claim of the first load is finished
            yield first_load.finished(decision.token)
        catalog.report.unresolved_users = catalog.unresolved_user_refs()
        capture.save_cursor()

    add_table_variant(user_conversations, "users", _MERGE, USERS_COLUMNS, ("sid",))
    return first_load.add_table(fingerprints.add_table(user_conversations))


def _fetch_user(
    client: TwilioClient, settings: _Settings, service_sid: str, user_sid: str
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
        return user_conversations_table(rows, self.load_id, _stored_column_types())

    def tombstones(self, partitions: Iterable[tuple[str, str]]) -> pa.Table:
        from .records import user_tombstones_table

        self.made = True
        return user_tombstones_table(partitions, self.load_id)


def _first_time(table: str) -> bool:
    """Whether `table` has never received data in this pipeline (a first load, or after a full
    refresh).

    dlt creates a table only when data reaches it, so on its first load each resource yields
    something that creates it with its typed columns even when no row follows (an account
    without conversations yet, a filter that matches nothing): analysts' queries and the views
    then find every table. Later loads need nothing of the kind.
    """
    try:
        schema = dlt.current.source_schema()
    except Exception:  # iterated outside a pipeline run
        return False
    return table not in schema.data_table_names(seen_data_only=True, include_incomplete=True)


# History: dlt `scd2` keyed by row hash. Only partitions (users) sent in this load may be retired,
# and a tombstone counts as "sent" without being inserted, so a user who left every conversation
# has all current versions closed. The placeholders are dlt's qualified table names.
_HISTORY_SCOPE = (
    "EXISTS (SELECT 1 FROM {staging_table} AS s WHERE s.chat_service_sid = "
    "{table}.chat_service_sid AND s.user_sid = {table}.user_sid)"
)
_HISTORY: TScd2StrategyDict = {
    "disposition": "merge",
    "strategy": "scd2",
    "source_filter": f"{DELETED_COLUMN} = FALSE",
    "destination_scope": _HISTORY_SCOPE,
}


# The history table as a variant of `user_conversations`: the same rows, its own disposition,
# and none of the resource's keys (a variant starts from them): versions are told apart by their
# row hash, and `destination_scope` says which ones a load may retire.
_HISTORY_HINTS = dlt.mark.make_hints(
    table_name=HISTORY_TABLE,
    write_disposition=_HISTORY,
    columns=copy.deepcopy(USER_CONVERSATIONS_COLUMNS),  # dlt writes into the hints it is given
    primary_key=(),
    merge_key=(),
)


def _keeps_history(configured: bool | None) -> bool:
    """Whether this run writes history: as configured, and where it is not configured, whenever
    the dataset has it already. History is the dataset's, not a run's: a run without the flag
    that skipped it would leave the versions of memberships it ended open for ever. Turned off
    on purpose (`history = false`) where the dataset has it, a warning says so every run."""
    has_history = not _first_time(HISTORY_TABLE)
    if configured is False and has_history:
        _log.warning(
            "history = false: %s is no longer kept current (its versions stay as the last run "
            "with history left them); unset `history` to keep it",
            HISTORY_TABLE,
        )
    return has_history if configured is None else configured


def _history_versions(item: Any) -> Any:
    """`item`, a table of user conversations (changed rows or tombstones), as rows of the history
    table (`_dlt_valid_from` / `_dlt_valid_to`, null = current); None for anything else (the
    bookkeeping rows, a turn)."""
    pyarrow = sys.modules.get("pyarrow")  # imported once a table was built
    if pyarrow is None or not isinstance(item, pyarrow.Table):
        return None
    from .records import with_row_hash

    return dlt.mark.with_hints(with_row_hash(item), _HISTORY_HINTS, create_table_variant=True)


def _stored_column_types() -> dict[str, str]:
    """dlt data types of `user_conversations` columns known so far (for variant columns)."""
    try:
        table = dlt.current.source_schema().tables.get("user_conversations", {})
    except Exception:  # iterated outside a pipeline run
        return {}
    return {
        name: str(column["data_type"])
        for name, column in table.get("columns", {}).items()
        if column.get("data_type")
    }


def _current_load_id() -> str | None:
    try:
        return str(dlt.current.load_package_state()["load_id"])
    except Exception:  # iterated outside a pipeline run: no load package, no load id
        return None


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
