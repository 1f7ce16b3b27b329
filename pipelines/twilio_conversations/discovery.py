"""Which services and users a run scans: everything the credentials see, or what is configured.

Each service's user listing is read once, by `user_conversations`, which writes the `users` rows
as they are listed. A thread of its own reads the listing's pages ahead of it (`_Listing`), so
the first users' conversations are fetched while the rest of the listing is still being read
(one page at a time, `users / page_size` round trips in a row), and the chain of pages never
waits for the main thread.
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


class _Listing:
    """One service's user listing, read ahead of its reader by a thread of its own.

    The listing is a chain of page tokens, the one part of a run that cannot overlap itself, so
    a thread reads it page after page (`_read_ahead_pages`), up to `read_ahead` records ahead of
    the reader, whatever the reader is doing meanwhile (submitting fetches, or paused while a
    part is loaded). A failed page fails the reader when it reaches it, so a partial listing is
    never mistaken for the whole (which would count the users not yet listed as deleted).
    """

    def __init__(self, pages: Iterable[list[Record]], read_ahead: int, chunk: int) -> None:
        self._pages = iter(pages)
        self._read_ahead = read_ahead
        self._chunk = chunk  # records the reader takes at a time, so the read-ahead sees it go
        self._cond = threading.Condition()
        self._records: list[Record] = []  # listed, not yet taken by the reader
        self.peak = 0  # the most records held at once
        self._complete = False
        self._error: BaseException | None = None

    def start(self) -> _Listing:
        threading.Thread(target=self._read_ahead_pages, name="twilio-listing", daemon=True).start()
        return self

    def take(self) -> list[Record]:
        """The next records (up to `chunk`), waiting for a page as needed; [] once the listing
        is complete. A page that failed raises here, once the records before it are taken."""
        with self._cond:
            while not self._records and not self._complete and self._error is None:
                self._cond.wait()
            batch = self._records[: self._chunk]
            del self._records[: self._chunk]
            self._cond.notify_all()  # the read-ahead may wait for the reader
            if not batch and self._error is not None:
                raise self._error
            return batch

    def close(self) -> None:
        """Stop reading ahead (the reader is done, or gave up)."""
        with self._cond:
            self._complete = True
            self._cond.notify_all()

    def _read_ahead_pages(self) -> None:
        """Read pages while fewer than `read_ahead` records wait for the reader; stop at the
        end, at an error, or when the reader has left."""
        while True:
            with self._cond:
                while len(self._records) >= self._read_ahead and not self._complete:
                    self._cond.wait()
                if self._complete:
                    return
            try:
                page = next(self._pages, None)
            except BaseException as exc:  # handed to the reader when it reaches this page
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                if page is None:
                    self._complete = True
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

    def listing(self, service_sid: str) -> _Listing:
        """The scanned users of the service, each page read as soon as it can be; `close` it."""
        pages: Iterable[list[Record]] = (
            self._configured_users(service_sid)
            if self.user_refs
            else self._listed_users(service_sid)
        )
        # Ahead of the reader by what the workers can take while a page is on its way, and by a
        # part's pause (LISTING_READ_AHEAD).
        workers_take = 2 * self.page_size + 4 * self.client.concurrency.ceiling
        read_ahead = max(workers_take, LISTING_READ_AHEAD)
        return _Listing(pages, read_ahead, chunk=self.page_size).start()

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
