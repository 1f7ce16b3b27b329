"""The session under the client: requests' own, what it sends, environment proxies, keep-alive,
and broken bodies on a real socket."""

from __future__ import annotations

import gzip
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import requests_mock as rm
from requests.adapters import HTTPAdapter
from twilio_conversations.client import USER_AGENT, RetryPolicy, TwilioClient
from twilio_conversations.errors import TwilioConnectionError
from twilio_conversations.transport import ApiSession

BASE = "https://conversations.twilio.com"


AUTH = ("AC" + "a" * 32, "token-123")


def test_the_session_is_requests_own() -> None:
    """Only configuration: no hook of `requests.Session` is replaced."""
    assert [name for name, value in vars(ApiSession).items() if callable(value)] == ["__init__"]
    session = ApiSession("agent/1")
    assert session.headers["User-Agent"] == "agent/1"
    assert type(session.get_adapter(BASE)) is HTTPAdapter


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/v1/Services", {"PageSize": 50}, f"{BASE}/v1/Services?PageSize=50"),
        ("/v1/Services", {"PageSize": None}, f"{BASE}/v1/Services"),
        ("/v1/Services", {"A": "x y&"}, f"{BASE}/v1/Services?A=x+y%26"),
        ("/v1/Services/IS1/Users/a b", None, f"{BASE}/v1/Services/IS1/Users/a%20b"),
        ("/v1/Services/IS1/Users/a%2Fb", None, f"{BASE}/v1/Services/IS1/Users/a%2Fb"),
    ],
)
def test_url_and_params_as_requests_would_send_them(path: str, params: Any, expected: str) -> None:
    client = TwilioClient(BASE, AUTH)
    with rm.Mocker() as mock:
        mock.get(rm.ANY, json={"services": [], "meta": {"next_page_url": None}})
        list(client.iter_pages(path, "services", params))
    (sent,) = mock.request_history
    assert sent.url == expected
    assert sent.url == requests.Request("GET", f"{BASE}{path}", params=params).prepare().url


def test_headers_and_auth_are_sent() -> None:
    with rm.Mocker() as mock:
        mock.get(rm.ANY, json={"sid": "US1"})
        assert TwilioClient(BASE, AUTH).get("/v1/Services/IS1/Users/US1") == {"sid": "US1"}
    (sent,) = mock.request_history
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["User-Agent"] == USER_AGENT
    assert sent.headers["Authorization"] == requests.auth._basic_auth_str(*AUTH)


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


# -- the wire: keep-alive, gzip, and bodies broken the ways networks break them ----------------


class _Misbehaving(BaseHTTPRequestHandler):
    """Bodies that go wrong the ways a network or a proxy makes them go wrong."""

    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.seen.append((self.path, self.client_address))  # type: ignore[attr-defined]
        body = b'{"services": [], "meta": {"next_page_url": null}}'
        if self.path == "/gzip":
            self._reply(gzip.compress(body), {"Content-Encoding": "gzip"})
        elif self.path == "/bad-gzip":
            self._reply(b"not gzip at all", {"Content-Encoding": "gzip"})
        elif self.path == "/truncated":
            self._reply(body[:10], {"Content-Length": str(len(body))}, close=True)
        elif self.path == "/stalls":
            # Stalls until the fixture's teardown (60 s only guards against a hang): far longer
            # than any read timeout the test sets, whatever the machine's speed.
            self._reply(body[:10], {"Content-Length": str(len(body))}, stall=60.0)
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
            self.server.stalled.wait(stall)  # type: ignore[attr-defined]  # set at teardown
        if close or stall:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    server.stalled = threading.Event()  # type: ignore[attr-defined]  # ends the stalls
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stalled.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _base(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_one_connection_carries_every_request_of_a_thread(
    misbehaving: ThreadingHTTPServer,
) -> None:
    client = TwilioClient(_base(misbehaving), AUTH)
    pages = [page for _ in range(20) for page in client.iter_pages("/ok", "services")]
    assert pages == [[]] * 20
    seen = misbehaving.seen  # type: ignore[attr-defined]
    assert len(seen) == 20
    assert len({address for _, address in seen}) == 1, "one keep-alive connection"


def test_a_gzip_body_is_decoded(misbehaving: ThreadingHTTPServer) -> None:
    client = TwilioClient(_base(misbehaving), AUTH)
    assert list(client.iter_pages("/gzip", "services")) == [[]]


@pytest.mark.parametrize(
    ("path", "reason", "timeout"),
    [
        # A timeout no local answer comes near: the body's own fault decides the reason.
        ("/bad-gzip", "ContentDecodingError", 10.0),
        ("/truncated", "ChunkedEncodingError", 10.0),
        # A read timeout mid-body: the headers come at once, the body stalls until teardown.
        ("/stalls", "ConnectionError", 1.0),
    ],
)
def test_a_broken_body_is_retried_then_reported_in_one_line(
    misbehaving: ThreadingHTTPServer, path: str, reason: str, timeout: float
) -> None:
    policy = RetryPolicy(max_attempts=2, backoff_factor=0.0, max_delay=0.0, timeout=timeout)
    client = TwilioClient(_base(misbehaving), AUTH, policy)
    with pytest.raises(TwilioConnectionError) as failure:
        list(client.iter_pages(path, "services"))
    assert str(failure.value) == (
        f"could not get {_base(misbehaving)}{path} after 2 attempts: {reason}"
    )
    assert [p for p, _ in misbehaving.seen] == [path, path]  # type: ignore[attr-defined]
    assert client.stats.retry_reasons == {reason: 1}
