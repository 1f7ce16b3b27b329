"""Bookkeeping that scales: fingerprints are rows of `_fingerprints`, written with the partitions
they describe, so a run writes in proportion to what changed (issue "Scale to a million users").

Expected rows come from the emulator's truth; what a run wrote is read back from the destination
by load id, not from the run's own counters.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mirror import assert_user_conversations_mirror, assert_users_mirror, truth_users
from twilio_writes import TwilioWrites

DATA_TABLES = ("services", "users", "user_conversations")


def rows_of_run(outcome: Any, table: str) -> int:
    """Rows of `table` that the run's loads wrote (a run with nothing to write loads nothing)."""
    total = 0
    with outcome.pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        for load_id in outcome.load_ids:
            rows = client.execute_sql(
                f"SELECT count(*) FROM {qualified} WHERE _dlt_load_id = %s", load_id
            )
            total += int(rows[0][0])
    return total


def state_bytes_of_run(outcome: Any) -> int:
    """Bytes of pipeline state the destination stored with the run's loads (0: none)."""
    with outcome.pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name("_dlt_pipeline_state")
        return sum(
            len(state)
            for load_id in outcome.load_ids
            for (state,) in client.execute_sql(
                f"SELECT state FROM {qualified} WHERE _dlt_load_id = %s", load_id
            )
        )


def fingerprint_keys(pipeline: Any) -> set[tuple[str, str, str]]:
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name("_fingerprints")
        rows = client.execute_sql(f"SELECT resource, scope, key FROM {qualified}")
    return {(r, s, k) for r, s, k in rows}


def expected_keys(emu: Any) -> set[tuple[str, str, str]]:
    """One fingerprint per service, per user record and per user's conversation list."""
    keys = {("services", "services", s["sid"]) for s in emu.services()}
    for service in emu.services():
        for user in emu.users(service["sid"]):
            keys.add(("users", service["sid"], user["sid"]))
            keys.add(("user_conversations", service["sid"], user["sid"]))
    return keys


