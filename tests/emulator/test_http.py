"""HTTP behaviour: authentication, error bodies, headers, identities in paths, twins."""

from __future__ import annotations

import re
import socket
from urllib.parse import quote

import pytest
import requests
from twilio_emulator import (
    DEMO_API_KEY_SECRET,
    DEMO_API_KEY_SID,
    DataSpec,
    Emulator,
    EmulatorConfig,
)

from .helpers import Starter, membership_counts, session_for, walk


def test_account_sid_and_token_authenticate(emu: Emulator) -> None:
    response = requests.get(f"{emu.base_url}/v1/Services", auth=(emu.account_sid, emu.auth_token))
    assert response.status_code == 200


def test_api_key_and_secret_authenticate(start: Starter) -> None:
    emu = start(
        EmulatorConfig(
            data=DataSpec(seed=1, services=1, users=2),
            api_key_sid=DEMO_API_KEY_SID,
            api_key_secret=DEMO_API_KEY_SECRET,
        )
    )
    ok = requests.get(f"{emu.base_url}/v1/Users", auth=(DEMO_API_KEY_SID, DEMO_API_KEY_SECRET))
    assert ok.status_code == 200
    # The key's secret does not work with the account SID and vice versa.
    for auth in [(emu.account_sid, DEMO_API_KEY_SECRET), (DEMO_API_KEY_SID, emu.auth_token)]:
        assert requests.get(f"{emu.base_url}/v1/Users", auth=auth).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + "bm9jb2xvbg=="},  # "nocolon"
    ],
)
def test_missing_or_malformed_credentials_are_401(emu: Emulator, headers: dict[str, str]) -> None:
    response = requests.get(f"{emu.base_url}/v1/Services", headers=headers)
    _assert_401(response)


def test_wrong_token_is_401_even_on_unknown_paths(emu: Emulator) -> None:
    for path in ["/v1/Services", "/v1/Nope", "/v1/Users/US00/Conversations"]:
        response = requests.get(f"{emu.base_url}{path}", auth=(emu.account_sid, "wrong"))
        _assert_401(response)


def _assert_401(response: requests.Response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_twilio_headers(emu: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emu.base_url}/v1/Services")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert re.fullmatch(r"RQ[0-9a-f]{32}", response.headers["Twilio-Request-Id"])
    assert int(response.headers["Twilio-Concurrent-Requests"]) >= 1
    other = http.get(f"{emu.base_url}/v1/Services")
    assert other.headers["Twilio-Request-Id"] != response.headers["Twilio-Request-Id"]


def test_404_for_unknown_user_names_the_path_without_version(
    emu: Emulator, http: requests.Session
) -> None:
    service_sid = emu.default_service_sid
    missing = "US" + "0" * 32
    response = http.get(f"{emu.base_url}/v1/Services/{service_sid}/Users/{missing}/Conversations")
    assert response.status_code == 404
    assert response.json() == {
        "code": 20404,
        "message": f"The requested resource /Services/{service_sid}/Users/{missing}"
        "/Conversations was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Services/IS00000000000000000000000000000000/Users",
        "/v1/Services/IS00000000000000000000000000000000",
        "/v1/Users/nobody@example.com",
        "/v1/NoSuchThing",
        "/v2/Services",
        "/",
    ],
)
def test_404_shapes(emu: Emulator, http: requests.Session, path: str) -> None:
    response = http.get(f"{emu.base_url}{path}")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == 20404 and body["status"] == 404
    assert body["message"].startswith("The requested resource /")
    assert body["message"].endswith(" was not found")
    assert "/v1/" not in body["message"]


def test_unsupported_method_is_405(emu: Emulator, http: requests.Session) -> None:
    response = http.put(f"{emu.base_url}/v1/Services")
    assert response.status_code == 405 and response.json()["code"] == 20004


IDENTITIES = [
    "first+tag@example.com",
    "Anna Maria López",
    "ops/team@example.com",
    "50% off?#deal",
    "用户-42",
    "a/b?c#d%e ü+x@example.com",
]


@pytest.mark.parametrize("identity", IDENTITIES)
def test_identity_lookup_with_url_encoded_special_characters(
    fresh_emu: Emulator, identity: str
) -> None:
    service_sid = fresh_emu.default_service_sid
    store = fresh_emu.store
    with store.lock:
        existing = store.services[service_sid].users_by_identity.get(identity)
    user_sid = existing.sid if existing else store.create_user(service_sid, identity)
    conversation = store.create_conversation(service_sid, friendly_name="special")
    store.join(service_sid, user_sid, conversation)
    encoded = quote(identity, safe="")
    with session_for(fresh_emu) as session:
        for prefix in [f"/v1/Services/{service_sid}", "/v1"]:
            fetched = session.get(f"{fresh_emu.base_url}{prefix}/Users/{encoded}").json()
            assert fetched["sid"] == user_sid and fetched["identity"] == identity
            rows, _ = walk(
                session,
                f"{fresh_emu.base_url}{prefix}/Users/{encoded}/Conversations?PageSize=3",
                "conversations",
            )
            assert {r["conversation_sid"] for r in rows} >= {conversation}
            assert all(r["user_sid"] == user_sid for r in rows)
        # meta URLs keep the identity encoded as the client sent it.
        meta = session.get(f"{fresh_emu.base_url}/v1/Users/{encoded}/Conversations").json()["meta"]
        assert meta["url"].startswith(f"{fresh_emu.base_url}/v1/Users/{encoded}/Conversations?")


