"""Fixtures for the emulator's own tests: running emulators, an authenticated session, and a
helper that walks a list by following ``meta.next_page_url`` exactly like a client must."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, run_emulator

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
