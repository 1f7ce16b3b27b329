"""Which services and users a run scans: everything the credentials see, or what is configured.

Listings are memoised per run so the `users` and `user_conversations` resources share one walk
of each service's users instead of paying for it twice. The walk is shared page by page and read
by a thread of its own: a reader gets each user as soon as its page has arrived, so
`user_conversations` fetches the first users' conversations while the rest of the listing is
still being read (one page at a time, `users / page_size` round trips in a row), and the chain
of pages never waits for the main thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from .client import TwilioClient
from .errors import ConfigurationError, NotFoundError, TwilioAPIError
from .report import RunReport
from .settings import (
    LISTING_READ_AHEAD,
    MAX_IDENTITY_LENGTH,
    MAX_MAX_WORKERS,
    MAX_PAGE_SIZE,
    MIN_PAGE_SIZE,
    SERVICE_SID_PATTERN,
    SERVICES_KEY,
    SERVICES_PATH,
    SID_LOOKALIKE_PATTERN,
    USER_PATH,
    USER_SID_PATTERN,
    USERS_KEY,
    USERS_PATH,
)

Record = dict[str, Any]

_log = logging.getLogger("twilio_conversations")

# The resources that read each service's user list: `users` and `user_conversations`.
USERS_READERS = 2


def validate_service_sids(values: Sequence[str] | None) -> list[str]:
    """Configured service SIDs, checked against Twilio's pattern before any request."""
    sids = _as_list(values, "service_sids")
    for sid in sids:
        if not SERVICE_SID_PATTERN.match(sid):
            raise ConfigurationError(
                f"service_sids: {sid!r} is not a Conversation Service SID "
                "(IS followed by 32 lower-case hex digits)"
            )
    return sids


def validate_user_refs(values: Sequence[str] | None) -> list[str]:
    """Configured users: `US…` SIDs or identities (case-sensitive, up to 256 characters).

    An identity is sent as configured, outer spaces included (Twilio identities are arbitrary
    strings: " padded " and "padded" are two users); a SID, which has a fixed pattern, is
    trimmed. An identity with outer spaces is warned about, being easy to type by mistake.
    """
    refs = _as_list(values, "user_sids", trim=lambda ref: bool(USER_SID_PATTERN.match(ref)))
    for ref in refs:
        if not ref or len(ref) > MAX_IDENTITY_LENGTH:
            raise ConfigurationError(
                f"user_sids: {ref!r} is neither a User SID nor an identity of 1-256 characters"
            )
        if SID_LOOKALIKE_PATTERN.match(ref) and not USER_SID_PATTERN.match(ref):
            raise ConfigurationError(
                f"user_sids: {ref!r} looks like a SID but is not a User SID "
                "(US followed by 32 lower-case hex digits)"
            )
        if ref != ref.strip():
            _log.warning(
                "user_sids: the identity %r has spaces at its start or end; it is sent as "
                "configured, spaces included",
                ref,
            )
    return refs


def validate_page_size(page_size: int) -> int:
    if not isinstance(page_size, int) or not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        raise ConfigurationError(
            f"page_size {page_size!r} must be an integer from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}"
        )
    return page_size


def validate_max_workers(max_workers: int) -> int:
    """`max_workers` as given, if it is an integer from 1 to `MAX_MAX_WORKERS` (see settings.py)."""
    valid = isinstance(max_workers, int) and not isinstance(max_workers, bool)
    if not valid or not 1 <= max_workers <= MAX_MAX_WORKERS:
        raise ConfigurationError(f"max_workers {max_workers!r} must be from 1 to {MAX_MAX_WORKERS}")
    return max_workers


