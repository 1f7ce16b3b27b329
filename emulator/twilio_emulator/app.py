"""The HTTP semantics of the emulated API: authentication, routing, handlers, error bodies.

:meth:`App.handle` maps one parsed request to one :class:`Response`; it knows nothing about
sockets (that is :mod:`twilio_emulator.server`), so it can be unit-tested directly.

Routing splits the *raw* (still percent-encoded) path on ``/`` and decodes each segment on its
own. That is what lets a user identity contain ``/``, ``?``, ``#`` or ``%`` (sent as ``%2F`` and so
on): a router that matches on the decoded path, like ``werkzeug.routing.Map``, would see an extra
path segment. The route table is small enough that a linear scan costs microseconds.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from . import render
from .config import PageSizePolicy
from .errors import (
    NotFound,
    TwilioError,
    authenticate,
    bad_request,
    method_not_allowed,
    missing_param,
)
from .model import Conversation, parse_iso
from .paging import PageRequest, page_meta, parse_page_request, window
from .store import CONVERSATION_STATES, MESSAGE_ORDERS, Store

JSON_TYPE = "application/json; charset=utf-8"
SPEC_MAX_SERVICES = 100
SPEC_MAX_USERS = 50
SPEC_MAX_USER_CONVERSATIONS = 50
SPEC_MAX_CONVERSATIONS = 100
SPEC_MAX_PARTICIPANTS = 100
SPEC_MAX_MESSAGES = 100
_conv_key = itemgetter(0)


@dataclass
class Request:
    """One HTTP request as the app needs it."""

    method: str
    path: str  # raw, percent-encoded, without the query string
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    base: str  # scheme://host[:port] for the absolute *_url values

    @property
    def form(self) -> dict[str, str]:
        """The url-encoded form body (first value of each field)."""
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}


@dataclass
class Response:
    """One HTTP response; ``route`` names the matched route for stats and logs."""

    status: int
    body: bytes
    route: str
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, payload: Any, route: str) -> Response:
    """A JSON response (compact, UTF-8)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, route)


def error_response(err: TwilioError, route: str) -> Response:
    """Twilio's error body; 401 carries the Basic challenge."""
    resp = json_response(err.status, err.body(), route)
    if err.status == 401:
        resp.headers.append(("WWW-Authenticate", 'Basic realm="Twilio API"'))
    return resp


def parse_query(query: str) -> dict[str, str]:
    """Query string → first value per name."""
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """``(username, password)`` of an HTTP Basic ``Authorization`` header, or None."""
    value = headers.get("Authorization") or ""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep:
        return None
    return username, password


Params = dict[str, str]
Handler = Callable[[Request, Params, str, bool], Response]


@dataclass(frozen=True)
class Route:
    """A path pattern (segments; ``{name}`` captures one segment) and its method handlers."""

    name: str
    segments: tuple[str, ...]
    methods: Mapping[str, Handler]
    twin: bool  # default-service form (/v1/Users...) rather than /v1/Services/{service}/...

    def match(self, parts: list[str]) -> Params | None:
        if len(parts) != len(self.segments):
            return None
        params: Params = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern.startswith("{"):
                if not part:
                    return None
                params[pattern[1:-1]] = unquote(part, errors="strict")
            elif pattern != part:
                return None
        return params