def test_identity_is_case_sensitive(emu: Emulator, http: requests.Session) -> None:
    service_sid = emu.default_service_sid
    identity = emu.users(service_sid)[0]["identity"]
    swapped = identity.swapcase()
    assert swapped != identity
    response = http.get(f"{emu.base_url}/v1/Users/{quote(swapped, safe='')}/Conversations")
    assert response.status_code == 404


def test_demo_data_has_identities_that_need_encoding(emu: Emulator) -> None:
    identities = [u["identity"] for s in emu.services() for u in emu.users(s["sid"])]
    needs_encoding = [i for i in identities if quote(i, safe="@") != i]
    assert len(needs_encoding) >= 2


def test_default_service_twins_serve_the_default_service(
    emu: Emulator, http: requests.Session
) -> None:
    service_sid = emu.default_service_sid
    assert service_sid in {s["sid"] for s in emu.services()}
    twins, _ = walk(http, f"{emu.base_url}/v1/Users?PageSize=4", "users")
    scoped = emu.users(service_sid)
    assert [u["sid"] for u in twins] == [u["sid"] for u in scoped]
    assert twins[0]["url"] == f"{emu.base_url}/v1/Users/{twins[0]['sid']}"
    assert twins[0]["links"]["user_conversations"] == f"{twins[0]['url']}/Conversations"
    counts = membership_counts(emu, service_sid)
    user = max(counts, key=lambda sid: counts[sid])
    rows, _ = walk(http, f"{emu.base_url}/v1/Users/{user}/Conversations", "conversations")
    truth = emu.user_conversations(service_sid, user)
    strip = ("url", "links")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in truth
    ]
    assert (
        rows[0]["url"]
        == f"{emu.base_url}/v1/Users/{user}/Conversations/{rows[0]['conversation_sid']}"
    )
    assert rows[0]["links"]["conversation"] == (
        f"{emu.base_url}/v1/Conversations/{rows[0]['conversation_sid']}"
    )
    fetched = http.get(f"{emu.base_url}/v1/Users/{user}").json()
    assert fetched["sid"] == user and fetched["chat_service_sid"] == service_sid


def test_keep_alive_reuses_one_connection(emu: Emulator) -> None:
    with session_for(emu) as session:
        for _ in range(5):
            response = session.get(f"{emu.base_url}/v1/Services", stream=False)
            assert response.status_code == 200
        pool = session.get_adapter(emu.base_url).poolmanager
        pools = list(pool.pools._container.values())  # noqa: SLF001
        assert len(pools) == 1 and pools[0].num_connections == 1


def test_each_response_is_one_write_on_a_nodelay_socket(
    fresh_emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers and body leave in one write (no Nagle/delayed-ACK stall), TCP_NODELAY is on."""
    from twilio_emulator import server

    writes: list[int] = []
    nodelay: list[int] = []
    original_setup = server._Handler.setup  # noqa: SLF001

    def setup(handler: server._Handler) -> None:  # noqa: SLF001
        original_setup(handler)
        nodelay.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        real_write = handler.wfile.write

        def write(data: bytes) -> int:
            writes.append(len(data))
            return real_write(data)

        handler.wfile.write = write  # type: ignore[method-assign]

    monkeypatch.setattr(server._Handler, "setup", setup)  # noqa: SLF001
    with session_for(fresh_emu) as session:
        sizes = []
        for path in ["/v1/Services", "/v1/Users", "/v1/Nope"]:
            response = session.get(f"{fresh_emu.base_url}{path}")
            sizes.append(len(response.content))
    assert nodelay == [1]  # one keep-alive connection, with TCP_NODELAY
    assert len(writes) == 3
    assert all(w > s for w, s in zip(writes, sizes, strict=True))  # headers + whole body


def test_stats_count_requests_by_status_and_route(fresh_emu: Emulator) -> None:
    fresh_emu.stats.reset()
    with session_for(fresh_emu) as session:
        session.get(f"{fresh_emu.base_url}/v1/Services")
        session.get(f"{fresh_emu.base_url}/v1/Users")
        session.get(f"{fresh_emu.base_url}/v1/Nope")
    requests.get(f"{fresh_emu.base_url}/v1/Users")
    snap = fresh_emu.stats.snapshot()
    assert snap.total == 4
    assert snap.by_status == {200: 2, 404: 1, 401: 1}
    assert snap.by_route["services"] == 1 and snap.by_route["default_users"] == 1
    fresh_emu.stats.reset()
    assert fresh_emu.stats.snapshot().total == 0


def test_concurrent_clients(emu: Emulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def fetch(_: int) -> int:
        with session_for(emu) as session:
            return sum(
                len(session.get(f"{emu.base_url}/v1/Users?PageSize=5").json()["users"])
                for _ in range(10)
            )

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(fetch, range(16)))) == 1
