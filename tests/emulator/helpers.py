"""Helpers shared by the emulator tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from twilio_emulator import Emulator, EmulatorConfig


def session_for(emulator: Emulator) -> requests.Session:
    """A keep-alive session authenticated with the account SID and auth token."""
    session = requests.Session()
    session.auth = (emulator.account_sid, emulator.auth_token)
    return session


def walk(session: requests.Session, url: str, key: str) -> tuple[list[dict[str, Any]], int]:
    """All rows of a list by following ``next_page_url``; returns (rows, pages)."""
    rows: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = session.get(next_url, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["meta"]["key"] == key
        rows.extend(body[key])
        next_url = body["meta"]["next_page_url"]
        pages += 1
        assert pages < 10_000, "paging does not terminate"
    return rows, pages


def membership_counts(emulator: Emulator, service_sid: str) -> dict[str, int]:
    """user SID -> number of conversations, from the store."""
    with emulator.store.lock:
        service = emulator.store.services[service_sid]
        return {sid: len(u.memberships) for sid, u in service.users.items()}


#: The ``start`` fixture: runs an emulator with this config until the test ends.
Starter = Callable[[EmulatorConfig], Emulator]
