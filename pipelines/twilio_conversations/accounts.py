"""Several Twilio accounts in one run: which accounts, with which credentials, origin and filters.

Two ways to name them under `[sources.twilio_conversations]` (usually in `.dlt/secrets.toml`,
since they hold secrets):

* a list, `[[sources.twilio_conversations.accounts]]`: each table one credential set
  (`account_sid` + `auth_token`, or `api_key_sid` + `api_key_secret`), an optional `name`
  (default: the Account SID in lower case), an optional `base_url` (a region; default the
  section's `base_url`) and optional `service_sids` / `user_sids` of that account;
  as an environment variable, `SOURCES__TWILIO_CONVERSATIONS__ACCOUNTS='[{"name": ..., ...}]'`;
* discovery, `subaccounts = true`: the section's own credentials (the parent account's) list the
  accounts at `GET /2010-04-01/Accounts.json` on `accounts_base_url` (default
  `https://api.twilio.com`), following the relative `next_page_uri`; every active account is
  loaded with its `sid` and `auth_token`, named by its SID; the others are reported as skipped.

Neither set: one account, as before (`plan_accounts` returns None). Each account runs as a dlt
pipeline of its own (`pipeline_name`, `dataset_name`), so keys, fingerprints, deletions, state,
views and history never mix across accounts. The parent's credentials go only to the accounts
origin (through `TwilioClient`, whose origin pinning every page URL passes) and, for the parent's
own data, to the Conversations origin; each account's credentials only to its own `base_url`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dlt
from dlt.common.configuration.resolve import resolve_configuration

from .client import RequestStats, RetryPolicy, TwilioClient, validate_base_url
from .config_check import check_settings
from .credentials import TwilioCredentials
from .discovery import validate_service_sids, validate_user_refs
from .errors import ConfigurationError
from .settings import (
    ACCOUNT_SID_PATTERN,
    API_KEY_SID_PATTERN,
    DEFAULT_BASE_URL,
    DEFAULT_REQUEST_MAX_ATTEMPTS,
    DEFAULT_REQUEST_MAX_RETRY_DELAY,
    DEFAULT_REQUEST_TIMEOUT,
)

SECTION = "sources.twilio_conversations"
ACCOUNTS_KEY = "accounts"
SUBACCOUNTS_KEY = "subaccounts"
ACCOUNTS_BASE_URL_KEY = "accounts_base_url"
#: Keys of `[sources.twilio_conversations]` this module reads (config_check knows them).
SETTING_KEYS = (ACCOUNTS_KEY, SUBACCOUNTS_KEY, ACCOUNTS_BASE_URL_KEY)

DEFAULT_ACCOUNTS_BASE_URL = "https://api.twilio.com"
ACCOUNTS_PATH = "/2010-04-01/Accounts.json"
ACCOUNTS_LIST_KEY = "accounts"
ACCOUNTS_PAGE_SIZE = 50  # v2010's default; at most 1000

CREDENTIAL_FIELDS = ("account_sid", "auth_token", "api_key_sid", "api_key_secret")
ACCOUNT_FIELDS = ("name", *CREDENTIAL_FIELDS, "base_url", "service_sids", "user_sids")
#: An account's name becomes part of a pipeline and a dataset name: a plain identifier.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

PIPELINE_PREFIX = "twilio_conversations__"


@dataclass(frozen=True)
class Account:
    """One account of a multi-account run."""

    name: str
    credentials: TwilioCredentials = field(repr=False)
    base_url: str
    service_sids: tuple[str, ...] = ()
    user_sids: tuple[str, ...] = ()
    account_sid: str | None = None  # shown in the summary; None for a key without one

    @property
    def pipeline_name(self) -> str:
        return pipeline_name(self.name)

    def dataset_name(self, prefix: str) -> str:
        return f"{prefix}_{self.name}"

    def source_kwargs(self) -> dict[str, Any]:
        """The source arguments that make it this account's: given explicitly, so nothing of
        the section's single-account settings (credentials, filters) is injected instead."""
        return {
            "credentials": self.credentials,
            "base_url": self.base_url,
            "service_sids": list(self.service_sids),
            "user_sids": list(self.user_sids),
        }


@dataclass(frozen=True)
class SkippedAccount:
    """An account discovery listed but does not load (not active)."""

    sid: str
    friendly_name: str
    status: str


