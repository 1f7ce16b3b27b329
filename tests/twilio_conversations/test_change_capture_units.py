"""Change capture as pure functions: what vanished is returned and forgotten in one step, and how
one user's fetch is judged against the fingerprints (no pipeline, no emulator)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from twilio_conversations import changes
from twilio_conversations.settings import ARROW_BATCH_ROWS
from twilio_conversations.user_conversations import _ArrowBatches, _decide, _Outcome, _UserFetch

IS, IS2 = "IS" + "0" * 32, "IS" + "2" * 32
US1, US2, US3 = ("US" + str(i) * 32 for i in (1, 2, 3))


def _state() -> changes.FingerprintState:
    return {IS: {US1: "f1", US2: "f2", US3: "f3"}, IS2: {US2: "g2", US1: "g1"}}


class TestDropVanished:
    def test_returns_the_keys_gone_sorted_and_forgets_only_them(self) -> None:
        state = _state()
        assert changes.drop_vanished(state, IS, {US2}) == [US1, US3]
        assert state == {IS: {US2: "f2"}, IS2: {US2: "g2", US1: "g1"}}

    def test_nothing_gone_changes_nothing(self) -> None:
        state = _state()
        assert changes.drop_vanished(state, IS, {US1, US2, US3, "US_new"}) == []
        assert state == _state()

    def test_a_scope_left_empty_is_dropped(self) -> None:
        state = _state()
        assert changes.drop_vanished(state, IS2, set()) == [US1, US2]
        assert state == {IS: {US1: "f1", US2: "f2", US3: "f3"}}

    def test_an_unknown_scope_has_nothing_to_drop(self) -> None:
        state = _state()
        assert changes.drop_vanished(state, "IS_unknown", set()) == []
        assert state == _state()

    def test_a_second_call_finds_nothing_more(self) -> None:
        state = _state()
        changes.drop_vanished(state, IS, {US1})
        assert changes.drop_vanished(state, IS, {US1}) == []

    @pytest.mark.parametrize("seen", [set(), {US1}, {US2, US3}, {US1, US2, US3}])
    def test_same_as_vanished_then_forget(self, seen: set[str]) -> None:
        dropped, expected = _state(), _state()
        gone = changes.vanished(expected, IS, seen)
        changes.forget(expected, IS, gone)
        assert changes.drop_vanished(dropped, IS, seen) == gone
        assert dropped == expected


class TestDropVanishedScopes:
    def test_returns_each_scope_gone_with_its_keys_and_forgets_them(self) -> None:
        state = _state()
        assert changes.drop_vanished_scopes(state, {IS}) == {IS2: [US2, US1]}  # as remembered
        assert state == {IS: {US1: "f1", US2: "f2", US3: "f3"}}

    def test_scopes_come_sorted(self) -> None:
        state = _state()
        assert list(changes.drop_vanished_scopes(state, set())) == [IS, IS2]
        assert state == {}

    def test_nothing_gone_changes_nothing(self) -> None:
        state = _state()
        assert changes.drop_vanished_scopes(state, {IS, IS2, "IS_new"}) == {}
        assert state == _state()

    def test_an_empty_scope_is_dropped_with_no_keys(self) -> None:
        state: changes.FingerprintState = {IS: {}}
        assert changes.drop_vanished_scopes(state, set()) == {IS: []}
        assert state == {}

    def test_the_returned_keys_do_not_alias_the_state(self) -> None:
        state = _state()
        before = copy.deepcopy(state)
        dropped = changes.drop_vanished_scopes(state, set())
        dropped[IS].append("US_extra")
        assert dropped[IS2] == list(before[IS2])


def _fetch(user: str, rows: list[dict[str, Any]], fingerprint: str) -> _UserFetch:
    return _UserFetch(IS, user, rows, True, fingerprint, len(rows))


ROW = {"conversation_sid": "CH1"}


class TestDecide:
    def test_not_found_is_skipped_and_state_untouched(self) -> None:
        state = _state()
        assert _decide(state, _UserFetch(IS, US1, [], found=False)) is _Outcome.SKIPPED
        assert state == _state()

    def test_same_fingerprint_is_unchanged(self) -> None:
        state = _state()
        assert _decide(state, _fetch(US1, [ROW], "f1")) is _Outcome.UNCHANGED
        assert state == _state()

    def test_new_fingerprint_with_rows_is_changed_and_remembered(self) -> None:
        state = _state()
        assert _decide(state, _fetch(US1, [ROW], "f1b")) is _Outcome.CHANGED
        assert state[IS][US1] == "f1b"
        assert _decide(state, _fetch(US1, [ROW], "f1b")) is _Outcome.UNCHANGED

    def test_a_known_user_without_rows_is_emptied(self) -> None:
        state = _state()
        assert _decide(state, _fetch(US2, [], "empty")) is _Outcome.EMPTIED
        assert state[IS][US2] == "empty"  # remembered: the next run writes nothing again
        assert _decide(state, _fetch(US2, [], "empty")) is _Outcome.UNCHANGED

    def test_a_new_user_without_rows_needs_no_tombstone(self) -> None:
        state: changes.FingerprintState = {}
        assert _decide(state, _fetch(US1, [], "empty")) is _Outcome.NEW_EMPTY
        assert state == {IS: {US1: "empty"}}

    def test_a_new_user_with_rows_is_changed(self) -> None:
        state: changes.FingerprintState = {}
        assert _decide(state, _fetch(US1, [ROW], "f")) is _Outcome.CHANGED
        assert state == {IS: {US1: "f"}}


def _row(i: int) -> dict[str, Any]:
    return {
        "chat_service_sid": IS,
        "user_sid": US1,
        "conversation_sid": f"CH{i:032d}",
        "date_updated": "2024-01-01T00:00:00Z",
    }


class TestArrowBatches:
    def test_a_table_is_yielded_once_a_batch_is_full_and_the_rest_on_flush(self) -> None:
        batches = _ArrowBatches(load_id="1.0")
        assert list(batches.add([_row(i) for i in range(ARROW_BATCH_ROWS - 1)])) == []
        (full,) = batches.add([_row(ARROW_BATCH_ROWS - 1), _row(ARROW_BATCH_ROWS)])
        assert full.num_rows == ARROW_BATCH_ROWS + 1
        assert list(batches.flush()) == []  # nothing left over
        assert list(batches.add([_row(0)])) == []
        (rest,) = batches.flush()
        assert rest.num_rows == 1
        assert list(batches.flush()) == []

    def test_tombstones_carry_their_partitions(self) -> None:
        table = _ArrowBatches(load_id=None).tombstones([(IS, US1), (IS2, US2)])
        assert table.column("user_sid").to_pylist() == [US1, US2]
        assert table.column("chat_service_sid").to_pylist() == [IS, IS2]
