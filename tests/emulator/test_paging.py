"""Paging over real HTTP: walks, meta, page-size policies, tokens."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio_emulator import DataSpec, Emulator, EmulatorConfig

from .helpers import Starter, membership_counts, session_for, walk


def _biggest_user(emu: Emulator, service_sid: str) -> str:
    counts = membership_counts(emu, service_sid)
    return max(counts, key=lambda sid: counts[sid])


def test_walk_user_conversations_returns_exactly_the_store_rows(
    emu: Emulator, http: requests.Session
) -> None:
    for service in emu.services():
        for user in emu.users(service["sid"]):
            rows, pages = walk(http, user["links"]["user_conversations"], "conversations")
            truth = emu.user_conversations(service["sid"], user["sid"])
            assert rows == truth
            assert pages == max(1, -(-len(truth) // 50))


def test_walk_users_and_services_with_small_pages(emu: Emulator, http: requests.Session) -> None:
    services, pages = walk(http, f"{emu.base_url}/v1/Services?PageSize=1", "services")
    assert services == emu.services() and pages == len(services)
    for service in services:
        users, pages = walk(http, f"{service['links']['users']}?PageSize=5", "users")
        assert users == emu.users(service["sid"])
        assert pages == -(-len(users) // 5)


def test_rows_are_ordered_by_sid_and_unique(emu: Emulator, http: requests.Session) -> None:
    service_sid = emu.default_service_sid
    user = _biggest_user(emu, service_sid)
    url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{user}/Conversations?PageSize=7"
    rows, _ = walk(http, url, "conversations")
    sids = [r["conversation_sid"] for r in rows]
    assert sids == sorted(sids) and len(set(sids)) == len(sids) > 50


def test_meta_of_first_middle_and_last_page(emu: Emulator, http: requests.Session) -> None:
    service_sid = emu.default_service_sid
    user = _biggest_user(emu, service_sid)
    path = f"/v1/Services/{service_sid}/Users/{user}/Conversations"
    first = http.get(f"{emu.base_url}{path}?PageSize=20").json()["meta"]
    assert first["page"] == 0 and first["page_size"] == 20 and first["key"] == "conversations"
    assert first["first_page_url"] == f"{emu.base_url}{path}?PageSize=20&Page=0"
    assert first["url"] == first["first_page_url"]
    assert first["previous_page_url"] is None
    next_url = first["next_page_url"]
    assert next_url.startswith(f"{emu.base_url}{path}?PageSize=20&Page=1&PageToken=")

    second = http.get(next_url).json()["meta"]
    assert second["page"] == 1 and second["url"] == next_url
    assert second["first_page_url"] == first["first_page_url"]
    # previous_page_url really leads back to the first page.
    back = http.get(second["previous_page_url"]).json()
    assert [r["conversation_sid"] for r in back["conversations"]] == [
        r["conversation_sid"] for r in http.get(first["url"]).json()["conversations"]
    ]
    meta = second
    while meta["next_page_url"]:
        meta = http.get(meta["next_page_url"]).json()["meta"]
    assert meta["next_page_url"] is None and meta["page"] >= 2


def test_urls_use_the_host_the_client_connected_to(emu: Emulator) -> None:
    with session_for(emu) as session:
        url = f"http://localhost:{emu.port}/v1/Services?PageSize=1"
        meta = session.get(url).json()["meta"]
    assert meta["url"].startswith(f"http://localhost:{emu.port}/v1/Services")
    assert meta["next_page_url"].startswith(f"http://localhost:{emu.port}/")


def test_empty_list_is_200_with_empty_array(fresh_emu: Emulator) -> None:
    service_sid = fresh_emu.default_service_sid
    user = fresh_emu.store.create_user(service_sid, "nobody@example.com")
    with session_for(fresh_emu) as session:
        response = session.get(f"{fresh_emu.base_url}/v1/Users/{user}/Conversations")
    assert response.status_code == 200
    body = response.json()
    assert body["conversations"] == []
    assert body["meta"]["next_page_url"] is None and body["meta"]["previous_page_url"] is None


def _page_size(session: requests.Session, url: str, size: object) -> requests.Response:
    return session.get(url, params={"PageSize": size})


@pytest.mark.parametrize(
    ("policy", "asked", "served"),
    [
        ("clamp", 50, 50),
        ("clamp", 51, 50),
        ("clamp", 1000, 50),
        ("lenient", 51, 51),
        ("lenient", 1000, 1000),
        ("strict", 50, 50),
        ("strict", 1, 1),
    ],
)
def test_page_size_policies(start: Starter, policy: str, asked: int, served: int) -> None:
    emu = start(EmulatorConfig(data=DataSpec(seed=5, services=1, users=8), page_size_policy=policy))
    service_sid = emu.default_service_sid
    user = _biggest_user(emu, service_sid)
    url = f"{emu.base_url}/v1/Services/{service_sid}/Users/{user}/Conversations"
    with session_for(emu) as session:
        body = _page_size(session, url, asked).json()
    total = membership_counts(emu, service_sid)[user]
    assert body["meta"]["page_size"] == served
    assert f"PageSize={served}&" in body["meta"]["url"]
    assert len(body["conversations"]) == min(served, total)
    if body["meta"]["next_page_url"]:
        assert f"PageSize={served}&" in body["meta"]["next_page_url"]


def test_services_allow_100_per_page_under_clamp(start: Starter) -> None:
    emu = start(EmulatorConfig(data=DataSpec(seed=5, services=1, users=0)))
    with session_for(emu) as session:
        assert (
            session.get(f"{emu.base_url}/v1/Services?PageSize=100").json()["meta"]["page_size"]
            == 100
        )
        assert (
            session.get(f"{emu.base_url}/v1/Services?PageSize=500").json()["meta"]["page_size"]
            == 100
        )


def test_strict_rejects_above_spec_maximum(start: Starter) -> None:
    emu = start(
        EmulatorConfig(data=DataSpec(seed=5, services=1, users=3), page_size_policy="strict")
    )
    with session_for(emu) as session:
        response = session.get(f"{emu.base_url}/v1/Users?PageSize=51")
    assert response.status_code == 400
    assert response.json()["code"] == 20007


@pytest.mark.parametrize("policy", ["clamp", "strict", "lenient"])
@pytest.mark.parametrize("size", ["0", "1001", "abc", "-1", "2.5", ""])
def test_invalid_page_sizes_are_20007_under_every_policy(
    start: Starter, policy: str, size: str
) -> None:
    emu = start(EmulatorConfig(data=DataSpec(seed=5, services=1, users=3), page_size_policy=policy))
    with session_for(emu) as session:
        response = session.get(f"{emu.base_url}/v1/Users", params={"PageSize": size})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 20007 and body["status"] == 400
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20007"


@pytest.mark.parametrize(
    "token",
    ["garbage", "PA", "PAnot-base64!!", "PBAAAA", "PT" + "A" * 40],
)
def test_bad_page_token_is_21481(emu: Emulator, http: requests.Session, token: str) -> None:
    response = http.get(f"{emu.base_url}/v1/Services", params={"PageToken": token, "Page": 1})
    assert response.status_code == 400
    assert response.json()["code"] == 21481


def test_tampered_or_foreign_token_is_rejected(emu: Emulator, http: requests.Session) -> None:
    first = http.get(f"{emu.base_url}/v1/Users?PageSize=2").json()["meta"]
    token = parse_qs(urlsplit(first["next_page_url"]).query)["PageToken"][0]
    # A token of the users list is not valid on another list.
    service_sid = emu.default_service_sid
    user = _biggest_user(emu, service_sid)
    response = http.get(
        f"{emu.base_url}/v1/Users/{user}/Conversations", params={"PageToken": token, "Page": 1}
    )
    assert response.status_code == 400 and response.json()["code"] == 21481
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    response = http.get(f"{emu.base_url}/v1/Users", params={"PageToken": forged, "Page": 1})
    assert response.status_code == 400 and response.json()["code"] == 21481


def test_page_above_zero_without_token_is_70002(emu: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emu.base_url}/v1/Users?PageSize=2&Page=3")
    assert response.status_code == 400 and response.json()["code"] == 70002
    response = http.get(f"{emu.base_url}/v1/Users?Page=0")
    assert response.status_code == 200


def test_paging_survives_rows_added_and_removed_between_pages(fresh_emu: Emulator) -> None:
    service_sid = fresh_emu.default_service_sid
    user = _biggest_user(fresh_emu, service_sid)
    before = {r["conversation_sid"] for r in fresh_emu.user_conversations(service_sid, user)}
    url = f"{fresh_emu.base_url}/v1/Services/{service_sid}/Users/{user}/Conversations?PageSize=10"
    with session_for(fresh_emu) as session:
        page = session.get(url).json()
        seen = [r["conversation_sid"] for r in page["conversations"]]
        # Remove a row already served and one not yet served: nothing else is skipped.
        fresh_emu.store.leave(service_sid, user, seen[0])
        later = sorted(before - set(seen))
        fresh_emu.store.leave(service_sid, user, later[0])
        rest, _ = walk(session, page["meta"]["next_page_url"], "conversations")
    assert [r["conversation_sid"] for r in rest] == later[1:]
