"""Several Twilio accounts: a parent (main) account and its subaccounts, each with its own data.

:func:`plan_accounts` derives every account from an :class:`EmulatorConfig`, deterministically:
account 0 is the parent (``config.account_sid``, ``config.auth_token``, the optional
``config.api_key_sid`` / ``api_key_secret`` and ``config.data`` unchanged), accounts 1..N its
subaccounts. A subaccount's SID is ``AC`` + 32 hex derived from the parent's SID and its index;
its Auth Token (and, with ``subaccount_api_keys``, its API key secret) is derived from the
parent's token, so it is as secret as the parent's; its data set is ``config.data`` with the seed
from :func:`account_seed`, so every account has its own services, users and conversations (and
page-token secret), reproducibly.

:class:`AccountsApp` is what the server calls. It authenticates a request (HTTP Basic with an
account's SID + Auth Token, or its API key SID + secret) as exactly one account and serves:

* the Conversations v1 API of *that* account only, through the account's own :class:`App`:
  rendered ``account_sid`` fields are that account's, and no other account's data is reachable.
  Simplification, on purpose: in Twilio a parent's credentials may also act on its subaccounts'
  resources (in the classic 2010 API, with the subaccount's SID in the URL). The emulator's
  Conversations URLs carry no account SID, so here each account's Conversations data opens only
  with that account's own credentials; anything else is Twilio's 401 / 20003 "Authenticate";
* ``GET /2010-04-01/Accounts.json`` (Twilio's REST API v2010, on api.twilio.com in reality): the
  parent's credentials list the parent and all its subaccounts, a subaccount's credentials list
  only that subaccount. v2010 paging: ``PageSize`` (default 50, at most 1000), ``Page``,
  ``PageToken``; top-level ``accounts``, ``first_page_uri``, ``previous_page_uri``, ``uri``,
  ``next_page_uri`` (relative URIs, ``null`` on the last page), ``page``, ``page_size``, ``start``
  and ``end`` (indexes of the page's first and last record). Filters ``FriendlyName`` (exact) and
  ``Status``. Records are in SID order (Twilio documents no order);
* ``GET /2010-04-01/Accounts/{Sid}.json``: one record, for the account itself or (with the
  parent's credentials) one of its subaccounts; any other SID is 401 / 20003, so credentials never
  tell whether another account exists.

A subaccount whose status is "suspended" or "closed" is listed with that status, but its own
credentials are refused (401 / 20003; Twilio answers requests of inactive accounts with an error
too, whose exact code for Conversations it does not document). API keys act as their account.
With no subaccounts (the default) the parent is the only account, and every v1 request is served
exactly as by its :class:`App` alone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from .app import App, Request, Response, basic_credentials, error_response, json_response
from .config import ACCOUNT_STATUSES, DataSpec, EmulatorConfig
from .errors import TwilioError, authenticate, bad_request, method_not_allowed
from .paging import encode_token, parse_page_request, window
from .sids import ACCOUNT, API_KEY
from .store import Store

V2010 = "/2010-04-01"
#: v2010 lists accept PageSize up to 1000.
V2010_MAX_PAGE_SIZE = 1000
#: Every account was created on this day (plus an hour per index), long before its data.
ACCOUNTS_CREATED = int(datetime(2019, 1, 1, tzinfo=UTC).timestamp())
_HOUR = 3600
_DAY = 86_400


def _hex(*parts: object) -> str:
    """32 lowercase hex digits derived from ``parts`` (deterministic)."""
    text = "\n".join(str(p) for p in ("twilio-emulator", *parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def account_seed(seed: int, index: int) -> int:
    """The data seed of account ``index`` (0: the parent, whose seed is ``seed`` itself)."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"twilio-emulator\naccount-seed\n{seed}\n{index}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


@dataclass(frozen=True)
class AccountPlan:
    """One account's identity, credentials and data spec (no data yet)."""

    index: int
    sid: str
    auth_token: str
    api_key_sid: str | None
    api_key_secret: str | None
    owner_account_sid: str
    friendly_name: str
    status: str
    type: str
    data: DataSpec
    date_created: int
    date_updated: int

    @property
    def is_parent(self) -> bool:
        return self.index == 0


