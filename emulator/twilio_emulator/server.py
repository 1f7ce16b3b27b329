"""Serving: a threaded HTTP/1.1 server, fault and latency injection, and the :class:`Emulator`.

Why the standard library and not ``werkzeug.serving``: the emulator must control the socket —
answer in exactly one ``send`` (headers + body together; a separate small write for the body
meets Nagle + delayed ACK and costs ~40 ms per request on loopback), close a connection without
answering, or send half a body and hang up. ``http.server.BaseHTTPRequestHandler`` with
``protocol_version = "HTTP/1.1"`` gives keep-alive and request parsing; every response is
assembled by :func:`_encode` and written with one ``sendall``. ``TCP_NODELAY`` is set on every
accepted connection; one thread serves each connection (``ThreadingHTTPServer``), and
``latency_ms`` sleeps in that thread, so concurrency still scales with injected latency.

The account-wide concurrency limit (Twilio's 429 / 20429) is decided first, when a request
arrives (:meth:`Stats.admit`): an admitted request holds one of the account's slots for its whole
service time, fault decision, gate, latency and handling included, and frees it just before its
answer is written; a rejected one is answered 429 at once, without latency, and holds no slot.

Measured on this 2-core machine over loopback (``requests.Session``, keep-alive): a page of 50
user conversations takes about 1 ms per request (see docs/emulator.md for the figure and how
to reproduce it).
"""

from __future__ import annotations

import email.utils
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from . import render
from .accounts import Account, AccountsApp, plan_accounts
from .app import App, Request, Response, error_response, parse_query
from .config import EmulatorConfig
from .errors import TwilioError
from .faults import FaultController, FaultKind
from .gate import RequestGate
from .sids import request_id
from .stats import Stats
from .store import Store

logger = logging.getLogger("twilio_emulator")

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def too_many_requests(route: str, retry_after_s: int | None) -> Response:
    """429 / 20429 "Too Many Requests", with ``Retry-After`` unless ``retry_after_s`` is None.

    The one rendering of Twilio's concurrency limit: the injected ``429`` faults and the account
    limit both answer with it (``route`` "fault" or "account_limit" tells them apart in stats).
    """
    resp = error_response(TwilioError(429, 20429, "Too Many Requests"), route)
    if retry_after_s is not None:
        resp.headers.append(("Retry-After", str(retry_after_s)))
    return resp


def _fault_response(kind: FaultKind, retry_after_s: int) -> Response | None:
    """The canned HTTP answer of a fault kind (None for kinds handled at socket level)."""
    if kind == FaultKind.RATE_LIMIT_RETRY_AFTER:
        return too_many_requests("fault", retry_after_s)
    if kind == FaultKind.RATE_LIMIT:
        return too_many_requests("fault", None)
    if kind == FaultKind.UNAVAILABLE:
        return error_response(TwilioError(503, 20503, "Service Unavailable"), "fault")
    if kind == FaultKind.SERVER_ERROR:
        return error_response(TwilioError(500, 20500, "Internal Server Error"), "fault")
    if kind == FaultKind.HTML_502:
        return Response(502, _HTML_502, "fault", content_type="text/html")
    if kind == FaultKind.EMPTY_200:
        return Response(200, b"", "fault")
    return None