def _as_list(
    values: Sequence[str] | str | None,
    setting: str,
    trim: Callable[[str], bool] = lambda value: True,
) -> list[str]:
    """The configured values, each trimmed of outer spaces where `trim` says so of the trimmed
    value, in order, without repeats."""
    if values is None:
        return []
    if isinstance(values, str):
        # A single value from an environment variable or a CLI flag: "IS1,IS2" or one SID.
        values = [v for v in values.split(",")]
    cleaned = []
    for value in map(str, values):
        trimmed = value.strip()
        if not trimmed:
            raise ConfigurationError(f"{setting} contains an empty value")
        cleaned.append(trimmed if trim(trimmed) else value)
    return list(dict.fromkeys(cleaned))


def user_path(service_sid: str, user: str) -> str:
    """Path segment for a user SID or identity; identities may hold `/ ? # %` and unicode."""
    return USER_PATH.format(service_sid=service_sid, user=quote(user, safe=""))


class _SharedListing:
    """One service's user listing, read by several readers, each page requested once.

    The listing is a chain of page tokens, the one part of a run that cannot overlap itself,
    so a thread of its own reads it page after page (`_read_ahead_pages`), up to `read_ahead`
    records ahead of the readers, whatever the readers are doing meanwhile.

    A *leader* (`read`, used by `user_conversations`) waits for the pages it needs, and the
    read-ahead follows the leaders. A *follower* (`arrived`, used by `users`) takes whatever has
    arrived and, when it has caught up while a leader is open, hands its turn back instead of
    waiting: dlt extracts resources on one thread, so a follower waiting for the rest of the
    listing would hold up every conversation fetch the leader would have submitted meanwhile
    (docs/performance.md, "Where the time goes", 14). With no leader open, a follower waits
    and leads the read-ahead itself. A failed page fails every reader that reaches it, so none
    can mistake a partial listing for the whole (which would count the users not yet listed as
    deleted).
    """

    def __init__(
        self, pages: Iterable[list[Record]], read_ahead: int, chunk: int, readers: int
    ) -> None:
        self._pages = iter(pages)
        self._read_ahead = read_ahead
        self._chunk = chunk
        self._readers = readers  # readers expected: records go once each of them passed
        self._cond = threading.Condition()
        self._records: list[Record] = []  # the listing from record `_base` on
        self._base = 0
        self._left = 0  # readers that finished
        self.peak = 0  # the most records held at once
        self._complete = False
        self._error: BaseException | None = None
        # Records taken by each open reader, leaders and followers apart.
        self._leaders: dict[object, int] = {}
        self._followers: dict[object, int] = {}
        self._reading = False  # the read-ahead thread is running

    def read(self) -> Iterator[Record]:
        """Every record, waiting for each page as needed."""
        reader = object()
        try:
            index = 0
            while True:
                batch = self._take(self._leaders, reader, index)
                if batch is None:
                    return  # the listing is complete
                index += len(batch)
                yield from batch
        finally:
            self._leave(self._leaders, reader)

    def arrived(self) -> Iterator[list[Record] | None]:
        """Every record, in batches of what has arrived since the last one.

        `None` means "caught up while a leader is open": the caller should let the leader run
        (the leader either takes the next page or finishes the listing, so `None`s never
        outlast it).
        """
        reader = object()
        try:
            index = 0
            while True:
                with self._cond:
                    caught_up = index == self._end and not self._complete
                    hand_back = caught_up and bool(self._leaders)
                if hand_back:
                    yield None
                    continue
                batch = self._take(self._followers, reader, index)
                if batch is None:
                    return
                index += len(batch)
                yield batch
        finally:
            self._leave(self._followers, reader)

    def _take(self, readers: dict[object, int], reader: object, index: int) -> list[Record] | None:
        """The records from `index` on, waiting for the next page if there are none yet; None:
        the listing is complete. A leader takes `chunk` at most, so the read-ahead sees its
        progress; a follower all that arrived, since it gets one turn to the leader's many."""
        with self._cond:
            readers[reader] = index
            self._cond.notify_all()  # the read-ahead may be waiting for readers to catch up
            if not self._reading and not self._complete and self._error is None:
                self._reading = True
                threading.Thread(
                    target=self._read_ahead_pages, name="twilio-listing", daemon=True
                ).start()
            self._trim()
            while index == self._end and not self._complete and self._error is None:
                self._cond.wait()
            if index < self._end:
                start = index - self._base
                end = start + self._chunk if readers is self._leaders else None
                return self._records[start:end]
            if self._error is not None:
                raise self._error
            return None

    @property
    def _end(self) -> int:
        """Records listed so far."""
        return self._base + len(self._records)

    def _trim(self) -> None:
        """Let go of the records every expected reader has taken (none while a reader has yet
        to come: it reads from the first). A million users' records would be 1.7 GB."""
        if len(self._leaders) + len(self._followers) + self._left < self._readers:
            return
        low = min([*self._leaders.values(), *self._followers.values()], default=self._end)
        if low - self._base >= 4 * self._chunk:  # in steps, not record by record
            del self._records[: low - self._base]
            self._base = low

    def _leave(self, readers: dict[object, int], reader: object) -> None:
        with self._cond:
            if readers.pop(reader, None) is not None:
                self._left += 1
            self._cond.notify_all()

    def _lead(self) -> int | None:
        """How far the read-ahead follows: the furthest leader, else the furthest follower;
        None when no reader is open."""
        readers = self._leaders or self._followers
        return max(readers.values()) if readers else None

    def _read_ahead_pages(self) -> None:
        """Read pages while the lead (`_lead`) is fewer than `read_ahead` records behind; stop at
        the end, at an error, or when every reader has left (a reader that comes starts it
        again)."""
        while True:
            with self._cond:
                while (lead := self._lead()) is not None and (self._end - lead >= self._read_ahead):
                    self._cond.wait()
                if lead is None:
                    self._reading = False
                    return
            try:
                page = next(self._pages, None)
            except BaseException as exc:  # handed to every reader that reaches this page
                with self._cond:
                    self._error, self._reading = exc, False
                    self._cond.notify_all()
                return
            with self._cond:
                if page is None:
                    self._complete, self._reading = True, False
                else:
                    self._records.extend(page)
                    self.peak = max(self.peak, len(self._records))
                self._cond.notify_all()
                if page is None:
                    return