@pytest.mark.slow
def test_one_changed_user_of_20000_writes_its_rows_and_no_account_sized_state(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = start_emulator(seed=3, services=1, users=20_000, conversations_per_user=1)
    first = run_pipeline(emu)
    assert fingerprint_keys(first.pipeline) == expected_keys(emu)

    service = emu.services()[0]["sid"]
    user = emu.users(service)[12_345]["sid"]
    (row,) = emu.user_conversations(service, user)
    TwilioWrites(emu).set_read_state(service, user, row["conversation_sid"], LastReadMessageIndex=7)

    second = run_pipeline(emu)
    assert len(second.load_ids) == 1, "one part of the run had something to load"
    written = {table: rows_of_run(second, table) for table in DATA_TABLES}
    assert written == {"services": 0, "users": 0, "user_conversations": 1}
    assert rows_of_run(second, "_fingerprints") == 1
    # The account's 40,000 fingerprints stayed out of dlt's state: in it they were 1.55 MB.
    assert state_bytes_of_run(second) <= 64 * 1024
    assert_user_conversations_mirror(second.pipeline, emu.all_user_conversations())


def test_local_folder_lost_reads_the_fingerprints_back_from_the_destination(
    emulator: Any, run_pipeline: Any, isolated_dlt: Path
) -> None:
    first = run_pipeline(emulator)
    shutil.rmtree(isolated_dlt / "pipelines")

    second = run_pipeline(emulator)  # state restored from the destination, marker included
    users = sum(len(emulator.users(s["sid"])) for s in emulator.services())
    assert second.report.users_known == users, "progress says 'of N' from what is loaded"
    for table in (*DATA_TABLES, "_fingerprints"):
        assert rows_of_run(second, table) == 0, table

    service = emulator.services()[0]["sid"]
    user = next(
        u["sid"] for u in emulator.users(service) if emulator.user_conversations(service, u["sid"])
    )
    conversation = emulator.user_conversations(service, user)[0]["conversation_sid"]
    TwilioWrites(emulator).leave(service, user, conversation)
    shutil.rmtree(isolated_dlt / "pipelines")
    third = run_pipeline(emulator)
    truth = emulator.all_user_conversations()
    assert rows_of_run(third, "user_conversations") == len(
        emulator.user_conversations(service, user)
    )
    assert_user_conversations_mirror(third.pipeline, truth)
    assert first.pipeline.pipeline_name == third.pipeline.pipeline_name


def test_deleted_users_and_services_lose_their_fingerprints(
    start_emulator: Any, run_pipeline: Any
) -> None:
    emu = start_emulator(seed=11, services=2, users=6, max_conversations=20)
    run_pipeline(emu)
    service = emu.services()[0]["sid"]
    gone = emu.users(service)[0]["sid"]
    emu.store.delete_user(service, gone)
    second = run_pipeline(emu)
    assert fingerprint_keys(second.pipeline) == expected_keys(emu)
    assert_users_mirror(second.pipeline, truth_users(emu))


def test_fingerprints_read_back_in_small_chunks_are_the_tables_rows(
    start_emulator: Any, run_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read a re-run starts from, fetched 7 rows at a time so that every scope arrives in
    several chunks, mixed with other scopes': each (resource, scope) holds exactly its rows
    of `_fingerprints`."""
    from twilio_conversations import fingerprints

    emu = start_emulator(seed=8, services=3, users=12, max_conversations=3)
    pipeline = run_pipeline(emu).pipeline
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name("_fingerprints")
        rows = client.execute_sql(f"SELECT resource, scope, key, fingerprint FROM {qualified}")
    expected: dict[str, dict[str, dict[str, str]]] = {}
    for resource, scope, key, fingerprint in rows:
        expected.setdefault(resource, {}).setdefault(scope, {})[key] = fingerprint
    assert {(r, s, k) for r, s, k, _ in rows} == expected_keys(emu)

    monkeypatch.setattr(fingerprints, "_FETCH_ROWS", 7)
    held = fingerprints.read_fingerprints(pipeline)
    read = {
        resource: {scope: dict(h.items()) for scope, h in scopes.items()}
        for resource, scopes in held.items()
    }
    assert read == expected
    for scopes in held.values():
        for h in scopes.values():
            assert list(h.keys) == sorted(h.keys), "sorted, for the lookups' binary search"


@pytest.mark.parametrize("history", [False, True], ids=["mirror", "history"])
def test_full_refresh_writes_every_fingerprint_again(
    emulator: Any, run_pipeline: Any, history: bool
) -> None:
    run_pipeline(emulator, history=history)
    refreshed = run_pipeline(emulator, full_refresh=True, history=history)
    assert rows_of_run(refreshed, "_fingerprints") == len(expected_keys(emulator))
    assert fingerprint_keys(refreshed.pipeline) == expected_keys(emulator)
    again = run_pipeline(emulator, history=history)
    assert rows_of_run(again, "user_conversations") == 0


# -- the mapping change capture works on (no pipeline) -------------------------------------


def test_joined_chunks_are_sorted_keep_every_width_and_are_let_go() -> None:
    import numpy as np
    from twilio_conversations.fingerprints import Held

    chunks = [
        (np.array([b"US9", b"US1"]), np.array([b"nine", b"one"])),
        (np.array([b"US" + b"7" * 40]), np.array([b"a wider fingerprint than the others"])),
        (np.array([b"US5", b"US3"]), np.array([b"five", b"three"])),
    ]
    expected = {k: p for keys, prints in chunks for k, p in zip(keys, prints, strict=True)}
    held = Held.concatenate(chunks)
    assert chunks == [], "each chunk is released once copied"
    assert list(held.keys) == sorted(expected)
    assert dict(zip(held.keys, held.prints, strict=True)) == expected
    assert list(Held.concatenate([]).keys) == []


def test_the_mapping_records_what_changed_and_nothing_else() -> None:
    from twilio_conversations import changes
    from twilio_conversations.fingerprints import Fingerprints

    held = {"IS1": {"US1": "a", "US2": "b"}, "IS2": {"US3": "c"}}
    store = Fingerprints("users", held)
    assert not changes.has_changed(store, "IS1", "US1", "a")
    changes.remember(store, "IS1", "US1", "a")  # the same value: no row
    changes.remember(store, "IS1", "US2", "B")
    changes.remember(store, "IS9", "US9", "z")  # a new scope, through setdefault
    assert changes.drop_vanished(store, "IS1", {"US2"}) == ["US1"]
    assert changes.drop_vanished_scopes(store, {"IS1", "IS9"}) == {"IS2": ["US3"]}
    rows = {(r["scope"], r["key"]): r.get("fingerprint", r.get("_deleted")) for r in store.rows()}
    assert rows == {
        ("IS1", "US2"): "B",
        ("IS9", "US9"): "z",
        ("IS1", "US1"): True,
        ("IS2", "US3"): True,
    }
    assert store.rows() == []  # handed out once
    assert {s: dict(k) for s, k in store.items()} == {"IS1": {"US2": "B"}, "IS9": {"US9": "z"}}


def test_a_destination_that_cannot_be_read_back_keeps_them_in_the_state(
    emulator: Any, isolated_dlt: Path
) -> None:
    """A custom `@dlt.destination` has no SQL client: the fingerprints stay in the resource
    state as before, so an unchanged re-run still sends the sink nothing."""
    import dlt
    from twilio_conversations import twilio_conversations
    from twilio_conversations.credentials import TwilioCredentials

    received: list[tuple[str, int]] = []

    @dlt.destination(batch_size=100, loader_file_format="typed-jsonl", name="sink")
    def sink(items: Any, table: Any) -> None:
        received.append((table["name"], len(items) if items is not None else 0))

    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = emulator.account_sid, emulator.auth_token
    pipeline = dlt.pipeline("sinking", destination=sink, pipelines_dir=str(isolated_dlt / "p"))

    def run() -> dict[str, int]:
        received.clear()
        pipeline.run(twilio_conversations(credentials=credentials, base_url=emulator.base_url))
        counts: dict[str, int] = {}
        for name, n in received:
            counts[name] = counts.get(name, 0) + n
        return counts

    first = run()
    assert first["user_conversations"] == len(emulator.all_user_conversations())
    assert "_fingerprints" not in first
    assert run().get("user_conversations", 0) == 0


def test_the_compact_store_behaves_as_a_dict_of_dicts_through_every_operation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Random sets, removals and listings against a plain dict (the oracle), with the added
    keys folded into the arrays every few operations (`_FOLD_AT` made small): lookups,
    lengths, iteration, vanished keys and the rows handed out agree at every step."""
    import random

    from twilio_conversations import changes, fingerprints
    from twilio_conversations.fingerprints import Fingerprints

    monkeypatch.setattr(fingerprints._Scope, "_FOLD_AT", 3)
    rng = random.Random(5)
    keys = [f"US{n:032x}" for n in range(40)] + ["USé", "US" + "f" * 32, "US" + "f" * 40]
    for _ in range(30):
        held = {"IS1": {k: f"{rng.getrandbits(64):016x}" for k in rng.sample(keys, 15)}}
        oracle = {scope: dict(ks) for scope, ks in held.items()}
        store = Fingerprints("user_conversations", held)
        listed, oracle_listed = fingerprints.listed(store, "IS1"), set()
        written: dict[str, str | None] = {}
        for _ in range(60):
            key, op = rng.choice(keys), rng.random()
            if op < 0.5:
                value = rng.choice(["a" * 16, "b" * 20, oracle["IS1"].get(key, "c" * 16)])
                if oracle["IS1"].get(key) != value:
                    written[key] = value
                changes.remember(store, "IS1", key, value)
                oracle["IS1"][key] = value
                listed.add(key)  # a run only adds what it listed
                oracle_listed.add(key)
            elif op < 0.7 and key in oracle["IS1"]:
                changes.forget(store, "IS1", [key])
                del oracle["IS1"][key]
                written[key] = None
                if not oracle["IS1"]:
                    del oracle["IS1"]
                    oracle["IS1"] = {}
                    store.setdefault("IS1")
            else:
                listed.add(key)
                oracle_listed.add(key)
            assert store.get("IS1", {}).get(key) == oracle["IS1"].get(key)
            assert len(store.get("IS1", {})) == len(oracle["IS1"])
        assert dict(store.get("IS1", {})) == oracle["IS1"]
        assert changes.vanished(store, "IS1", listed) == changes.vanished(
            oracle, "IS1", oracle_listed
        )
        rows = {r["key"]: r.get("fingerprint") for r in store.rows()}
        assert rows == written


@pytest.mark.slow
def test_the_user_listing_is_let_go_as_it_is_read_on_first_loads_and_unchanged_re_runs(
    start_emulator: Any, run_pipeline: Any
) -> None:
    """A million users' records would be 1.7 GB held until the run ends: the listing drops
    what both its readers (`users`, `user_conversations`) took. On an unchanged re-run
    `user_conversations` writes nothing, so it must still hand `users` its turns."""
    emu = start_emulator(seed=4, services=1, users=12_000, conversations_per_user=1)
    users = len(emu.users(emu.services()[0]["sid"]))
    first = run_pipeline(emu)
    rerun = run_pipeline(emu)
    assert rows_of_run(rerun, "user_conversations") == 0
    for run in (first, rerun):
        # What the read-ahead may hold (2,000 users and a page) plus the steps it is let go in.
        assert 0 < run.report.users_held_peak <= 2_000 + 50 + 5 * 50 < users / 4


def test_sids_and_digests_are_held_as_their_bytes_and_decode_back() -> None:
    """A SID takes 19 bytes and a 16-digit digest 9 (instead of 34 and 16), a chunk of them is
    encoded as each alone would be (lookups encode one key), zero bytes at the end survive
    numpy's fixed-width strings, and what is neither keeps its UTF-8."""
    import numpy as np
    from twilio_conversations.fingerprints import Held, _decode, _encode, _encode_one

    sids = [f"US{n:032x}" for n in (0, 1, 255, 2**128 - 1)] + ["IS" + "0a" * 16]
    digests = ["00" * 8, "ff" * 8, "0123456789abcdef", "a0" * 7 + "00", "5" * 16]
    for values, width in ((sids, 19), (digests, 9)):
        encoded = _encode(values)
        assert encoded.dtype == np.dtype(f"S{width}")
        assert list(encoded) == [_encode_one(v) for v in values]
        assert [_decode(e) for e in encoded] == values
    others = ["alice", "Ünïcode", "US" + "F" * 32, "abc", "", "US" + "0" * 31, *sids[:2]]
    assert [_decode(e) for e in _encode(others)] == others
    held = Held.of(dict(zip(sids, digests, strict=True)))
    assert held.keys.nbytes + held.prints.nbytes == len(sids) * (19 + 9)
    assert dict(held.items()) == dict(zip(sids, digests, strict=True))
