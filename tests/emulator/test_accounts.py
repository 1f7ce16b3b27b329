"""Several accounts: a parent and its subaccounts, each with its own credentials and data, over
the real HTTP server on loopback.

Expected values come from the emulator's own account plans, stores and truth helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from twilio_emulator import (
    DEMO_API_KEY_SECRET,
    DEMO_API_KEY_SID,
    DataSpec,
    Emulator,
    EmulatorConfig,
    run_emulator,
)
from twilio_emulator.accounts import Account, plan_accounts
from twilio_emulator.sids import is_sid

from .helpers import walk

DATA = DataSpec(seed=5, services=2, users=7, max_conversations=60)
#: A parent with an API key and four subaccounts with keys; the third is suspended.
MULTI = EmulatorConfig(
    data=DATA,
    api_key_sid=DEMO_API_KEY_SID,
    api_key_secret=DEMO_API_KEY_SECRET,
    subaccounts=4,
    subaccount_api_keys=True,
    subaccount_statuses=("active", "active", "suspended"),
)
PAGE_KEYS = {
    "accounts",
    "first_page_uri",
    "end",
    "previous_page_uri",
    "uri",
    "page_size",
    "start",
    "next_page_uri",
    "page",
}
UNAUTHORIZED = {
    "code": 20003,
    "message": "Authenticate",
    "more_info": "https://www.twilio.com/docs/errors/20003",
    "status": 401,
}


@pytest.fixture(scope="module")
def multi() -> Iterator[Emulator]:
    with run_emulator(MULTI) as running:
        yield running


def _active(emu: Emulator) -> list[Account]:
    return [a for a in emu.accounts if a.status == "active"]


def _logins(account: Account) -> list[tuple[str, str]]:
    """Every credential pair of an account: SID + Auth Token, and its API key when it has one."""
    pairs = [(account.sid, account.auth_token)]
    if account.api_key_sid and account.api_key_secret:
        pairs.append((account.api_key_sid, account.api_key_secret))
    return pairs


def _get(emu: Emulator, path: str, auth: tuple[str, str]) -> requests.Response:
    return requests.get(f"{emu.base_url}{path}", auth=auth, timeout=10)


def _assert_401(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert response.json() == UNAUTHORIZED


# ----------------------------------------------------------------- accounts and their data


def test_every_account_has_its_own_deterministic_identity(multi: Emulator) -> None:
    accounts = multi.accounts
    assert len(accounts) == 1 + MULTI.subaccounts
    assert accounts[0].sid == MULTI.account_sid and accounts[0].auth_token == MULTI.auth_token
    sids = [a.sid for a in accounts]
    tokens = [a.auth_token for a in accounts]
    keys = [a.api_key_sid for a in accounts]
    assert all(is_sid(sid, "AC") for sid in sids)
    assert all(key is not None and is_sid(key, "SK") for key in keys)
    assert len(set(sids)) == len(set(tokens)) == len(set(keys)) == len(accounts)
    assert len({a.plan.data.seed for a in accounts}) == len(accounts)
    assert all(a.plan.owner_account_sid == MULTI.account_sid for a in accounts)
    assert [a.status for a in accounts] == ["active", "active", "active", "suspended", "active"]
    # Reproducible: the same config plans the same accounts and generates the same data.
    assert plan_accounts(MULTI) == [a.plan for a in accounts]
    again = Emulator(MULTI)
    for mine, theirs in zip(accounts, again.accounts, strict=True):
        assert mine.store.service_sids == theirs.store.service_sids
        assert mine.store.membership_count() == theirs.store.membership_count()


def _data_sids(account: Account) -> dict[str, set[str]]:
    store = account.store
    with store.lock:
        services = set(store.service_sids)
        users = {u for s in store.services.values() for u in s.users}
        conversations = {c for s in store.services.values() for c in s.conversations}
    return {"services": services, "users": users, "conversations": conversations}


def test_no_sid_is_shared_between_accounts(multi: Emulator) -> None:
    seen: dict[str, str] = {}
    for account in multi.accounts:
        sids = _data_sids(account)
        assert sids["services"] and sids["users"] and sids["conversations"]
        assert account.store.account_sid == account.sid
        for kind, values in sids.items():
            for sid in values:
                assert sid not in seen, f"{kind} {sid} of {account.sid} also in {seen[sid]}"
                seen[sid] = account.sid


def test_each_accounts_credentials_see_exactly_its_own_data(multi: Emulator) -> None:
    for account in _active(multi):
        for login in _logins(account):
            with requests.Session() as http:
                http.auth = login
                services, _ = walk(http, f"{multi.base_url}/v1/Services?PageSize=1", "services")
                assert services == multi.services(account.sid)
                for service in services:
                    users, _ = walk(
                        http,
                        f"{multi.base_url}/v1/Services/{service['sid']}/Users?PageSize=3",
                        "users",
                    )
                    assert users == multi.users(service["sid"], account.sid)
                    user = users[-1]["sid"]
                    rows, _ = walk(
                        http,
                        f"{multi.base_url}/v1/Services/{service['sid']}/Users/{user}"
                        "/Conversations?PageSize=20",
                        "conversations",
                    )
                    assert rows == multi.user_conversations(service["sid"], user, account.sid)
                twin, _ = walk(http, f"{multi.base_url}/v1/Users", "users")
                assert [u["sid"] for u in twin] == list(
                    account.store.services[account.store.default_service_sid].user_sids
                )
            rendered = [*services, *users, *rows, *twin]
            assert {row["account_sid"] for row in rendered} == {account.sid}


def test_credentials_of_one_account_never_open_another(multi: Emulator) -> None:
    accounts = multi.accounts
    for mine in accounts:
        for other in accounts:
            if other is mine:
                continue
            mixed = [(mine.sid, other.auth_token)]
            if mine.api_key_sid and other.api_key_secret:
                mixed += [
                    (mine.api_key_sid, other.api_key_secret),
                    (mine.api_key_sid, other.auth_token),
                ]
            for auth in mixed:
                _assert_401(_get(multi, "/v1/Services", auth))
    # Valid credentials of one account do not reach another account's resources either.
    parent, sub = accounts[0], accounts[1]
    for mine, other in [(parent, sub), (sub, parent)]:
        service = other.store.default_service_sid
        user = other.store.services[service].user_sids[0]
        for path in [f"/v1/Services/{service}", f"/v1/Services/{service}/Users/{user}"]:
            response = _get(multi, path, (mine.sid, mine.auth_token))
            assert response.status_code == 404 and response.json()["code"] == 20404
        # A page token of the other account's list does not verify in this one.
        first = _get(multi, "/v1/Users?PageSize=1", (other.sid, other.auth_token)).json()
        response = requests.get(first["meta"]["next_page_url"], auth=(mine.sid, mine.auth_token))
        assert response.status_code == 400 and response.json()["code"] == 21481


def test_a_suspended_subaccounts_credentials_are_refused(
    multi: Emulator,
) -> None:
    suspended = [a for a in multi.accounts if a.status == "suspended"]
    assert len(suspended) == 1
    for login in _logins(suspended[0]):
        _assert_401(_get(multi, "/v1/Services", login))


# ----------------------------------------------------------------- the default: one account


def test_by_default_there_is_one_account(emu: Emulator) -> None:
    assert plan_accounts(EmulatorConfig()) == [a.plan for a in Emulator(EmulatorConfig()).accounts]
    assert len(emu.accounts) == 1 and emu.accounts[0].store is emu.store
    assert emu.account().sid == emu.account_sid
    assert emu.accounts[0].plan.owner_account_sid == emu.account_sid


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subaccounts": -1}, "subaccounts must be within 0..1000"),
        ({"subaccounts": 1001}, "subaccounts must be within 0..1000"),
        ({"subaccounts": 1, "subaccount_statuses": ("active", "closed")}, "has 2 entries"),
        ({"subaccounts": 1, "subaccount_statuses": ("asleep",)}, "must be one of"),
    ],
)
def test_bad_account_settings_fail_in_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        EmulatorConfig(**changes)
    assert "\n" not in str(caught.value)
