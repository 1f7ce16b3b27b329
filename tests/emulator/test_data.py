"""Generated data: deterministic, realistic, spec-shaped, and able to scale."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections import Counter

import pytest
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, Store

from .helpers import Starter, session_for, walk

ACCOUNT = "AC" + "1" * 32
SID = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _rows(spec: DataSpec) -> list[tuple[object, ...]]:
    store = Store.generate(spec, ACCOUNT)
    with store.lock:
        return [
            (s.sid, u.sid, u.identity, m, c.date_updated, c.friendly_name, c.attributes)
            for s, u, m, c in store.iter_memberships()
        ]


def test_same_seed_same_data_other_seed_other_data() -> None:
    spec = DataSpec(seed=42, services=2, users=15, max_conversations=80)
    assert _rows(spec) == _rows(spec)
    assert _rows(spec) != _rows(DataSpec(seed=43, services=2, users=15, max_conversations=80))


def test_default_demo_data_size() -> None:
    # Generation time is measured in benchmarks/, not asserted here (0.02 s when last measured).
    store = Store.generate(DataSpec(), ACCOUNT)
    assert len(store.services) == 3
    assert 2000 <= store.membership_count() <= 20_000


def test_conversation_count_mix(emu: Emulator) -> None:
    for service in emu.services():
        with emu.store.lock:
            counts = [len(u.memberships) for u in emu.store.services[service["sid"]].users.values()]
        assert 0 in counts
        assert any(1 <= n <= 10 for n in counts)
        assert any(n > 50 for n in counts)
        assert max(counts) <= 70


def test_exact_conversations_per_user() -> None:
    store = Store.generate(
        DataSpec(seed=1, services=1, users=30, conversations_per_user=25), ACCOUNT
    )
    with store.lock:
        service = store.services[store.default_service_sid]
        assert {len(u.memberships) for u in service.users.values()} == {25}
        assert len(service.users) == 30


def test_rows_are_realistic(emu: Emulator) -> None:
    rows = emu.all_user_conversations()
    assert len(rows) > 500
    states = Counter(r["conversation_state"] for r in rows)
    assert set(states) == {"active", "inactive", "closed"}
    assert set(Counter(r["notification_level"] for r in rows)) == {"default", "muted"}
    assert any(r["last_read_message_index"] is None for r in rows)
    assert any(r["unread_messages_count"] == 0 for r in rows)
    assert any((r["unread_messages_count"] or 0) > 0 for r in rows)
    attributes = Counter(r["attributes"] for r in rows)
    assert attributes["{}"] > len(rows) / 3
    parsed = 0
    for value in attributes:
        with contextlib.suppress(json.JSONDecodeError):
            parsed += isinstance(json.loads(value), dict) and value != "{}"
    assert parsed > 0
    for row in rows:
        if row["conversation_state"] == "active":
            assert row["timers"] == {}
        else:
            assert set(row["timers"]) == {"date_inactive", "date_closed"}
        if row["last_read_message_index"] is None:
            assert row["unread_messages_count"] is None
        else:
            assert 0 <= row["unread_messages_count"] <= 1000
        for key in ("account_sid", "chat_service_sid", "conversation_sid", "participant_sid"):
            assert SID.match(row[key]), row[key]
        assert row["account_sid"].startswith("AC") and row["participant_sid"].startswith("MB")
        assert TIMESTAMP.match(row["date_created"]) and TIMESTAMP.match(row["date_updated"])
        assert row["date_created"] <= row["date_updated"]


def test_some_attributes_are_not_valid_json() -> None:
    store = Store.generate(DataSpec(seed=2, services=1, users=60, max_conversations=100), ACCOUNT)
    invalid = 0
    with store.lock:
        for conv in store.services[store.default_service_sid].conversations.values():
            try:
                json.loads(conv.attributes)
            except json.JSONDecodeError:
                invalid += 1
    assert invalid > 0


def test_sids_have_the_right_prefixes(emu: Emulator) -> None:
    for service in emu.services():
        assert SID.match(service["sid"]) and service["sid"].startswith("IS")
        for user in emu.users(service["sid"]):
            assert SID.match(user["sid"]) and user["sid"].startswith("US")
            assert user["role_sid"].startswith("RL")


def test_generated_data_is_before_the_logical_now(emu: Emulator) -> None:
    from twilio_emulator.model import iso

    now = iso(emu.store.now())
    assert all(r["date_updated"] < now for r in emu.all_user_conversations())


def test_prebuilt_store_is_served(start: Starter) -> None:
    store = Store.generate(DataSpec(seed=9, services=1, users=3), ACCOUNT)
    conversation = store.create_conversation(store.default_service_sid, friendly_name="pre-built")
    emu = Emulator(EmulatorConfig(account_sid=ACCOUNT), store=store).start()
    try:
        assert emu.store is store
        assert emu.services()[0]["account_sid"] == ACCOUNT
        assert store.conversation(store.default_service_sid, conversation).friendly_name
    finally:
        emu.stop()


def _rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_scale_20000_users_by_50_conversations() -> None:
    gc.collect()
    before = _rss_bytes()
    store = Store.generate(
        DataSpec(seed=1, services=1, users=20_000, conversations_per_user=50), ACCOUNT
    )
    grown = _rss_bytes() - before
    assert store.membership_count() == 1_000_000
    # Compact storage: about 300 bytes per membership, its share of conversations included.
    assert grown / 1_000_000 < 400, f"{grown / 1e6:.0f} MB for 1M memberships"
    # The big store serves pages like a small one.
    with Emulator(EmulatorConfig(account_sid=ACCOUNT), store=store) as emu:
        service_sid = store.default_service_sid
        user = store.services[service_sid].user_sids[-1]
        with session_for(emu) as session:
            url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{user}/Conversations"
            rows, pages = walk(session, url, "conversations")
        assert rows == emu.user_conversations(service_sid, user) and len(rows) == 50
