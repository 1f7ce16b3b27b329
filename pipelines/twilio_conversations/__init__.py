"""dlt source for Twilio Conversations: services, users and each user's conversations.

The seed endpoint is `GET /v1/Services/{ChatServiceSid}/Users/{UserSid}/Conversations`, reached by
discovery (`/v1/Services` -> `/v1/Services/{IS}/Users` -> each user's list) or by configured SIDs
(`user_conversations.py`). Each module's job: docs/architecture.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import dlt
from dlt.common.typing import TSecretStrValue
from dlt.sources import DltResource

from . import changes, current, fingerprints
from .accounts import SETTING_KEYS as ACCOUNT_SETTING_KEYS
from .client import RetryPolicy, TwilioClient
from .columns import MERGE, SERVICES_COLUMNS, with_parsed_attributes
from .config_check import check_settings
from .conversations import conversations_resource
from .credentials import TwilioCredentials
from .discovery import (
    Catalog,
    validate_max_workers,
    validate_page_size,
    validate_service_sids,
    validate_user_refs,
)
from .dlt_logs import quiet_expected_dlt_warnings
from .history import HISTORY_TABLE
from .loading import Loaded, load_in_parts
from .parts import Parts
from .pii import parse_policy
from .report import RunReport
from .settings import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_WORKERS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REQUEST_MAX_ATTEMPTS,
    DEFAULT_REQUEST_MAX_RETRY_DELAY,
    DEFAULT_REQUEST_TIMEOUT,
    DELETED_COLUMN,
)
from .user_conversations import Scan, Settings, user_conversations_resource
from .window import UpdatedWindow

__all__ = [
    "HISTORY_TABLE",
    "Loaded",
    "Parts",
    "RunReport",
    "TwilioCredentials",
    "load_in_parts",
    "twilio_conversations",
]


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
    first_load_holder: str | None = None,
    run_report: RunReport | None = None,
    parts: Parts | None = None,
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
        first_load_holder: Who the dataset's first-load claim belongs to (`first_load.py`);
            by default this pipeline's name, folder and host. Runs that give the same one are
            one writer: set it where an orchestrator runs one at a time on workers that keep
            nothing between runs, so that the retry of a first load that died finishes it.
        run_report: Collects counters for the run summary; a fresh one when omitted.
        parts: Where the run is loaded in parts, how (`load_in_parts` gives it); one part when
            omitted.

    Returns:
        The resources `services`, `users` and `user_conversations`, plus
        `user_conversations_history` in history mode (as a table of `user_conversations`), and
        `conversations`, which runs only when selected (`with_resources`).
    """
    check_settings(SETTING_KEYS, WIDENING_KEYS)
    quiet_expected_dlt_warnings()
    report = run_report if run_report is not None else RunReport()
    settings = Settings(
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
        first_load_holder=first_load_holder,
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
    # `users` is a table of `user_conversations`, which reads each service's user listing once
    # and writes the users as they are listed.
    parts = parts or Parts()
    return [
        services_resource(catalog, parts),
        user_conversations_resource(Scan(catalog, settings, parts)),
        conversations_resource(catalog, parts, settings.pii),  # not selected by default
    ]


# Every key `[sources.twilio_conversations]` may hold: the source's arguments (dlt injects them;
# `run_report` and `parts` are the caller's) and `load_in_parts`' `lock_timeout`,
# `users_per_load` and `keep_loaded_packages`.
SETTING_KEYS = (
    *(
        name
        for name in inspect.signature(twilio_conversations).parameters
        if name not in ("run_report", "parts")
    ),
    "lock_timeout",
    "users_per_load",
    "keep_loaded_packages",
    # several accounts in one run (`accounts.py`), read by the runner
    *ACCOUNT_SETTING_KEYS,
)


def services_resource(catalog: Catalog, parts: Parts) -> DltResource:
    written = False  # in the run's first part; a run loaded in parts extracts the source again

    @dlt.resource(
        name="services",
        primary_key="sid",
        write_disposition=MERGE,
        columns=SERVICES_COLUMNS,
    )
    def services() -> Iterator[list[dict[str, Any]]]:
        """Conversation Services (`IS…`), written when they change."""
        nonlocal written
        if written:
            return
        written = True
        if current.first_time("services"):
            yield dlt.mark.materialize_table_schema()
        state = fingerprints.open_fingerprints("services", wait=parts.wait)
        records = catalog.services()
        changed = [
            with_parsed_attributes(r) for r in changes.changed_records(state, "services", records)
        ]
        if catalog.scans_all_services:
            gone = changes.drop_vanished(state, "services", {r["sid"] for r in records})
            catalog.report.rows_deleted["services"] += len(gone)
            changed.extend({"sid": sid, DELETED_COLUMN: True} for sid in gone)
        if changed:
            yield changed
        yield from fingerprints.rows_to_load(state)

    return fingerprints.add_table(services)
