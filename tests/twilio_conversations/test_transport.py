"""The lean requests session: what it prepares, and that environment proxies still carry traffic."""

from __future__ import annotations

import gzip
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from twilio_conversations.client import TwilioClient
from twilio_conversations.transport import ApiAdapter, ApiSession

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


# -- the adapter: one pool lookup, one body read, requests' errors -----------------------------


class _Misbehaving(BaseHTTPRequestHandler):
    """Bodies that go wrong the ways a network or a proxy makes them go wrong."""

    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"services": [], "meta": {"next_page_url": null}}'
        if self.path == "/gzip":
            self._reply(gzip.compress(body), {"Content-Encoding": "gzip"})
        elif self.path == "/bad-gzip":
            self._reply(b"not gzip at all", {"Content-Encoding": "gzip"})
        elif self.path == "/truncated":
            self._reply(body[:10], {"Content-Length": str(len(body))}, close=True)
        elif self.path == "/stalls":
            self._reply(body[:10], {"Content-Length": str(len(body))}, stall=1.0)
        else:
            self._reply(body)

    def _reply(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        close: bool = False,
        stall: float = 0.0,
    ) -> None:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))} | (
            headers or {}
        )
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if stall:
            time.sleep(stall)
        if close or stall:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_one_connection_carries_every_request_of_a_session(misbehaving: str) -> None:
    session = ApiSession(misbehaving, timeout=5)
    bodies = [session.get(f"{misbehaving}/ok").json() for _ in range(20)]
    assert bodies == [{"services": [], "meta": {"next_page_url": None}}] * 20
    adapter = session.get_adapter(misbehaving)
    assert isinstance(adapter, ApiAdapter)
    (pool,) = adapter._pools.values()
    assert (pool.num_connections, pool.num_requests) == (1, 20)


def test_a_gzip_body_is_decoded(misbehaving: str) -> None:
    response = ApiSession(misbehaving, timeout=5).get(f"{misbehaving}/gzip")
    assert response.json() == {"services": [], "meta": {"next_page_url": None}}


def test_a_streamed_response_is_left_unread(misbehaving: str) -> None:
    response = ApiSession(misbehaving, timeout=5).get(f"{misbehaving}/ok", stream=True)
    assert response._content_consumed is False
    assert response.raw.read() == b'{"services": [], "meta": {"next_page_url": null}}'


@pytest.mark.parametrize("path", ["/bad-gzip", "/truncated", "/stalls"])
def test_a_broken_body_raises_what_requests_raises(misbehaving: str, path: str) -> None:
    def error_of(session: requests.Session) -> type[BaseException]:
        with pytest.raises(requests.RequestException) as caught:
            session.get(f"{misbehaving}{path}", timeout=0.3)
        return caught.type

    expected = error_of(requests.Session())
    assert expected is not requests.RequestException  # a specific error, per case
    assert error_of(ApiSession(misbehaving, timeout=5)) is expected


def test_pools_are_kept_per_origin_and_dropped_on_close(misbehaving: str, emulator: Any) -> None:
    session = ApiSession(misbehaving, timeout=5)
    session.get(f"{misbehaving}/ok")
    session.get(
        f"{emulator.base_url}/v1/Services", auth=(emulator.account_sid, emulator.auth_token)
    )
    adapter = session.get_adapter(misbehaving)
    assert isinstance(adapter, ApiAdapter) and len(adapter._pools) == 2
    session.close()
    assert adapter._pools == {}
    assert session.get(f"{misbehaving}/ok").status_code == 200  # a closed session reconnects
