"""Paging of the conversation, participant and message lists: page sizes and their caps,
``Order``, filters, tokens, and keyset stability while rows change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio_emulator import Emulator, EmulatorConfig, PageSizePolicy, run_emulator

from .conversation_support import CONV_SPEC, interesting_conversations
from .helpers import Starter, session_for, walk


@pytest.fixture(scope="module")
def cemu() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


@pytest.fixture(scope="module")
def session(cemu: Emulator) -> Iterator[requests.Session]:
    with session_for(cemu) as s:
        yield s


def _biggest(emu: Emulator) -> tuple[str, str]:
    """(service, conversation) with the most messages in the default service."""
    service = emu.default_service_sid
    return service, interesting_conversations(emu, service)[0]


def _lists(emu: Emulator) -> dict[str, str]:
    service, conv = _biggest(emu)
    root = f"{emu.base_url}/v1/Services/{service}/Conversations"
    return {
        "conversations": root,
        "participants": f"{root}/{conv}/Participants",
        "messages": f"{root}/{conv}/Messages",
    }


@pytest.mark.parametrize("size", [1, 7, 50, 100])
def test_walks_with_any_page_size_return_exactly_the_truth(
    cemu: Emulator, session: requests.Session, size: int
) -> None:
    for service in cemu.services():
        sid = service["sid"]
        url = f"{service['links']['conversations']}?PageSize={size}"
        rows, pages = walk(session, url, "conversations")
        assert rows == cemu.conversations(sid)
        assert pages == max(1, -(-len(rows) // size))
        for conv in interesting_conversations(cemu, sid):
            links = next(r for r in rows if r["sid"] == conv)["links"]
            participants, _ = walk(
                session, f"{links['participants']}?PageSize={size}", "participants"
            )
            assert participants == cemu.participants(sid, conv)
            if size > 1:  # one message per page would take thousands of requests
                messages, pages = walk(session, f"{links['messages']}?PageSize={size}", "messages")
                assert messages == cemu.messages(sid, conv)
                assert pages == max(1, -(-len(messages) // size))


def test_rows_are_in_sid_order_and_messages_in_index_order(cemu: Emulator) -> None:
    for service in cemu.services():
        sid = service["sid"]
        conversations = [c["sid"] for c in cemu.conversations(sid)]
        assert conversations == sorted(set(conversations))
        for conv in conversations:
            participants = [p["sid"] for p in cemu.participants(sid, conv)]
            assert participants == sorted(set(participants))
            indices = [m["index"] for m in cemu.messages(sid, conv)]
            assert indices == sorted(set(indices))


def test_default_page_size_is_50_and_the_spec_maximum_is_100(
    cemu: Emulator, session: requests.Session
) -> None:
    for key, url in _lists(cemu).items():
        first = session.get(url).json()
        assert first["meta"]["page_size"] == 50 and first["meta"]["key"] == key
        assert len(first[key]) <= 50
        for asked, served in ((100, 100), (101, 100), (1000, 100)):
            body = session.get(f"{url}?PageSize={asked}").json()
            assert body["meta"]["page_size"] == served
            assert len(body[key]) <= served
            assert f"PageSize={served}&" in body["meta"]["url"]
        for bad in ("0", "1001", "x"):
            response = session.get(f"{url}?PageSize={bad}")
            assert response.status_code == 400 and response.json()["code"] == 20007
    assert len(session.get(f"{_lists(cemu)['messages']}?PageSize=500").json()["messages"]) == 100


@pytest.mark.parametrize(
    ("policy", "status", "served"), [("strict", 400, None), ("lenient", 200, 101)]
)
def test_page_size_policies_apply_to_the_new_lists(
    start: Starter, policy: PageSizePolicy, status: int, served: int | None
) -> None:
    emu = start(EmulatorConfig(data=CONV_SPEC, page_size_policy=policy))
    with session_for(emu) as s:
        for key, url in _lists(emu).items():
            response = s.get(f"{url}?PageSize=101")
            assert response.status_code == status, key
            if served is None:
                assert response.json()["code"] == 20007
            else:
                assert response.json()["meta"]["page_size"] == served


def test_order_desc_pages_from_the_newest_and_is_the_reverse_of_asc(
    cemu: Emulator, session: requests.Session
) -> None:
    url = _lists(cemu)["messages"]
    asc, _ = walk(session, f"{url}?PageSize=33", "messages")
    explicit, _ = walk(session, f"{url}?Order=asc&PageSize=33", "messages")
    desc, pages = walk(session, f"{url}?Order=desc&PageSize=33", "messages")
    assert len(asc) > 100 and pages == -(-len(asc) // 33)
    assert explicit == asc and desc == asc[::-1]
    first = session.get(f"{url}?Order=desc&PageSize=2").json()
    assert [m["index"] for m in first["messages"]] == [len(asc) - 1, len(asc) - 2]
    meta = first["meta"]
    for name in ("url", "first_page_url", "next_page_url"):
        assert urlsplit(meta[name]).query.startswith("Order=desc&PageSize=2&Page=")
    assert "Order" not in session.get(f"{url}?PageSize=2").json()["meta"]["next_page_url"]


def test_previous_page_urls_walk_back(cemu: Emulator, session: requests.Session) -> None:
    url = _lists(cemu)["messages"]
    for order in ("asc", "desc"):
        pages = []
        next_url: str | None = f"{url}?Order={order}&PageSize=40"
        while next_url:
            body = session.get(next_url).json()
            pages.append(body["messages"])
            next_url = body["meta"]["next_page_url"]
        back = session.get(body["meta"]["previous_page_url"]).json()
        assert back["messages"] == pages[-2]


def test_page_tokens_are_bound_to_their_list_and_order(
    cemu: Emulator, session: requests.Session
) -> None:
    messages = _lists(cemu)["messages"]
    token = parse_qs(
        urlsplit(session.get(f"{messages}?PageSize=5").json()["meta"]["next_page_url"]).query
    )["PageToken"][0]
    for url in (
        f"{messages}?Order=desc&PageSize=5&Page=1&PageToken={token}",
        f"{_lists(cemu)['participants']}?PageSize=5&Page=1&PageToken={token}",
        f"{_lists(cemu)['conversations']}?PageSize=5&Page=1&PageToken={token}",
        f"{messages}?PageSize=5&Page=1&PageToken=PAforged",
    ):
        response = session.get(url)
        assert response.status_code == 400 and response.json()["code"] == 21481, url
    response = session.get(f"{messages}?Order=sideways")
    assert response.status_code == 400 and response.json()["code"] == 20001
    response = session.get(f"{messages}?PageSize=5&Page=2")
    assert response.status_code == 400 and response.json()["code"] == 70002


def test_state_filter(cemu: Emulator, session: requests.Session) -> None:
    service = cemu.default_service_sid
    url = _lists(cemu)["conversations"]
    truth = cemu.conversations(service)
    total = 0
    for state in ("active", "inactive", "closed"):
        rows, _ = walk(session, f"{url}?State={state}&PageSize=4", "conversations")
        assert rows == [c for c in truth if c["state"] == state] and rows
        total += len(rows)
        meta = session.get(f"{url}?State={state}&PageSize=4").json()["meta"]
        assert urlsplit(meta["next_page_url"]).query.startswith(f"State={state}&PageSize=4&")
    assert total == len(truth)
    response = session.get(f"{url}?State=sleeping")
    assert response.status_code == 400 and response.json()["code"] == 20001


def test_date_filters_sort_by_creation_newest_first(
    cemu: Emulator, session: requests.Session
) -> None:
    service = cemu.default_service_sid
    url = _lists(cemu)["conversations"]
    truth = cemu.conversations(service)
    days = sorted(c["date_created"][:10] for c in truth)
    start, end = days[len(days) // 4], days[3 * len(days) // 4]
    # Newest first; conversations created in the same second in SID order.
    expected = sorted(
        (c for c in truth if start <= c["date_created"][:10] <= end), key=lambda c: c["sid"]
    )
    expected.sort(key=lambda c: c["date_created"], reverse=True)
    rows, _ = walk(session, f"{url}?StartDate={start}&EndDate={end}&PageSize=3", "conversations")
    assert [r["sid"] for r in rows] == [c["sid"] for c in expected] and len(rows) > 5
    only_start, _ = walk(session, f"{url}?StartDate={start}T00:00:00Z", "conversations")
    assert {r["sid"] for r in only_start} == {
        c["sid"] for c in truth if c["date_created"][:10] >= start
    }
    response = session.get(f"{url}?StartDate=yesterday")
    assert response.status_code == 400 and response.json()["code"] == 20001


def test_walking_messages_while_they_are_posted_and_deleted(start: Starter) -> None:
    """Keyset paging: rows that were there when the walk began are each seen exactly once."""
    emu = start(EmulatorConfig(data=CONV_SPEC))
    service, conv = _biggest(emu)
    before = emu.messages(service, conv)
    store = emu.store
    url: str | None = (
        f"{emu.base_url}/v1/Services/{service}/Conversations/{conv}/Messages?PageSize=25"
    )
    seen: list[dict[str, Any]] = []
    with session_for(emu) as s:
        while url:
            body = s.get(url).json()
            seen.extend(body["messages"])
            url = body["meta"]["next_page_url"]
            if len(seen) == 25:
                store.post_message(service, conv, None, "new at the end")
                store.delete_message(service, conv, before[5]["sid"])  # already seen
                store.delete_message(service, conv, before[60]["sid"])  # not yet seen
    indices = [m["index"] for m in seen]
    assert indices == sorted(set(indices))
    expected = [m["sid"] for m in before if m["sid"] != before[60]["sid"]]
    assert [m["sid"] for m in seen if m["index"] < len(before)] == expected
    assert seen[-1]["body"] == "new at the end" and seen[-1]["index"] == len(before)
