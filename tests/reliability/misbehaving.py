"""A Twilio-shaped server of the tests' own, for the ways a real API deviates from its spec.

Not the emulator: it knows nothing of Twilio's data model, only lists of pages that a test lays
out record by record, so a page can lead back to one already served, serve a record twice, lack
its `meta`, or vanish (404). Each list is a path with its pages; a page is addressed by the
`Page` number its URL carries (Twilio's own next-page URLs carry `Page` and `PageToken`). Built
to Twilio's documented shapes (`../shared/twilio/`): `{<key>: [...], "meta": {...}}`, absolute
`*_url`s, 404 with error 20404, 401 with 20003.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import orjson

ACCOUNT_SID = "AC" + "ab" * 16
AUTH_TOKEN = "misbehaving-token-" + "9" * 14


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


def service(n: int, **fields: Any) -> dict[str, Any]:
    sid_ = sid("IS", n)
    return {
        "sid": sid_,
        "account_sid": ACCOUNT_SID,
        "friendly_name": f"service {n}",
        "date_created": "2024-01-01T00:00:00Z",
        "date_updated": "2024-01-01T00:00:00Z",
        "url": f"https://conversations.twilio.com/v1/Services/{sid_}",
        "links": {"users": f"https://conversations.twilio.com/v1/Services/{sid_}/Users"},
        **fields,
    }


def user(service_sid: str, n: int, **fields: Any) -> dict[str, Any]:
    sid_ = sid("US", n)
    return {
        "sid": sid_,
        "account_sid": ACCOUNT_SID,
        "chat_service_sid": service_sid,
        "role_sid": sid("RL", 1),
        "identity": f"user-{n}@example.com",
        "friendly_name": f"user {n}",
        "attributes": "{}",
        "is_online": None,
        "is_notifiable": None,
        "date_created": "2024-01-01T00:00:00Z",
        "date_updated": "2024-01-01T00:00:00Z",
        "url": f"https://conversations.twilio.com/v1/Services/{service_sid}/Users/{sid_}",
        "links": {"user_conversations": "https://conversations.twilio.com/v1/x"},
        **fields,
    }


def user_conversation(service_sid: str, user_sid: str, n: int, **fields: Any) -> dict[str, Any]:
    conversation = sid("CH", n)
    return {
        "account_sid": ACCOUNT_SID,
        "chat_service_sid": service_sid,
        "conversation_sid": conversation,
        "user_sid": user_sid,
        "participant_sid": sid("MB", n),
        "friendly_name": f"conversation {n}",
        "unique_name": None,
        "attributes": "{}",
        "conversation_state": "active",
        "notification_level": "default",
        "unread_messages_count": 0,
        "last_read_message_index": None,
        "timers": {},
        "date_created": "2024-01-01T00:00:00Z",
        "date_updated": "2024-01-02T00:00:00Z",
        "created_by": "system",
        "url": f"https://conversations.twilio.com/v1/Services/{service_sid}/Users/{user_sid}"
        f"/Conversations/{conversation}",
        "links": {
            "participant": "https://conversations.twilio.com/v1/p",
            "conversation": f"https://conversations.twilio.com/v1/Conversations/{conversation}",
        },
        **fields,
    }


@dataclass
class Page:
    """One page: its records, and where its `next_page_url` leads: the number of another page
    of the same list, a raw path and query on the server (`str`), or nowhere (None). `meta`
    False leaves the `meta` object out; `key` overrides the list's key in `meta`."""

    records: list[dict[str, Any]]
    next: int | str | None = None
    meta: bool = True
    key: str | None = None


@dataclass
class Server:
    """The server; `lists` maps a path (unquoted) to its pages, `objects` a path to one object.
    A path in neither answers 404 (Twilio's 20404)."""

    lists: dict[str, list[Page]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)  # path?query of every request, in order
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def paged(self, path: str, records: list[dict[str, Any]], size: int = 2) -> list[Page]:
        """Serve `records` at `path` in pages of `size` that chain to the end; the pages."""
        chunks = [records[i : i + size] for i in range(0, len(records), size)] or [[]]
        pages = [
            Page(chunk, n + 1 if n + 1 < len(chunks) else None) for n, chunk in enumerate(chunks)
        ]
        self.lists[path] = pages
        return pages

    def requests_to(self, path: str) -> int:
        with self._lock:
            return sum(1 for served in self.served if unquote(served.partition("?")[0]) == path)

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if path in self.objects:
            return 200, self.objects[path]
        pages = self.lists.get(path)
        if pages is None:
            return 404, {
                "code": 20404,
                "message": f"The requested resource {path.removeprefix('/v1')} was not found",
                "more_info": "https://www.twilio.com/docs/errors/20404",
                "status": 404,
            }
        number = int(query.get("Page", ["0"])[0])
        size = query.get("PageSize", ["50"])[0]
        page = pages[number]
        key = path.rsplit("/", 1)[-1].lower()

        def url(n: int) -> str:
            token = f"&PageToken=PT{n}" if n else ""
            return f"{self.base_url}{quote(path)}?PageSize={size}&Page={n}{token}"

        if isinstance(page.next, int):
            next_url: str | None = url(page.next)
        elif isinstance(page.next, str):
            next_url = f"{self.base_url}{page.next}"
        else:
            next_url = None
        body: dict[str, Any] = {key: page.records}
        if page.meta:
            body["meta"] = {
                "page": number,
                "page_size": int(size),
                "first_page_url": url(0),
                "previous_page_url": url(number - 1) if number else None,
                "url": url(number),
                "next_page_url": next_url,
                "key": page.key or key,
            }
        return 200, body

    def start(self) -> Server:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                expected = base64.b64encode(f"{server.account_sid}:{server.auth_token}".encode())
                parts = urlsplit(self.path)
                with server._lock:
                    server.served.append(self.path)
                if self.headers.get("Authorization") != f"Basic {expected.decode()}":
                    status, body = 401, {"code": 20003, "message": "Authenticate", "status": 401}
                else:
                    status, body = server.answer(unquote(parts.path), parse_qs(parts.query))
                payload = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
