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
account's SID + Auth Token, or its API key SID + secret) as exactly one account and serves it the
Conversations v1 API of *that* account only, through the account's own :class:`App`: rendered
``account_sid`` fields are that account's, and no other account's data is reachable.
Simplification, on purpose: in Twilio a parent's credentials may also act on its subaccounts'
resources (in the classic 2010 API, with the subaccount's SID in the URL). The emulator's
Conversations URLs carry no account SID, so here each account's Conversations data opens only
with that account's own credentials; anything else is Twilio's 401 / 20003 "Authenticate".

A subaccount whose status is "suspended" or "closed" keeps its data, but its own credentials are
refused (401 / 20003; Twilio answers requests of inactive accounts with an error too, whose exact
code for Conversations it does not document). API keys act as their account. With no
subaccounts (the default) the parent is the only account, and every v1 request is served exactly
as by its :class:`App` alone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .app import App, Request, Response, basic_credentials, error_response
from .config import DataSpec, EmulatorConfig
from .errors import authenticate
from .sids import ACCOUNT, API_KEY
from .store import Store

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

    def handle(self, req: Request) -> Response:
        """Serve one request (never raises for API-level errors)."""
        account = self.authenticate(req.headers)
        if account is None:
            return error_response(authenticate(), "unauthorized")
        return account.app.dispatch(req)
