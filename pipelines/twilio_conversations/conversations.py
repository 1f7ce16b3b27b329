"""The `conversations` resource: every scanned service's conversations
(`GET /v1/Services/{IS}/Conversations`), an exact mirror.

The same change capture as `services`, per service: each conversation is its own partition,
fingerprinted whole, so a renamed, closed or re-attributed conversation is written again and an
unchanged one is not; a conversation a complete listing no longer has gets a tombstone, and so
does every conversation of a service that is gone. Every run lists every conversation (the API
has no filter on what changed). Not in the default set: `run --resource conversations`, or
`twilio_conversations().with_resources("conversations", ...)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dlt
from dlt.sources import DltResource

from . import changes, current, fingerprints
from .columns import CONVERSATION_KEY, CONVERSATIONS_COLUMNS, MERGE, with_parsed_attributes
from .discovery import Catalog
from .errors import TwilioAPIError
from .parts import Parts
from .pii import PiiPolicy
from .settings import (
    CONVERSATIONS_KEY,
    CONVERSATIONS_MAX_PAGE_SIZE,
    CONVERSATIONS_PATH,
    DELETED_COLUMN,
)

NAME = "conversations"


def conversations_resource(catalog: Catalog, parts: Parts, pii: PiiPolicy) -> DltResource:
    written = False  # in the run's first part; a run loaded in parts extracts the source again

    @dlt.resource(
        name=NAME,
        primary_key=CONVERSATION_KEY,
        write_disposition=MERGE,
        columns=CONVERSATIONS_COLUMNS,
        selected=False,
    )
    def conversations() -> Iterator[Any]:
        """Each scanned service's conversations, written when they change."""
        nonlocal written
        if written:
            return
        written = True
        if current.first_time(NAME):
            yield dlt.mark.materialize_table_schema()
        state = fingerprints.open_fingerprints(NAME, wait=parts.wait)
        services = catalog.services()
        rows: list[dict[str, Any]] = []
        for service in services:
            listed = _listed(catalog, service["sid"])
            if listed is None:  # the service vanished while listed: its rows are kept
                continue
            listed = pii.apply(NAME, listed)  # before fingerprints and dlt see a raw value
            changed = changes.changed_records(state, service["sid"], listed)
            rows += [with_parsed_attributes(record) for record in changed]
            gone = changes.drop_vanished(state, service["sid"], {r["sid"] for r in listed})
            rows += _tombstones(service["sid"], gone)
        if catalog.scans_all_services:
            seen = {service["sid"] for service in services}
            for service_sid, gone in changes.drop_vanished_scopes(state, seen).items():
                rows += _tombstones(service_sid, gone)
        catalog.report.rows_deleted[NAME] += sum(1 for row in rows if row.get(DELETED_COLUMN))
        if rows:
            yield rows
        yield from fingerprints.rows_to_load(state)

    return fingerprints.add_table(conversations)


def _listed(catalog: Catalog, service_sid: str) -> Sequence[Mapping[str, Any]] | None:
    """The service's whole list of conversations (one record per SID, the copy served last), or
    None when the service is not found (404) by the time it is listed."""
    page_size = min(catalog.page_size, CONVERSATIONS_MAX_PAGE_SIZE)
    path = CONVERSATIONS_PATH.format(service_sid=service_sid)
    try:
        pages = catalog.client.iter_pages(path, CONVERSATIONS_KEY, {"PageSize": page_size})
        return list({record["sid"]: record for page in pages for record in page}.values())
    except TwilioAPIError as exc:
        if exc.status != 404:
            raise
        catalog.report.skip(
            service_sid, "Conversations", "service not found (404) when listed; its rows are kept"
        )
        return None


def _tombstones(service_sid: str, sids: list[str]) -> list[dict[str, Any]]:
    return [{"chat_service_sid": service_sid, "sid": sid, DELETED_COLUMN: True} for sid in sids]