@dataclass(frozen=True)
class AccountsPlan:
    accounts: list[Account]
    skipped: list[SkippedAccount] = field(default_factory=list)
    discovered: bool = False

    def names(self) -> list[str]:
        return [a.name for a in self.accounts]

    def select(self, names: Sequence[str] | None) -> AccountsPlan:
        """Only the accounts named (for one orchestrator task per account); all without names."""
        if not names:
            return self
        by_name = {a.name: a for a in self.accounts}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(
                f"--account {unknown[0]!r}{hint}: no such account; configured: "
                f"{', '.join(by_name) or 'none'}"
            )
        return AccountsPlan([by_name[n] for n in dict.fromkeys(names)], [], self.discovered)

    def narrowed(self, names: Sequence[str] | None, flags: Mapping[str, Any]) -> AccountsPlan:
        """The accounts `--account` names, the `--service-sid` / `--user-sid` flags in `flags`
        replacing the one selected account's filters (they apply to one account only)."""
        plan = self.select(names)
        filters = [key for key in ("service_sids", "user_sids") if key in flags]
        if not filters:
            return plan
        if len(plan.accounts) > 1:
            raise ConfigurationError(
                f"--{filters[0].replace('_', '-').removesuffix('s')} applies to one account: add "
                "--account NAME, or set the filter per account in the accounts list"
            )
        account = plan.accounts[0]
        account = replace(
            account,
            service_sids=tuple(_listed(flags.get("service_sids", account.service_sids))),
            user_sids=tuple(_listed(flags.get("user_sids", account.user_sids))),
        )
        return replace(plan, accounts=[account])


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def pipeline_name(name: str) -> str:
    return PIPELINE_PREFIX + name


def plan_accounts(base_url: str | None = None) -> AccountsPlan | None:
    """The accounts configured under `[sources.twilio_conversations]`, or None for the
    single-account run (neither `accounts` nor `subaccounts` set).

    Args:
        base_url: The Conversations origin for accounts without their own (a CLI flag); the
            section's `base_url` otherwise.

    Raises:
        ConfigurationError: One line for a malformed list, an unknown key, a bad name, SID or
            URL, or both ways configured at once, before any request.
        AuthenticationError, TwilioAPIError, ...: Discovery's request failed.
    """
    from . import SETTING_KEYS as KNOWN
    from . import WIDENING_KEYS

    # A mistyped `accounts` or filter stops the run here, once, before any account runs.
    check_settings(KNOWN, WIDENING_KEYS, warn=False)
    raw: Any = dlt.config.get(f"{SECTION}.{ACCOUNTS_KEY}")
    discover = _flag(dlt.config.get(f"{SECTION}.{SUBACCOUNTS_KEY}"))
    if raw is None and not discover:
        return None
    for key in ("service_sids", "user_sids"):
        if dlt.config.get(f"{SECTION}.{key}"):
            raise ConfigurationError(
                f"{key} under [{SECTION}] is one account's filter: with several accounts set it "
                f"per account ({ACCOUNTS_KEY}[].{key})"
            )
    default_base = validate_base_url(
        base_url or dlt.config.get(f"{SECTION}.base_url", str) or DEFAULT_BASE_URL
    )
    if raw is not None and discover:
        raise ConfigurationError(
            f"set either {ACCOUNTS_KEY} (a list of accounts) or {SUBACCOUNTS_KEY} = true "
            f"(discovery) under [{SECTION}], not both"
        )
    if discover:
        return discover_accounts(default_base)
    return AccountsPlan(parse_accounts(raw, default_base))


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ConfigurationError(f"{SUBACCOUNTS_KEY} must be true or false, got {value!r}")


def parse_accounts(raw: Any, default_base_url: str) -> list[Account]:
    """The configured list of accounts, checked before any request."""
    if isinstance(raw, str):  # an environment variable: JSON
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigurationError(
                f"{ACCOUNTS_KEY} is not a JSON list of tables (SOURCES__TWILIO_CONVERSATIONS__"
                'ACCOUNTS=\'[{"name": "acme", "account_sid": "AC…", "auth_token": "…"}]\')'
            ) from None
    if isinstance(raw, Mapping) or not isinstance(raw, Sequence) or not raw:
        raise ConfigurationError(
            f"{ACCOUNTS_KEY} must be a non-empty list of tables "
            f"([[{SECTION}.{ACCOUNTS_KEY}]] in .dlt/secrets.toml)"
        )
    accounts: list[Account] = []
    for index, entry in enumerate(raw):
        accounts.append(_parse_account(index, entry, default_base_url))
    seen: dict[str, int] = {}
    for index, account in enumerate(accounts):
        if account.name in seen:
            raise ConfigurationError(
                f"{ACCOUNTS_KEY}[{index}]: name {account.name!r} is also the name of "
                f"{ACCOUNTS_KEY}[{seen[account.name]}]; each account needs its own"
            )
        seen[account.name] = index
    return accounts