class Catalog:
    """The services and users of one run.

    Args:
        client: HTTP client.
        page_size: Requested page size (the server may clamp it).
        service_sids: Only these services (all visible services when empty).
        user_refs: Only these users, by SID or identity, in every scanned service (all when empty).
        report: Where skipped and unresolved users are recorded.
    """

    def __init__(
        self,
        client: TwilioClient,
        page_size: int,
        service_sids: Sequence[str],
        user_refs: Sequence[str],
        report: RunReport,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.service_sids = list(service_sids)
        self.user_refs = list(user_refs)
        self.report = report
        self._lock = threading.RLock()
        self._services: list[Record] | None = None
        self._users: dict[str, _SharedListing] = {}
        self._users_read_by: dict[str, int] = {}
        self._resolved_refs: set[str] = set()
        self._vanished: set[str] = set()  # services not found (404) when their users were listed

    @property
    def scans_all_services(self) -> bool:
        """A complete scan of services may conclude that an absent service was deleted."""
        return not self.service_sids

    @property
    def scans_all_users(self) -> bool:
        """A complete scan of users may conclude that an absent user was deleted."""
        return not self.user_refs

    def listed_all_users(self, service_sid: str) -> bool:
        """Whether the service's listing, now read to its end, was a complete scan of its users:
        only then may a user it lacks be taken as deleted (not for a service that vanished
        while it was listed)."""
        return self.scans_all_users and service_sid not in self._vanished

    def services(self) -> list[Record]:
        with self._lock:
            if self._services is None:
                listed = [
                    record
                    for page in self.client.iter_pages(
                        SERVICES_PATH, SERVICES_KEY, {"PageSize": self.page_size}
                    )
                    for record in page
                ]
                # A service served twice (a page that shifted) is one service: the copy
                # served last is the API's latest word.
                listed = list({record["sid"]: record for record in listed}.values())
                if self.service_sids:
                    by_sid = {record["sid"]: record for record in listed}
                    missing = [sid for sid in self.service_sids if sid not in by_sid]
                    if missing:
                        raise NotFoundError(
                            f"service {', '.join(missing)} not found: not listed by "
                            f"{self.client.base_url}{SERVICES_PATH} for these credentials"
                        )
                    listed = [by_sid[sid] for sid in self.service_sids]
                self._services = listed
                self.report.services_scanned = len(listed)
            return self._services

    def iter_users(self, service_sid: str) -> Iterator[Record]:
        """The scanned users of the service, each as soon as its page has arrived."""
        return self._listing(service_sid).read()

    def arrived_users(self, service_sid: str) -> Iterator[list[Record] | None]:
        """The scanned users of the service in batches as they arrive, `None` when caught up
        while an `iter_users` reader is open (see `_SharedListing.arrived`)."""
        return self._listing(service_sid).arrived()

    def _listing(self, service_sid: str) -> _SharedListing:
        with self._lock:
            listing = self._users.get(service_sid)
            if listing is None:
                pages: Iterable[list[Record]] = (
                    self._configured_users(service_sid)
                    if self.user_refs
                    else self._listed_users(service_sid)
                )
                # Ahead of the readers by what the workers can take while a page is on its way,
                # and by a part's pause (LISTING_READ_AHEAD).
                workers_take = 2 * self.page_size + 4 * self.client.concurrency.ceiling
                read_ahead = max(workers_take, LISTING_READ_AHEAD)
                listing = _SharedListing(
                    pages, read_ahead, chunk=self.page_size, readers=USERS_READERS
                )
                self._users[service_sid] = listing
            return listing

    def _listed_users(self, service_sid: str) -> Iterator[list[Record]]:
        """The pages of the service's users; none more once the service is not found (404), as
        when it was deleted after `/Services` listed it: skipped like a user that vanishes
        between listing and reading, its rows kept until a run no longer lists it."""
        try:
            yield from self.client.iter_pages(
                USERS_PATH.format(service_sid=service_sid),
                USERS_KEY,
                {"PageSize": self.page_size},
                first=True,
            )
        except TwilioAPIError as exc:
            if exc.status != 404:
                raise
            self._vanished.add(service_sid)
            self.report.skip(
                service_sid,
                "Users",
                "service not found (404) when its users were listed; its rows are kept",
            )

    def done_with_users(self, service_sid: str) -> None:
        """One reader is done with the service's users; the last one lets the listing go.

        Otherwise the whole listing (Python objects for every user; docs/performance.md,
        "Figures behind the code's choices") stays alive until the run ends, on top of DuckDB's
        memory during the load. With one of the readers deselected the listing simply lives
        until the run ends.
        """
        with self._lock:
            done = self._users_read_by.get(service_sid, 0) + 1
            self._users_read_by[service_sid] = done
            listing = self._users.get(service_sid)
            if listing is not None:
                self.report.users_held_peak = max(self.report.users_held_peak, listing.peak)
            if done >= USERS_READERS:
                self._users.pop(service_sid, None)

    def unresolved_user_refs(self) -> list[str]:
        """Configured users found in no scanned service (call after every service's users)."""
        return [ref for ref in self.user_refs if ref not in self._resolved_refs]

    def _configured_users(self, service_sid: str) -> Iterator[list[Record]]:
        yield self._resolve_configured_users(service_sid)  # one "page", resolved when first read

    def _resolve_configured_users(self, service_sid: str) -> list[Record]:
        found: dict[str, Record] = {}
        for ref in self.user_refs:
            try:
                record = self.client.get(user_path(service_sid, ref))
            except TwilioAPIError as exc:
                if exc.status == 404:
                    continue  # not a user of this service; reported if no service has it
                raise
            self._resolved_refs.add(ref)
            found.setdefault(record["sid"], record)
        return list(found.values())
