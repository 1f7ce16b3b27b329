"""The `conversations` resource: every scanned service's conversations, an exact mirror of the
emulator's truth after each run (renamed, closed, created and removed conversations, a removed
service), an unchanged re-run writes nothing, and it runs only when asked for."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mirror import assert_conversations_mirror
from twilio_writes import TwilioWrites

CONVERSATIONS = ["conversations"]


def test_conversations_mirror_the_api_through_writes(
    emulator: Any, run_pipeline: Any, destination: dict[str, Any]
) -> None:
    first = run_pipeline(emulator, resources=CONVERSATIONS, **destination)
    truth = emulator.all_conversations()
    assert first.rows_written == {"conversations": len(truth)}
    assert assert_conversations_mirror(first.pipeline, truth) == len(truth)
    assert len({row["chat_service_sid"] for row in truth}) == len(emulator.services()) > 1

    unchanged = run_pipeline(emulator, resources=CONVERSATIONS, **destination)
    assert unchanged.rows_written == {"conversations": 0} and not unchanged.load_ids

    service = emulator.services()[0]["sid"]
    renamed, closed, removed = (row["sid"] for row in emulator.conversations(service)[:3])
    writes = TwilioWrites(emulator)
    writes.update_conversation(service, renamed, FriendlyName="renamed by the test")
    writes.update_conversation(service, closed, State="closed")
    writes.delete_conversation(service, removed)
    created = writes.create_conversation(service, FriendlyName="new")

    changed = run_pipeline(emulator, resources=CONVERSATIONS, **destination)
    assert changed.rows_written == {"conversations": 3}  # renamed, closed, created
    assert changed.rows_deleted == {"conversations": 1}
    truth = emulator.all_conversations()
    assert created in {row["sid"] for row in truth} and removed not in {r["sid"] for r in truth}
    assert_conversations_mirror(changed.pipeline, truth)


def test_a_service_filter_scans_only_its_conversations_and_removes_none_elsewhere(
    emulator: Any, run_pipeline: Any
) -> None:
    everything = run_pipeline(emulator, resources=CONVERSATIONS)
    one = emulator.services()[1]["sid"]
    filtered = run_pipeline(emulator, resources=CONVERSATIONS, service_sids=[one])
    assert filtered.rows_written == {"conversations": 0} and filtered.rows_deleted == {}
    assert_conversations_mirror(everything.pipeline, emulator.all_conversations())


def test_a_default_run_leaves_conversations_alone(emulator: Any, run_pipeline: Any) -> None:
    outcome = run_pipeline(emulator)
    assert set(outcome.rows_written) == {"services", "users", "user_conversations"}
    assert "conversations" not in outcome.pipeline.default_schema.tables
    assert emulator.stats.snapshot().by_route.get("conversations", 0) == 0  # never listed


def test_the_pii_policy_covers_conversations(emulator: Any, run_pipeline: Any) -> None:
    key = "a-test-key-of-sixteen-or-more"
    pii = {"conversations.friendly_name": "hash", "conversations.attributes": "drop"}
    outcome = run_pipeline(emulator, resources=CONVERSATIONS, pii=pii, pii_hash_key=key)
    truth = emulator.all_conversations()
    named = [row for row in truth if row["friendly_name"]]
    assert named, "the emulator names some conversations"
    expected = [
        {
            **row,
            "friendly_name": row["friendly_name"]
            and "hmac-sha256:"
            + hmac.new(key.encode(), row["friendly_name"].encode(), hashlib.sha256).hexdigest(),
            "attributes": None,
        }
        for row in truth
    ]
    assert_conversations_mirror(outcome.pipeline, expected)
