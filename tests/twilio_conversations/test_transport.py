"""The lean requests session: what it prepares, and that environment proxies still carry traffic."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from twilio_conversations.client import TwilioClient
from twilio_conversations.transport import ApiSession

BASE = "https://conversations.twilio.com"


def prepare(session: ApiSession, url: str, **kwargs: Any) -> requests.PreparedRequest:
    return session.prepare_request(requests.Request(url=url, **kwargs))


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        (f"{BASE}/v1/Services", {"PageSize": 50}, f"{BASE}/v1/Services?PageSize=50"),
        (
            f"{BASE}/v1/Services?PageToken=PT1",
            {"PageSize": 5},
            f"{BASE}/v1/Services?PageToken=PT1&PageSize=5",
        ),
        (f"{BASE}/v1/Services", {"PageSize": None}, f"{BASE}/v1/Services"),
        (f"{BASE}/v1/Services", [("A", "x y"), ("A", "&")], f"{BASE}/v1/Services?A=x+y&A=%26"),
        (f"{BASE}/v1/Services", "PageSize=7", f"{BASE}/v1/Services?PageSize=7"),
        (f"{BASE}/v1/Services/IS1/Users/a b", None, f"{BASE}/v1/Services/IS1/Users/a%20b"),
    ],
)
def test_url_and_params_as_requests_would_send_them(url: str, params: Any, expected: str) -> None:
    lean = prepare(ApiSession(BASE, timeout=5), url, method="GET", params=params)
    assert lean.url == expected
    assert (
        lean.url
        == requests.Session().prepare_request(requests.Request("GET", url, params=params)).url
    )


def test_headers_auth_and_hooks_are_prepared() -> None:
    session = ApiSession(BASE, timeout=5)
    hook = lambda response, **kwargs: response  # noqa: E731
    prepared = prepare(
        session,
        f"{BASE}/v1/Services",
        method="get",
        headers={"Accept": "application/json"},
        auth=("ACxx", "secret"),
        hooks={"response": [hook]},
    )
    assert prepared.method == "GET"
    assert prepared.headers["Accept"] == "application/json"
    assert prepared.headers["Authorization"] == requests.auth._basic_auth_str("ACxx", "secret")
    assert prepared.body is None and "Content-Length" not in prepared.headers
    assert prepared.hooks["response"] == [hook]


def test_a_request_with_a_body_takes_requests_own_path() -> None:
    prepared = prepare(
        ApiSession(BASE, timeout=5), f"{BASE}/v1/Conversations", method="POST", data={"A": "b c"}
    )
    assert prepared.body == "A=b+c"
    assert prepared.headers["Content-Type"] == "application/x-www-form-urlencoded"


# -- proxies: a real forwarding proxy on loopback ----------------------------------------------


class _ForwardingProxy(BaseHTTPRequestHandler):
    """Plain-http forward proxy: takes `GET http://host:port/path` and relays it."""

    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        path = target.path + (f"?{target.query}" if target.query else "")
        upstream.request("GET", path, headers=headers)
        response = upstream.getresponse()
        body = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        upstream.close()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _all_user_sids(client: TwilioClient, service_sid: str) -> list[str]:
    path = f"/v1/Services/{service_sid}/Users"
    return [u["sid"] for page in client.iter_pages(path, "users", {"PageSize": 5}) for u in page]


def test_http_proxy_from_the_environment_carries_every_request(
    emulator: Any, proxy: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    client = TwilioClient(emulator.base_url, (emulator.account_sid, emulator.auth_token))
    service_sid = emulator.store.service_sids[0]
    users = _all_user_sids(client, service_sid)
    assert sorted(users) == sorted(emulator.store.services[service_sid].users)
    seen: list[str] = proxy.seen  # type: ignore[attr-defined]
    assert len(seen) == client.stats.requests > 1  # every page went through the proxy
    assert all(url.startswith(emulator.base_url) for url in seen)


def test_no_proxy_bypasses_the_proxy(
    emulator: Any, proxy: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = TwilioClient(emulator.base_url, (emulator.account_sid, emulator.auth_token))
    list(client.iter_pages("/v1/Services", "services"))
    assert client.stats.requests == 1
    assert proxy.seen == []  # type: ignore[attr-defined]