class App:
    """Authentication + routing + handlers over a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        account_sid: str,
        auth_token: str,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        page_size_policy: PageSizePolicy = "clamp",
    ) -> None:
        self.store = store
        self.page_size_policy: PageSizePolicy = page_size_policy
        self._credentials = [(account_sid, auth_token)]
        if api_key_sid and api_key_secret:
            self._credentials.append((api_key_sid, api_key_secret))
        self.routes = self._build_routes()

    # ----------------------------------------------------------------- plumbing

    def _build_routes(self) -> list[Route]:
        service_scoped: list[tuple[str, str, dict[str, Handler]]] = [
            ("users", "Users", {"GET": self.list_users, "POST": self.create_user}),
            ("user", "Users/{user}", {"GET": self.fetch_user, "DELETE": self.delete_user}),
            ("user_conversations", "Users/{user}/Conversations", {"GET": self.list_user_convs}),
            (
                "user_conversation",
                "Users/{user}/Conversations/{conversation}",
                {
                    "GET": self.fetch_user_conv,
                    "POST": self.update_user_conv,
                    "DELETE": self.leave,
                },
            ),
            (
                "conversations",
                "Conversations",
                {"GET": self.list_conversations, "POST": self.create_conversation},
            ),
            (
                "conversation",
                "Conversations/{conversation}",
                {
                    "GET": self.fetch_conversation,
                    "POST": self.update_conversation,
                    "DELETE": self.delete_conversation,
                },
            ),
            (
                "participants",
                "Conversations/{conversation}/Participants",
                {"GET": self.list_participants, "POST": self.join},
            ),
            (
                "participant",
                "Conversations/{conversation}/Participants/{participant}",
                {
                    "GET": self.fetch_participant,
                    "POST": self.update_participant,
                    "DELETE": self.remove_participant,
                },
            ),
            (
                "messages",
                "Conversations/{conversation}/Messages",
                {"GET": self.list_messages, "POST": self.post_message},
            ),
            (
                "message",
                "Conversations/{conversation}/Messages/{message}",
                {
                    "GET": self.fetch_message,
                    "POST": self.update_message,
                    "DELETE": self.delete_message,
                },
            ),
        ]
        routes = [
            Route(
                "services",
                ("", "v1", "Services"),
                {"GET": self.list_services, "POST": self.create_service},
                False,
            ),
            Route(
                "service", ("", "v1", "Services", "{service}"), {"GET": self.fetch_service}, False
            ),
        ]
        for name, suffix, methods in service_scoped:
            tail = tuple(suffix.split("/"))
            routes.append(Route(name, ("", "v1", "Services", "{service}", *tail), methods, False))
            routes.append(Route(f"default_{name}", ("", "v1", *tail), methods, True))
        return routes

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        credentials = basic_credentials(headers)
        if credentials is None:
            return False
        username, password = credentials
        ok = False
        for sid, secret in self._credentials:
            # Compare every pair in full so timing does not hint at which part was wrong.
            ok |= hmac.compare_digest(username.encode(), sid.encode()) & hmac.compare_digest(
                password.encode(), secret.encode()
            )
        return ok

    def handle(self, req: Request) -> Response:
        """Serve one request (never raises for API-level errors)."""
        if not self._authorized(req.headers):
            return error_response(authenticate(), "unauthorized")
        return self.dispatch(req)

    def dispatch(self, req: Request) -> Response:
        """Serve one request already authenticated as this app's account."""
        path = req.path[:-1] if req.path.endswith("/") and len(req.path) > 1 else req.path
        parts = path.split("/")
        route_name = "not_found"
        try:
            for route in self.routes:
                try:
                    params = route.match(parts)
                except UnicodeDecodeError:
                    raise bad_request(20001, "Path is not valid UTF-8") from None
                if params is None:
                    continue
                route_name = route.name
                handler = route.methods.get(req.method)
                if handler is None:
                    raise method_not_allowed(req.method)
                # Twin routes (/v1/Users...) have no {service}: they mean the default service.
                service_sid = params.pop("service", None) or self.store.default_service_sid
                response = handler(req, params, service_sid, route.twin)
                response.route = route.name
                return response
            raise NotFound(path)
        except NotFound:
            # Twilio names the requested path, without the version prefix.
            shown = path[3:] if path.startswith("/v1/") else path
            err = TwilioError(404, 20404, f"The requested resource {shown} was not found")
            return error_response(err, route_name)
        except TwilioError as err:
            return error_response(err, route_name)

    def _page(self, req: Request, spec_max: int, scope: str) -> PageRequest:
        return parse_page_request(
            req.query, spec_max, self.page_size_policy, scope, self.store.token_secret
        )

    # ----------------------------------------------------------------- services

    def list_services(self, req: Request, p: Params, _: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            page = self._page(req, SPEC_MAX_SERVICES, "services")
            sids = store.service_sids
            start, end = window(sids, None, page)
            rows = [
                render.service(req.base, store.account_sid, store.services[s])
                for s in sids[start:end]
            ]
            meta = self._meta(
                req, "services", page, sids[start:end], start, end, len(sids), "services"
            )
        return json_response(200, {"services": rows, "meta": meta}, "services")

    def fetch_service(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        with self.store.lock:
            svc = self.store.service(service_sid)
            row = render.service(req.base, self.store.account_sid, svc)
        return json_response(200, row, "service")

    def create_service(self, req: Request, p: Params, _: str, twin: bool) -> Response:
        name = req.form.get("FriendlyName")
        if not name:
            raise missing_param("FriendlyName")
        sid = self.store.create_service(name)
        with self.store.lock:
            row = render.service(req.base, self.store.account_sid, self.store.services[sid])
        return json_response(201, row, "services")

    def _meta(
        self,
        req: Request,
        key: str,
        page: PageRequest,
        page_sids: list[str],
        start: int,
        end: int,
        total: int,
        scope: str,
        query: str = "",
    ) -> dict[str, Any]:
        return page_meta(
            base=req.base,
            path=req.path,
            key=key,
            req=page,
            first_sid=page_sids[0] if page_sids else None,
            last_sid=page_sids[-1] if page_sids else None,
            has_previous=start > 0,
            has_next=end < total,
            scope=scope,
            secret=self.store.token_secret,
            query=query,
        )

    # ----------------------------------------------------------------- users

    def list_users(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            svc = store.service(service_sid)
            page = self._page(req, SPEC_MAX_USERS, f"users/{service_sid}")
            sids = svc.user_sids
            start, end = window(sids, None, page)
            rows = [
                render.user(req.base, store.account_sid, service_sid, svc.users[s], twin=twin)
                for s in sids[start:end]
            ]
            meta = self._meta(
                req, "users", page, sids[start:end], start, end, len(sids), f"users/{service_sid}"
            )
        return json_response(200, {"users": rows, "meta": meta}, "users")

    def fetch_user(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        with self.store.lock:
            usr = self.store.user(service_sid, p["user"])
            row = render.user(req.base, self.store.account_sid, service_sid, usr, twin=twin)
        return json_response(200, row, "user")

    def create_user(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        form = req.form
        identity = form.get("Identity")
        if not identity:
            raise missing_param("Identity")
        sid = self.store.create_user(
            service_sid, identity, form.get("FriendlyName"), form.get("Attributes")
        )
        with self.store.lock:
            usr = self.store.user(service_sid, sid)
            row = render.user(req.base, self.store.account_sid, service_sid, usr, twin=twin)
        return json_response(201, row, "users")

    def delete_user(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        self.store.delete_user(service_sid, p["user"])
        return Response(204, b"", "user")

    # ----------------------------------------------------------------- user conversations

    def list_user_convs(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            svc = store.service(service_sid)
            usr = store.user(service_sid, p["user"])
            scope = f"user_conversations/{service_sid}/{usr.sid}"
            page = self._page(req, SPEC_MAX_USER_CONVERSATIONS, scope)
            members = usr.memberships
            start, end = window(members, _conv_key, page)
            chunk = members[start:end]
            convs = svc.conversations
            account = store.account_sid
            rows = [
                render.user_conversation(
                    req.base, account, service_sid, usr.sid, m, convs[m[0]], twin=twin
                )
                for m in chunk
            ]
            meta = self._meta(
                req,
                "conversations",
                page,
                [m[0] for m in chunk],
                start,
                end,
                len(members),
                scope,
            )
        return json_response(200, {"conversations": rows, "meta": meta}, "user_conversations")

    def fetch_user_conv(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            usr, conv, m = store.membership(service_sid, p["user"], p["conversation"])
            row = render.user_conversation(
                req.base, store.account_sid, service_sid, usr.sid, m, conv, twin=twin
            )
        return json_response(200, row, "user_conversation")

    def update_user_conv(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        form = req.form
        level = form.get("NotificationLevel") or None
        index, ts = _read_state_fields(form)
        store = self.store
        with store.lock:
            store.set_read_state(
                service_sid,
                p["user"],
                p["conversation"],
                notification_level=level,
                last_read_message_index=index,
                last_read_timestamp=ts,
            )
            usr, conv, m = store.membership(service_sid, p["user"], p["conversation"])
            row = render.user_conversation(
                req.base, store.account_sid, service_sid, usr.sid, m, conv, twin=twin
            )
        return json_response(200, row, "user_conversation")

    def leave(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        self.store.leave(service_sid, p["user"], p["conversation"])
        return Response(204, b"", "user_conversation")

    # ----------------------------------------------------------------- conversations

    def create_conversation(
        self, req: Request, p: Params, service_sid: str, twin: bool
    ) -> Response:
        form = req.form
        store = self.store
        with store.lock:
            sid = store.create_conversation(
                service_sid,
                friendly_name=form.get("FriendlyName"),
                unique_name=form.get("UniqueName"),
                attributes=form.get("Attributes"),
                state=form.get("State") or "active",
            )
            conv = store.conversation(service_sid, sid)
            row = render.conversation(req.base, store.account_sid, service_sid, conv, twin=twin)
        return json_response(201, row, "conversations")

    def fetch_conversation(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            row = render.conversation(req.base, store.account_sid, service_sid, conv, twin=twin)
        return json_response(200, row, "conversation")

    def update_conversation(
        self, req: Request, p: Params, service_sid: str, twin: bool
    ) -> Response:
        form = req.form
        store = self.store
        with store.lock:
            conv = store.update_conversation(
                service_sid,
                p["conversation"],
                friendly_name=form.get("FriendlyName"),
                unique_name=form.get("UniqueName"),
                attributes=form.get("Attributes"),
                state=form.get("State") or None,
            )
            row = render.conversation(req.base, store.account_sid, service_sid, conv, twin=twin)
        return json_response(200, row, "conversation")

    def delete_conversation(
        self, req: Request, p: Params, service_sid: str, twin: bool
    ) -> Response:
        self.store.delete_conversation(service_sid, p["conversation"])
        return Response(204, b"", "conversation")

    def list_conversations(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        """Conversations in SID order; with ``StartDate`` / ``EndDate``, newest created first."""
        query = req.query
        state = query.get("State") or None
        if state is not None and state not in (*CONVERSATION_STATES, "initializing"):
            raise bad_request(20001, f"Invalid State: {state}")
        start_date = _date_filter(query, "StartDate", end_of_day=False)
        end_date = _date_filter(query, "EndDate", end_of_day=True)
        echoed = "".join(
            f"{name}={quote(query[name], safe='')}&"
            for name in ("StartDate", "EndDate", "State")
            if query.get(name)
        )
        store = self.store
        with store.lock:
            svc = store.service(service_sid)
            convs = svc.conversations
            scope = f"conversations/{service_sid}/{echoed}"
            page = self._page(req, SPEC_MAX_CONVERSATIONS, scope)
            items: list[str] = svc.conversation_sids

            def keep(c: Conversation) -> bool:
                return (
                    (state is None or c.state == state)
                    and (start_date is None or c.date_created >= start_date)
                    and (end_date is None or c.date_created <= end_date)
                )

            if state is not None or start_date is not None or end_date is not None:
                items = [sid for sid in items if keep(convs[sid])]
            if start_date is None and end_date is None:
                start, end = window(items, None, page)
                cursors = items[start:end]
            else:
                # Twilio: with a date filter the list is sorted by creation date, newest first.
                def by_created(sid: str) -> tuple[int, str]:
                    return -convs[sid].date_created, sid

                items.sort(key=by_created)
                start, end = window(items, by_created, page, _created_cursor)
                cursors = [f"{convs[sid].date_created}|{sid}" for sid in items[start:end]]
            account = store.account_sid
            rows = [
                render.conversation(req.base, account, service_sid, convs[sid], twin=twin)
                for sid in items[start:end]
            ]
            meta = self._meta(
                req, "conversations", page, cursors, start, end, len(items), scope, echoed
            )
        return json_response(200, {"conversations": rows, "meta": meta}, "conversations")

    # ----------------------------------------------------------------- participants

    def join(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        """Add a chat participant (``Identity``) or an SMS / WhatsApp one (``MessagingBinding``)."""
        form = req.form
        identity = form.get("Identity")
        address = form.get("MessagingBinding.Address")
        attributes = form.get("Attributes")
        if identity and address:
            raise bad_request(20001, "Identity and MessagingBinding.Address cannot both be given")
        if not identity and not address:
            raise missing_param("Identity")
        store = self.store
        with store.lock:
            svc = store.service(service_sid)
            conv = store.conversation(service_sid, p["conversation"])
            if address:
                sid = store.add_non_user_participant(
                    service_sid,
                    conv.sid,
                    address,
                    form.get("MessagingBinding.ProxyAddress") or "",
                    attributes,
                )
            else:
                assert identity is not None
                # Like Twilio, adding a chat participant with an unknown identity creates the user.
                if identity not in svc.users_by_identity:
                    store.create_user(service_sid, identity)
                usr = svc.users_by_identity[identity]
                sid = store.join(service_sid, usr.sid, conv.sid, attributes)
            view = store.participant(service_sid, conv.sid, sid)
            row = render.participant(req.base, store.account_sid, service_sid, view, twin=twin)
        return json_response(201, row, "participants")

    def list_participants(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            scope = f"participants/{service_sid}/{conv.sid}"
            page = self._page(req, SPEC_MAX_PARTICIPANTS, scope)
            sids = store.roster(service_sid, conv.sid).sids
            start, end = window(sids, None, page)
            account = store.account_sid
            rows = [
                render.participant(req.base, account, service_sid, view, twin=twin)
                for view in store.participant_views(service_sid, conv.sid, start, end)
            ]
            meta = self._meta(
                req, "participants", page, sids[start:end], start, end, len(sids), scope
            )
        return json_response(200, {"participants": rows, "meta": meta}, "participants")

    def fetch_participant(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            view = store.participant(service_sid, p["conversation"], p["participant"])
            row = render.participant(req.base, store.account_sid, service_sid, view, twin=twin)
        return json_response(200, row, "participant")

    def update_participant(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        form = req.form
        index, ts = _read_state_fields(form)
        store = self.store
        with store.lock:
            view = store.update_participant(
                service_sid,
                p["conversation"],
                p["participant"],
                attributes=form.get("Attributes"),
                last_read_message_index=index,
                last_read_timestamp=ts,
            )
            row = render.participant(req.base, store.account_sid, service_sid, view, twin=twin)
        return json_response(200, row, "participant")

    def remove_participant(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        self.store.remove_participant(service_sid, p["conversation"], p["participant"])
        return Response(204, b"", "participant")

    # ----------------------------------------------------------------- messages

    def list_messages(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        """Messages by index: ``Order=asc`` (default) from the oldest, ``desc`` from the newest."""
        order = req.query.get("Order") or "asc"
        if order not in MESSAGE_ORDERS:
            raise bad_request(20001, f"Invalid Order: {order}")
        echoed = f"Order={order}&" if req.query.get("Order") else ""
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            scope = f"messages/{service_sid}/{conv.sid}/{order}"
            page = self._page(req, SPEC_MAX_MESSAGES, scope)
            indices = store.message_indices(service_sid, conv.sid)
            # Keys ascend in list order: the index, or minus the index from the newest.
            if order == "asc":
                keys: Sequence[int] = indices
                start, end = window(keys, None, page, int)
                chosen = list(keys[start:end])
            else:
                keys = [-i for i in reversed(indices)]
                start, end = window(keys, None, page, _negated_int)
                chosen = [-k for k in keys[start:end]]
            account = store.account_sid
            rows = [
                render.message(req.base, account, service_sid, conv.sid, m, twin=twin)
                for m in store.messages_at(service_sid, conv.sid, chosen)
            ]
            meta = self._meta(
                req,
                "messages",
                page,
                [str(i) for i in chosen],
                start,
                end,
                len(keys),
                scope,
                echoed,
            )
        return json_response(200, {"messages": rows, "meta": meta}, "messages")

    def fetch_message(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            m = store.message(service_sid, conv.sid, p["message"])
            row = render.message(req.base, store.account_sid, service_sid, conv.sid, m, twin=twin)
        return json_response(200, row, "message")

    def post_message(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        form = req.form
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            posted = store.post_message(
                service_sid,
                conv.sid,
                form.get("Author") or None,
                form.get("Body"),
                form.get("Attributes"),
            )
            m = store.message(service_sid, conv.sid, posted.sid)
            row = render.message(req.base, store.account_sid, service_sid, conv.sid, m, twin=twin)
        return json_response(201, row, "messages")

    def update_message(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        form = req.form
        store = self.store
        with store.lock:
            conv = store.conversation(service_sid, p["conversation"])
            m = store.update_message(
                service_sid,
                conv.sid,
                p["message"],
                body=form.get("Body"),
                attributes=form.get("Attributes"),
                author=form.get("Author") or None,
            )
            row = render.message(req.base, store.account_sid, service_sid, conv.sid, m, twin=twin)
        return json_response(200, row, "message")

    def delete_message(self, req: Request, p: Params, service_sid: str, twin: bool) -> Response:
        self.store.delete_message(service_sid, p["conversation"], p["message"])
        return Response(204, b"", "message")


def _read_state_fields(form: Mapping[str, str]) -> tuple[int | None, int | None]:
    """``LastReadMessageIndex`` and ``LastReadTimestamp`` (epoch seconds) of a write, or 400."""
    index: int | None = None
    if form.get("LastReadMessageIndex"):
        try:
            index = int(form["LastReadMessageIndex"])
        except ValueError:
            raise bad_request(20001, "LastReadMessageIndex must be an integer") from None
    ts: int | None = None
    if form.get("LastReadTimestamp"):
        try:
            ts = parse_iso(form["LastReadTimestamp"])
        except ValueError:
            raise bad_request(20001, "LastReadTimestamp must be ISO 8601") from None
    return index, ts


def _date_filter(query: Mapping[str, str], name: str, *, end_of_day: bool) -> int | None:
    """``StartDate`` / ``EndDate``: ISO 8601, or a bare date (its first / last second)."""
    value = query.get(name)
    if not value:
        return None
    try:
        if len(value) == 10:
            day = parse_iso(f"{value}T00:00:00Z")
            return day + 86_399 if end_of_day else day
        return parse_iso(value)
    except ValueError:
        raise bad_request(20001, f"{name} must be an ISO 8601 date") from None


def _created_cursor(value: str) -> tuple[int, str]:
    created, _, sid = value.partition("|")
    return -int(created), sid


def _negated_int(value: str) -> int:
    return -int(value)