def plan_accounts(config: EmulatorConfig) -> list[AccountPlan]:
    """The parent (index 0) and its ``config.subaccounts`` subaccounts, deterministically."""
    parent = config.account_sid
    plans = [
        AccountPlan(
            index=0,
            sid=parent,
            auth_token=config.auth_token,
            api_key_sid=config.api_key_sid if config.api_key_secret else None,
            api_key_secret=config.api_key_secret if config.api_key_sid else None,
            owner_account_sid=parent,
            friendly_name="Emulator main account",
            status="active",
            type="Full",
            data=config.data,
            date_created=ACCOUNTS_CREATED,
            date_updated=ACCOUNTS_CREATED + _DAY,
        )
    ]
    for index in range(1, config.subaccounts + 1):
        sid = ACCOUNT + _hex("subaccount", parent, index)
        status = (
            config.subaccount_statuses[index - 1]
            if index <= len(config.subaccount_statuses)
            else "active"
        )
        created = ACCOUNTS_CREATED + index * _HOUR
        keys = config.subaccount_api_keys
        plans.append(
            AccountPlan(
                index=index,
                sid=sid,
                auth_token=_hex("auth-token", config.auth_token, sid),
                api_key_sid=API_KEY + _hex("api-key", sid) if keys else None,
                api_key_secret=_hex("api-key-secret", config.auth_token, sid) if keys else None,
                owner_account_sid=parent,
                friendly_name=f"Emulator subaccount {index}",
                status=status,
                type="Full",
                data=replace(config.data, seed=account_seed(config.data.seed, index)),
                date_created=created,
                date_updated=created + (_DAY if status == "active" else 400 * _DAY),
            )
        )
    return plans


@dataclass(frozen=True)
class Account:
    """One served account: its plan, its store (its data) and its v1 :class:`App`."""

    plan: AccountPlan
    store: Store
    app: App

    @property
    def sid(self) -> str:
        return self.plan.sid

    @property
    def auth_token(self) -> str:
        return self.plan.auth_token

    @property
    def api_key_sid(self) -> str | None:
        return self.plan.api_key_sid

    @property
    def api_key_secret(self) -> str | None:
        return self.plan.api_key_secret

    @property
    def status(self) -> str:
        return self.plan.status


def rfc2822(ts: int) -> str:
    """v2010's date format: ``Thu, 30 Jul 2015 20:00:00 +0000``."""
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def render_account(plan: AccountPlan) -> dict[str, Any]:
    """``api.v2010.account`` as Twilio serves it (URIs relative to the API's host)."""
    uri = f"{V2010}/Accounts/{plan.sid}"
    return {
        "auth_token": plan.auth_token,
        "date_created": rfc2822(plan.date_created),
        "date_updated": rfc2822(plan.date_updated),
        "friendly_name": plan.friendly_name,
        "owner_account_sid": plan.owner_account_sid,
        "sid": plan.sid,
        "status": plan.status,
        "subresource_uris": {
            "addresses": f"{uri}/Addresses.json",
            "balance": f"{uri}/Balance.json",
            "calls": f"{uri}/Calls.json",
            "keys": f"{uri}/Keys.json",
            "messages": f"{uri}/Messages.json",
            "usage": f"{uri}/Usage.json",
        },
        "type": plan.type,
        "uri": f"{uri}.json",
    }