def _encode(resp: Response, extra: list[tuple[str, str]], close: bool, length: int) -> bytes:
    """Status line and headers, ready to be sent in front of the body in the same write."""
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [
        f"HTTP/1.1 {resp.status} {reason}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {length}",
    ]
    lines.extend(f"{k}: {v}" for k, v in (*resp.headers, *extra))
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Handler(BaseHTTPRequestHandler):
    """One connection; serves requests until the client closes or a fault drops it."""

    protocol_version = "HTTP/1.1"
    server: _Server
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 300

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence http.server's stderr log; requests are logged at DEBUG in :meth:`_serve`."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve()

    def _drop(self) -> None:
        """Hang up without (completing) an answer."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        emu = self.server.emulator
        started = time.perf_counter()
        emu.stats.begin()
        # The account limit, decided on arrival; `concurrent` is Twilio-Concurrent-Requests.
        admitted, concurrent = emu.stats.admit(emu.account_concurrency, emu.other_traffic)
        route, status, fault = "unknown", None, None
        recorded = False

        def record() -> None:
            # Counted (and the account slot freed) before the answer leaves, so a client that
            # has its answer sees it counted and may send its next request at once.
            nonlocal recorded
            if not recorded:
                recorded = True
                if admitted:
                    emu.stats.release()
                emu.stats.end(route, status, fault)

        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            raw_path, _, query = self.path.partition("?")
            resp: Response | None
            if not admitted:
                # Not processed: answered at once, no fault, no gate, no latency.
                resp = too_many_requests("account_limit", emu.limit_retry_after_s)
            else:
                fault = emu.faults.decide(raw_path)
                gate = emu.gate
                if gate is not None:
                    gate.hold(raw_path)
                delay = emu.latency_ms + (emu.config.slow_ms if fault == FaultKind.SLOW else 0)
                if delay > 0 and emu.pause(delay / 1000):
                    route = "stopped"  # the emulator is stopping: hang up
                    record()
                    self._drop()
                    return
                if fault == FaultKind.DROP:
                    route = "fault"
                    record()
                    self._drop()
                    return
                resp = _fault_response(fault, emu.config.retry_after_s) if fault else None
            if resp is None:
                host = self.headers.get("Host")
                base = emu.config.public_url or (f"http://{host}" if host else emu.base_url)
                req = Request(
                    method=self.command,
                    path=raw_path,
                    query=parse_query(query),
                    headers=self.headers,  # type: ignore[arg-type]
                    body=body,
                    base=base.rstrip("/"),
                )
                resp = emu.accounts_app.handle(req)
            route, status = resp.route, resp.status
            payload = resp.body
            announced = len(payload)
            if fault == FaultKind.TRUNCATED:
                payload = payload[: len(payload) // 2]
                announced = len(payload)
            elif fault == FaultKind.SHORT_BODY:
                payload = payload[: len(payload) // 2]
            duration = time.perf_counter() - started
            extra = [
                ("Twilio-Request-Id", request_id()),
                ("Twilio-Concurrent-Requests", str(concurrent)),
                ("Twilio-Request-Duration", f"{duration:.3f}"),
            ]
            record()
            # One write for headers and body: see the module docstring.
            self.wfile.write(_encode(resp, extra, self.close_connection, announced) + payload)
            if fault == FaultKind.SHORT_BODY:
                self._drop()
        finally:
            record()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %s%s in %.1f ms",
                    self.command,
                    self.path,
                    status if status is not None else "dropped",
                    f" (fault {fault})" if fault else "",
                    (time.perf_counter() - started) * 1000,
                )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = (
            str(self.server_address[0]),
            int(self.server_address[1]),
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up before its response was written (a killed process, a timeout)
        is no error of the server's, as for Twilio: a debug line, not a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("client %s went away before its response", client_address)
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Hang up on idle keep-alive clients so their threads end with the server."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Emulator:
    """The emulated Twilio Conversations API: store + faults + stats + HTTP server.

    ``Emulator(cfg).start()`` serves in a background thread until :meth:`stop`; it is also a
    context manager. Pass ``store`` to serve a pre-built store (the parent account's) instead of
    generating one.

    With ``config.subaccounts`` the emulator serves several accounts (:attr:`accounts`, the
    parent first; see :mod:`twilio_emulator.accounts`), each with its own data; :attr:`store`,
    :attr:`app` and the credential properties are the parent's, and the truth helpers
    (:meth:`services` ...) take an ``account_sid`` (default: the parent).
    """

    def __init__(self, config: EmulatorConfig | None = None, store: Store | None = None) -> None:
        self.config = config or EmulatorConfig()
        cfg = self.config
        plans = plan_accounts(cfg)
        parent_store = store if store is not None else Store.generate(cfg.data, cfg.account_sid)
        #: Every account served, the parent first, then its subaccounts in index order.
        self.accounts: list[Account] = []
        for plan in plans:
            account_store = parent_store if plan.is_parent else Store.generate(plan.data, plan.sid)
            app = App(
                account_store,
                account_sid=plan.sid,
                auth_token=plan.auth_token,
                api_key_sid=plan.api_key_sid,
                api_key_secret=plan.api_key_secret,
                page_size_policy=cfg.page_size_policy,
            )
            self.accounts.append(Account(plan, account_store, app))
        self.store = parent_store
        #: The parent account's v1 app; :attr:`accounts_app` is what the server calls.
        self.app = self.accounts[0].app
        self.accounts_app = AccountsApp(self.accounts)
        seed = cfg.fault_seed if cfg.fault_seed is not None else cfg.data.seed
        self.faults = FaultController(seed=seed, rate=cfg.fault_rate, kinds=cfg.fault_kinds)
        self.stats = Stats()
        #: Added to every request (milliseconds); may be changed while running.
        self.latency_ms: float = cfg.latency_ms
        #: The account concurrency limit (None: none), the share held by the account's other
        #: traffic and the limit's Retry-After (None: none); may be changed while running.
        #: With subaccounts it is one limit shared by all accounts' requests.
        self.account_concurrency: int | None = cfg.account_concurrency
        self.other_traffic: int = cfg.other_traffic
        self.limit_retry_after_s: int | None = cfg.limit_retry_after_s
        #: Test hook holding admitted requests in flight (see :mod:`twilio_emulator.gate`).
        self.gate: RequestGate | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Emulator:
        """Bind (port 0 = a free port) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        self._server = _Server((self.config.host, self.config.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, hang up on open connections, release the port."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # ends latency pauses: those requests hang up
        if self.gate is not None:
            self.gate.open()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def pause(self, seconds: float) -> bool:
        """Sleep out a request's latency; True (early) when the emulator is stopping."""
        return self._stopping.wait(seconds)

    def __enter__(self) -> Emulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses and credentials

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (or ``public_url`` when configured)."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def account_sid(self) -> str:
        return self.config.account_sid

    @property
    def auth_token(self) -> str:
        return self.config.auth_token

    @property
    def api_key_sid(self) -> str | None:
        return self.config.api_key_sid

    @property
    def api_key_secret(self) -> str | None:
        return self.config.api_key_secret

    @property
    def default_service_sid(self) -> str:
        return self.store.default_service_sid

    def account(self, account_sid: str | None = None) -> Account:
        """The served account with this SID (None: the parent), or KeyError."""
        if account_sid is None:
            return self.accounts[0]
        for account in self.accounts:
            if account.sid == account_sid:
                return account
        raise KeyError(account_sid)

    # ----------------------------------------------------------------- truth, as the API renders it

    def services(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every service, as ``GET /v1/Services`` serves them (in SID order)."""
        store = self.account(account_sid).store
        with store.lock:
            return [
                render.service(self.base_url, store.account_sid, store.services[s])
                for s in store.service_sids
            ]

    def users(self, service_sid: str, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every user of a service, as ``GET /v1/Services/{IS}/Users`` serves them."""
        store = self.account(account_sid).store
        with store.lock:
            svc = store.service(service_sid)
            return [
                render.user(self.base_url, store.account_sid, svc.sid, svc.users[u])
                for u in svc.user_sids
            ]

    def user_conversations(
        self, service_sid: str, user_sid_or_identity: str, account_sid: str | None = None
    ) -> list[dict[str, Any]]:
        """One user's rows, as ``GET /v1/Services/{IS}/Users/{US}/Conversations`` serves them."""
        store = self.account(account_sid).store
        with store.lock:
            svc = store.service(service_sid)
            usr = store.user(service_sid, user_sid_or_identity)
            return [
                render.user_conversation(
                    self.base_url,
                    store.account_sid,
                    svc.sid,
                    usr.sid,
                    m,
                    svc.conversations[m.conversation_sid],
                )
                for m in usr.memberships
            ]

    def all_user_conversations(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every user-conversation row of every user of every service (service form)."""
        store = self.account(account_sid).store
        base = self.base_url
        with store.lock:
            return [
                render.user_conversation(base, store.account_sid, svc.sid, usr.sid, m, conv)
                for svc, usr, m, conv in store.iter_memberships()
            ]

    def conversations(
        self, service_sid: str, account_sid: str | None = None
    ) -> list[dict[str, Any]]:
        """Every conversation of a service, as ``GET /v1/Services/{IS}/Conversations`` serves
        them (no filter: in SID order)."""
        store = self.account(account_sid).store
        with store.lock:
            svc = store.service(service_sid)
            return [
                render.conversation(self.base_url, store.account_sid, svc.sid, svc.conversations[c])
                for c in svc.conversation_sids
            ]

    def participants(
        self, service_sid: str, conversation_sid: str, account_sid: str | None = None
    ) -> list[dict[str, Any]]:
        """A conversation's participants, as ``GET …/Conversations/{CH}/Participants`` serves
        them (in participant SID order)."""
        store = self.account(account_sid).store
        with store.lock:
            svc = store.service(service_sid)
            return [
                render.participant(self.base_url, store.account_sid, svc.sid, view)
                for view in store.participant_views(service_sid, conversation_sid)
            ]

    def messages(
        self,
        service_sid: str,
        conversation_sid: str,
        order: str = "asc",
        account_sid: str | None = None,
    ) -> list[dict[str, Any]]:
        """A conversation's messages, as ``GET …/Conversations/{CH}/Messages?Order=…`` serves
        them (by index; ``order`` "asc" or "desc")."""
        store = self.account(account_sid).store
        with store.lock:
            svc = store.service(service_sid)
            conv = store.conversation(service_sid, conversation_sid)
            return [
                render.message(self.base_url, store.account_sid, svc.sid, conv.sid, m)
                for m in store.messages(service_sid, conv.sid, order)
            ]

    def all_conversations(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every conversation of every service (services and conversations in SID order)."""
        store = self.account(account_sid).store
        with store.lock:
            return [
                row
                for s in store.service_sids
                for row in self.conversations(s, account_sid=account_sid)
            ]

    def all_participants(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every participant of every conversation of every service (in SID order each)."""
        store = self.account(account_sid).store
        with store.lock:
            return [
                row
                for s in store.service_sids
                for c in store.services[s].conversation_sids
                for row in self.participants(s, c, account_sid=account_sid)
            ]

    def all_messages(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        """Every message of every conversation of every service (by index, ascending).

        Messages are derived when served: on a large data set this is tens of millions of
        rows. Meant for small data sets.
        """
        store = self.account(account_sid).store
        with store.lock:
            return [
                row
                for s in store.service_sids
                for c in store.services[s].conversation_sids
                for row in self.messages(s, c, account_sid=account_sid)
            ]

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then stop. Used by the CLI."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()


@contextmanager
def run_emulator(
    config: EmulatorConfig | None = None, store: Store | None = None
) -> Iterator[Emulator]:
    """Run an emulator on a free port (by default) for the duration of a ``with`` block."""
    emu = Emulator(config, store).start()
    try:
        yield emu
    finally:
        emu.stop()
