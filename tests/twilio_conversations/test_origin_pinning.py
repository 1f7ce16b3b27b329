"""Credentials go only to the configured origin, however a page spells its `next_page_url`.

Real sockets, no mocks: a tiny fake Twilio on 127.0.0.1 serves a first page whose
`meta.next_page_url` is the spelling under test, and other loopback servers (127.0.0.1 on another
port, and ::1 when the machine has IPv6) record every request they get and whether it carried an
`Authorization` header. The client must either refuse the URL with a one-line `UnsafeUrlError` or
stay on the configured origin; the other servers must never see a request at all.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from twilio_conversations.client import RetryPolicy, TwilioClient
from twilio_conversations.errors import UnsafeUrlError

ACCOUNT_SID = "AC" + "0f" * 16
TOKEN = "tok-origin-pinning-7Qw"
FIRST_PATH = "/v1/Services"
POLICY = RetryPolicy(max_attempts=2, backoff_factor=0.0, max_delay=0.0, timeout=5)


class Server:
    """A loopback HTTP server that records (path, Authorization) of every request.

    As the fake Twilio it answers `FIRST_PATH` with a one-record page linking to `next_url`,
    `/redirect` with a 307 to `location`, and anything else with a last, empty page.
    """

    def __init__(self, host: str = "127.0.0.1", family: socket.AddressFamily = socket.AF_INET):
        self.requests: list[tuple[str, str | None]] = []
        self.next_url: str | None = None
        self.location = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.path, self.headers.get("Authorization")))
                if self.path == "/redirect":
                    self.send_response(307)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                first = self.path.split("?")[0] == FIRST_PATH and "PageToken" not in self.path
                records = [{"sid": "IS1"}] if first else []
                next_url = server.next_url if first else None
                body = json.dumps({"services": records, "meta": {"next_page_url": next_url}})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class HTTPServer(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.http = HTTPServer((host, 0), Handler)
        self.port: int = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def authorizations(self) -> list[str]:
        return [auth for _, auth in self.requests if auth is not None]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def api_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_servers() -> Iterator[dict[str, Server]]:
    servers = {"evil": Server()}
    if _ipv6_loopback():
        servers["evil6"] = Server("::1", socket.AF_INET6)
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def api(api_server: Server) -> Server:
    """The fake Twilio, its record of requests cleared."""
    api_server.requests.clear()
    api_server.next_url, api_server.location = None, ""
    return api_server


@pytest.fixture
def others(other_servers: dict[str, Server]) -> Iterator[dict[str, Server]]:
    """The hosts credentials must never reach: 127.0.0.1 on another port, and ::1. Whatever a
    test asserts, none of them may have seen an Authorization header during it."""
    for server in other_servers.values():
        server.requests.clear()
    yield other_servers
    for name, server in other_servers.items():
        assert server.authorizations == [], f"{name} saw credentials"


def _spell(template: str, api: Server, others: dict[str, Server]) -> str:
    if "{E6}" in template and "evil6" not in others:
        pytest.skip("no IPv6 loopback on this machine")
    ports = {"A": api.port, "E": others["evil"].port}
    if "evil6" in others:
        ports["E6"] = others["evil6"].port
    return template.format(**ports)


#: `next_page_url` spellings that leave the origin, or cannot be read one way only: refused.
REFUSED = {
    "absolute, another port": "http://127.0.0.1:{E}/v1/Services?PageToken=2",
    "absolute, default port": "http://127.0.0.1/v1/Services?PageToken=2",
    "scheme-relative": "//127.0.0.1:{E}/v1/Services?PageToken=2",
    "https instead of http": "https://127.0.0.1:{A}/v1/Services?PageToken=2",
    "https, another port": "https://127.0.0.1:{E}/v1/Services?PageToken=2",
    "leading space": " http://127.0.0.1:{E}/v1/Services?PageToken=2",
    "leading space, same origin": " http://127.0.0.1:{A}/v1/Services?PageToken=2",
    "trailing space, same origin": "http://127.0.0.1:{A}/v1/Services?PageToken=2 ",
    "tab in the host": "http://127.0.0.1:{E}\t/v1/Services?PageToken=2",
    "newline in the path": "http://127.0.0.1:{A}/v1/Services\r\nHost: 127.0.0.1:{E}",
    "backslashes": "http:\\\\127.0.0.1:{E}\\v1\\Services",
    "backslash, relative": "/\\127.0.0.1:{E}/v1/Services",
    "backslashes, scheme-relative": "\\\\127.0.0.1:{E}/v1/Services",
    "user info hiding the host": "http://127.0.0.1:{A}@127.0.0.1:{E}/v1/Services",
    "user info naming another host": "http://127.0.0.1:{E}@127.0.0.1:{A}/v1/Services",
    "user and password": "http://user:pass@127.0.0.1:{A}/v1/Services?PageToken=2",
    "upper-case host, another port": "http://LOCALHOST:{E}/v1/Services?PageToken=2",
    "localhost for 127.0.0.1": "http://localhost:{A}/v1/Services?PageToken=2",
    "IPv6 loopback": "http://[::1]:{E6}/v1/Services?PageToken=2",
    "IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]:{E}/v1/Services?PageToken=2",
    "percent-encoded host": "http://%31%32%37.0.0.1:{E}/v1/Services?PageToken=2",
    "percent-encoded dots": "http://127%2E0%2E0%2E1:{E}/v1/Services?PageToken=2",
    "decimal IPv4": "http://2130706433:{E}/v1/Services?PageToken=2",
    "trailing dot": "http://127.0.0.1.:{A}/v1/Services?PageToken=2",
    "two ports": "http://127.0.0.1:{A}:{E}/v1/Services?PageToken=2",
    "fragment before the user info": "http://127.0.0.1:{E}#@127.0.0.1:{A}/v1/Services",
    "non-ASCII digit in the port": "http://127.0.0.1:{A}\uff11/v1/Services",
    "full-width host": "http://\uff11\uff12\uff17.0.0.1:{E}/v1/Services",
}

#: Spellings of a URL on the configured origin: followed, to the same server.
SAME_ORIGIN = {
    "absolute": "http://127.0.0.1:{A}/v1/Services?PageToken=2",
    "relative path": "/v1/Services?PageToken=2",
    "relative query": "?PageToken=2",
    "upper-case scheme": "HTTP://127.0.0.1:{A}/v1/Services?PageToken=2",
    "fragment that looks like user info": "http://127.0.0.1:{A}/v1/Services?PageToken=2#@127.0.0.1:{E}",
}


def _client(api: Server, host: str = "127.0.0.1") -> TwilioClient:
    return TwilioClient(f"http://{host}:{api.port}", (ACCOUNT_SID, TOKEN), POLICY)


@pytest.mark.parametrize("template", REFUSED.values(), ids=REFUSED.keys())
def test_a_next_page_url_off_the_origin_is_refused(
    api: Server, others: dict[str, Server], template: str
) -> None:
    api.next_url = _spell(template, api, others)
    pages = _client(api).iter_pages(FIRST_PATH, "services", {"PageSize": 1})
    assert next(pages) == [{"sid": "IS1"}]  # the first page is data
    with pytest.raises(UnsafeUrlError) as refused:
        next(pages)
    message = str(refused.value)
    assert message.startswith("refusing next_page_url "), message
    assert "\n" not in message and "\r" not in message and TOKEN not in message
    assert [path for path, _ in api.requests] == [f"{FIRST_PATH}?PageSize=1"]
    for name, server in others.items():
        assert server.requests == [], f"{name} was contacted"
        assert server.authorizations == [], f"{name} saw credentials"


@pytest.mark.parametrize("template", SAME_ORIGIN.values(), ids=SAME_ORIGIN.keys())
def test_a_next_page_url_on_the_origin_is_followed_there(
    api: Server, others: dict[str, Server], template: str
) -> None:
    api.next_url = _spell(template, api, others)
    pages = list(_client(api).iter_pages(FIRST_PATH, "services", {"PageSize": 1}))
    assert pages == [[{"sid": "IS1"}], []]
    (first, _), (second, _) = api.requests
    assert first == f"{FIRST_PATH}?PageSize=1"
    assert second == "/v1/Services?PageToken=2"  # the query of next_page_url, nothing added
    assert len(api.authorizations) == 2  # credentials went with both, to the origin
    for name, server in others.items():
        assert server.requests == [], f"{name} was contacted"


def test_an_upper_case_host_is_the_same_origin(api: Server, others: dict[str, Server]) -> None:
    """Host names compare case-insensitively: `LOCALHOST` is `localhost`."""
    api.next_url = f"http://LOCALHOST:{api.port}/v1/Services?PageToken=2"
    try:
        socket.create_connection(("localhost", api.port), timeout=5).close()
    except OSError:
        pytest.skip("localhost does not reach 127.0.0.1 here")
    pages = list(_client(api, "localhost").iter_pages(FIRST_PATH, "services"))
    assert pages == [[{"sid": "IS1"}], []]
    assert len(api.authorizations) == 2
    assert all(server.requests == [] for server in others.values())


@pytest.mark.parametrize(
    "template",
    ["http://127.0.0.1:{E}/v1/Services", "//127.0.0.1:{E}/v1/Services", "/v1/Services?PageToken=2"],
    ids=["absolute", "scheme-relative", "same origin"],
)
def test_redirects_are_refused_even_on_the_origin(
    api: Server, others: dict[str, Server], template: str
) -> None:
    api.location = _spell(template, api, others)
    with pytest.raises(UnsafeUrlError, match=r"^refusing to follow a redirect \(HTTP 307\) to "):
        list(_client(api).iter_pages("/redirect", "services"))
    assert [path for path, _ in api.requests] == ["/redirect"]  # not retried, not followed
    assert all(server.requests == [] for server in others.values())


def test_a_path_cannot_leave_the_origin(api: Server, others: dict[str, Server]) -> None:
    """The first request is judged the same way: a path that would move the host is refused."""
    client = _client(api)
    evil = others["evil"].port
    for path in (f"@127.0.0.1:{evil}/v1/Services", f":{evil}/v1/Services"):
        with pytest.raises(UnsafeUrlError, match="^refusing request URL "):
            list(client.iter_pages(path, "services"))
    assert api.requests == []
    assert all(server.requests == [] for server in others.values())