class AccountsApp:
    """Authenticates each request as one account and serves it (see the module docstring)."""

    def __init__(self, accounts: Sequence[Account]) -> None:
        if not accounts or not accounts[0].plan.is_parent:
            raise ValueError("the first account must be the parent")
        self.accounts = list(accounts)
        self.parent = self.accounts[0]
        self._by_sid = {a.sid: a for a in self.accounts}
        #: username -> (secret, account); inactive accounts cannot authenticate.
        self._logins: dict[str, tuple[bytes, Account]] = {}
        for account in self.accounts:
            if account.status != "active":
                continue
            self._logins[account.sid] = (account.auth_token.encode(), account)
            if account.api_key_sid and account.api_key_secret:
                self._logins[account.api_key_sid] = (account.api_key_secret.encode(), account)

    def authenticate(self, headers: Mapping[str, str]) -> Account | None:
        """The account whose credentials the request carries, or None.

        Usernames (SIDs) are not secret, so they are looked up; the secret is compared in
        constant time.
        """
        credentials = basic_credentials(headers)
        if credentials is None:
            return None
        username, password = credentials
        login = self._logins.get(username)
        if login is None:
            return None
        secret, account = login
        return account if hmac.compare_digest(password.encode(), secret) else None

    def visible(self, caller: Account) -> list[Account]:
        """The accounts ``caller`` may list: all of them for the parent, else itself."""
        if caller.plan.is_parent:
            return sorted(self.accounts, key=lambda a: a.sid)
        return [caller]

    def handle(self, req: Request) -> Response:
        """Serve one request (never raises for API-level errors)."""
        account = self.authenticate(req.headers)
        if account is None:
            return error_response(authenticate(), "unauthorized")
        if not req.path.startswith(V2010 + "/"):
            return account.app.dispatch(req)
        route = "v2010_not_found"
        try:
            parts = req.path.rstrip("/").split("/")  # "", "2010-04-01", ...
            if parts[2:] == ["Accounts.json"]:
                route = "accounts"
                if req.method != "GET":
                    raise method_not_allowed(req.method)
                return self._list(req, account)
            if len(parts) == 4 and parts[2] == "Accounts" and parts[3].endswith(".json"):
                route = "account"
                if req.method != "GET":
                    raise method_not_allowed(req.method)
                return self._fetch(parts[3][: -len(".json")], account)
            raise TwilioError(404, 20404, f"The requested resource {req.path} was not found")
        except TwilioError as err:
            return error_response(err, route)

    def _fetch(self, sid: str, caller: Account) -> Response:
        target = self._by_sid.get(sid)
        if target is None or target not in self.visible(caller):
            raise authenticate()
        return json_response(200, render_account(target.plan), "account")

    def _list(self, req: Request, caller: Account) -> Response:
        query = req.query
        friendly = query.get("FriendlyName") or None
        status = query.get("Status") or None
        if status is not None and status not in ACCOUNT_STATUSES:
            raise bad_request(20001, f"Invalid Status: {status}")
        rows = [
            a
            for a in self.visible(caller)
            if (status is None or a.status == status)
            and (friendly is None or a.plan.friendly_name == friendly)
        ]
        sids = [a.sid for a in rows]
        scope = f"accounts/{caller.sid}"
        secret = caller.store.token_secret
        page = parse_page_request(query, V2010_MAX_PAGE_SIZE, "lenient", scope, secret)
        start, end = window(sids, None, page)
        chunk = rows[start:end]
        filters = "".join(
            f"{name}={quote(value, safe='')}&"
            for name, value in (("FriendlyName", friendly), ("Status", status))
            if value is not None
        )
        size = page.page_size
        prefix = f"{V2010}/Accounts.json?{filters}PageSize={size}&Page="
        next_uri = previous_uri = None
        if end < len(sids) and chunk:
            token = encode_token(True, chunk[-1].sid, scope, secret)
            next_uri = f"{prefix}{page.page + 1}&PageToken={token}"
        if start > 0 and chunk:
            token = encode_token(False, chunk[0].sid, scope, secret)
            previous_uri = f"{prefix}{max(0, page.page - 1)}&PageToken={token}"
        first = page.page * size
        body = {
            "accounts": [render_account(a.plan) for a in chunk],
            "end": first + max(len(chunk) - 1, 0),
            "first_page_uri": f"{prefix}0",
            "next_page_uri": next_uri,
            "page": page.page,
            "page_size": size,
            "previous_page_uri": previous_uri,
            "start": first,
            "uri": f"{prefix}{page.page}" + (f"&PageToken={page.token}" if page.token else ""),
        }
        return json_response(200, body, "accounts")