def _parse_account(index: int, entry: Any, default_base_url: str) -> Account:
    where = f"{ACCOUNTS_KEY}[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} must be a table of account settings")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name!r})"
    for key in entry:
        if key not in ACCOUNT_FIELDS:
            close = difflib.get_close_matches(str(key), ACCOUNT_FIELDS, n=1, cutoff=0.6)
            valid = ", ".join(ACCOUNT_FIELDS)
            hint = f"; did you mean `{close[0]}`?" if close else f"; valid: {valid}"
            raise ConfigurationError(f"{where}: unknown setting `{_shown(str(key))}`{hint}")
    values = {k: _text(entry.get(k), f"{where}.{k}") for k in CREDENTIAL_FIELDS}
    credentials = TwilioCredentials()
    for key, value in values.items():
        setattr(credentials, key, value)
    _check_credentials(credentials, where)
    if name is None:
        if not credentials.account_sid:
            raise ConfigurationError(f"{where}: an account with an API key only needs a `name`")
        name = credentials.account_sid.lower()
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigurationError(
            f"{where}: name {name!r} must be lower-case letters, digits and _, starting with a "
            "letter, at most 48 characters (it names the account's pipeline and dataset)"
        )
    base = entry.get("base_url")
    try:
        base_url = validate_base_url(base) if base else default_base_url
        service_sids = validate_service_sids(entry.get("service_sids"))
        user_sids = validate_user_refs(entry.get("user_sids"))
    except ConfigurationError as exc:
        raise ConfigurationError(f"account {name}: {exc}") from None
    return Account(
        name, credentials, base_url, tuple(service_sids), tuple(user_sids), credentials.account_sid
    )


def _text(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string")
    return value.strip()


def _check_credentials(credentials: TwilioCredentials, where: str) -> None:
    key, secret = credentials.api_key_sid, credentials.api_key_secret
    if key or secret:
        if not (key and secret):
            raise ConfigurationError(f"{where}: api_key_sid and api_key_secret go together")
        if not API_KEY_SID_PATTERN.match(key):
            raise ConfigurationError(
                f"{where}: api_key_sid {key!r} is not an API Key SID (SK + 32 hex digits)"
            )
    elif not (credentials.account_sid and credentials.auth_token):
        raise ConfigurationError(
            f"{where}: credentials missing: set account_sid and auth_token, or api_key_sid and "
            "api_key_secret"
        )
    sid = credentials.account_sid
    if sid and not ACCOUNT_SID_PATTERN.match(sid):
        raise ConfigurationError(
            f"{where}: account_sid {sid!r} is not an Account SID (AC + 32 hex digits)"
        )


def parent_credentials() -> TwilioCredentials:
    """The section's own credentials (TWILIO_* variables included): the parent's."""
    credentials = resolve_configuration(
        TwilioCredentials(), sections=("sources", "twilio_conversations", "credentials")
    )
    credentials.basic_auth_pair()  # one line now when they are missing or malformed
    return credentials


def discover_accounts(
    base_url: str,
    credentials: TwilioCredentials | None = None,
    accounts_base_url: str | None = None,
    page_size: int = ACCOUNTS_PAGE_SIZE,
    stats: RequestStats | None = None,
) -> AccountsPlan:
    """Every account the parent's credentials list at `GET /2010-04-01/Accounts.json`; active
    ones to load (named by their SID, on `base_url`), the others skipped."""
    credentials = credentials or parent_credentials()
    origin = accounts_base_url or dlt.config.get(f"{SECTION}.{ACCOUNTS_BASE_URL_KEY}", str)
    client = TwilioClient(
        origin or DEFAULT_ACCOUNTS_BASE_URL,
        credentials.basic_auth_pair(),
        RetryPolicy(
            max_attempts=_setting("request_max_attempts", int, DEFAULT_REQUEST_MAX_ATTEMPTS),
            max_delay=_setting("request_max_retry_delay", float, DEFAULT_REQUEST_MAX_RETRY_DELAY),
            timeout=_setting("request_timeout", float, DEFAULT_REQUEST_TIMEOUT),
        ),
        stats,
        max_in_flight=1,
    )
    accounts: list[Account] = []
    skipped: list[SkippedAccount] = []
    for page in client.iter_v2010_pages(ACCOUNTS_PATH, ACCOUNTS_LIST_KEY, {"PageSize": page_size}):
        for record in page:
            sid, token = record.get("sid"), record.get("auth_token")
            status = str(record.get("status"))
            if not isinstance(sid, str) or not ACCOUNT_SID_PATTERN.match(sid):
                raise ConfigurationError(
                    f"{ACCOUNTS_PATH} listed an account without a valid sid: {str(sid)[:40]!r}"
                )
            if status != "active" or not isinstance(token, str) or not token:
                skipped.append(SkippedAccount(sid, str(record.get("friendly_name", "")), status))
                continue
            account_credentials = TwilioCredentials()
            account_credentials.account_sid = sid
            account_credentials.auth_token = token
            accounts.append(Account(sid.lower(), account_credentials, base_url, (), (), sid))
    return AccountsPlan(accounts, skipped, discovered=True)


def _setting(key: str, kind: type, default: Any) -> Any:
    value: Any = dlt.config.get(f"{SECTION}.{key}", kind)
    return default if value is None else value


def _shown(text: str) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 80 else shown[:79] + "…"
