"""Fixtures for the emulator's own tests: running emulators, an authenticated session, a
helper that walks a list by following ``meta.next_page_url`` exactly like a client must, and
Twilio's spec to validate responses against."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, run_emulator
from twilio_spec import load_spec

from .helpers import session_for

#: Small but complete: 3 services, users with 0, few, moderate and >50 conversations.
SMALL = DataSpec(seed=5, services=3, users=12, max_conversations=70)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """A shared, read-only emulator (tests that mutate use ``fresh_emu``)."""
    with run_emulator(EmulatorConfig(data=SMALL)) as running:
        yield running


@pytest.fixture
def fresh_emu() -> Iterator[Emulator]:
    """An emulator of this test's own (mutations, faults, stats)."""
    with run_emulator(EmulatorConfig(data=SMALL)) as running:
        yield running


@pytest.fixture
def start() -> Iterator[Callable[..., Emulator]]:
    """Factory: ``start(config)`` runs an emulator until the test ends."""
    running: list[Emulator] = []

    def _start(config: EmulatorConfig) -> Emulator:
        emulator = Emulator(config).start()
        running.append(emulator)
        return emulator

    yield _start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def http(emu: Emulator) -> Iterator[requests.Session]:
    """Authenticated session on the shared emulator."""
    with session_for(emu) as session:
        yield session


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """Twilio's OpenAPI description of Conversations v1 (`twilio_spec.load_spec`)."""
    return load_spec()


@pytest.fixture(scope="module")
def openapi(spec: dict[str, Any]) -> Any:
    """The spec, ready to validate responses (openapi-core; skipped without it)."""
    openapi_core = pytest.importorskip("openapi_core")
    return openapi_core.OpenAPI.from_dict(spec)
