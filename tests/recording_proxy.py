"""A loopback HTTP proxy in front of the emulator that records who sent which credentials.

Requests are forwarded as they came (method, path, headers, the `Host` header included, so the
emulator's absolute `*_url`s point back at the proxy); every request's Basic-auth username is
recorded. Tests give each account's origin a proxy of its own and assert that it saw only that
account's credentials.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class RecordingProxy:
    def __init__(self, upstream: str, fail_status: int | None = None) -> None:
        """`fail_status`: answer every request with that status and Twilio's error body
        instead of forwarding it (a 5xx storm at one account's origin)."""
        target = urlsplit(upstream)
        self.fail_status = fail_status
        self.usernames: list[str | None] = []
        self.paths: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy.paths.append(self.path)
                proxy.usernames.append(_username(self.headers.get("Authorization")))
                if proxy.fail_status is not None:
                    status = proxy.fail_status
                    error = {"code": 20000 + status, "message": "Service Unavailable"}
                    data = json.dumps({**error, "more_info": "", "status": status}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    upstream.request("GET", self.path, headers=dict(self.headers.items()))
                    response = upstream.getresponse()
                    body = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.http = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def senders(self) -> set[str | None]:
        """The usernames (Account or API Key SIDs) this origin received credentials of."""
        return set(self.usernames)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _username(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    return base64.b64decode(header[6:]).decode().split(":", 1)[0]
