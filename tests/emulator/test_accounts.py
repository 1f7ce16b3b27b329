"""Several accounts: a parent and its subaccounts, each with its own credentials and data, and
Twilio's v2010 ``GET /2010-04-01/Accounts.json``, over the real HTTP server on loopback.

Expected values come from the emulator's own account plans, stores and truth helpers."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio_emulator import (
    DEMO_ACCOUNT_SID,
    DEMO_API_KEY_SECRET,
    DEMO_API_KEY_SID,
    DEMO_AUTH_TOKEN,
    DataSpec,
    Emulator,
    EmulatorConfig,
    cli,
    run_emulator,
)
from twilio_emulator.accounts import Account, plan_accounts
from twilio_emulator.sids import is_sid

from .helpers import Starter, walk

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
                _assert_401(_get(multi, "/2010-04-01/Accounts.json", auth))
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


def test_a_suspended_subaccount_is_listed_but_its_credentials_are_refused(
    multi: Emulator,
) -> None:
    suspended = [a for a in multi.accounts if a.status == "suspended"]
    assert len(suspended) == 1
    for login in _logins(suspended[0]):
        _assert_401(_get(multi, "/v1/Services", login))
        _assert_401(_get(multi, "/2010-04-01/Accounts.json", login))
    parent = multi.accounts[0]
    body = _get(
        multi, "/2010-04-01/Accounts.json?Status=suspended", (parent.sid, parent.auth_token)
    )
    assert [a["sid"] for a in body.json()["accounts"]] == [suspended[0].sid]


# ----------------------------------------------------------------- GET /2010-04-01/Accounts.json


def _expected_record(emu: Emulator, account: Account) -> dict[str, Any]:
    plan = account.plan
    return {
        "sid": plan.sid,
        "auth_token": plan.auth_token,
        "owner_account_sid": emu.account_sid,
        "friendly_name": plan.friendly_name,
        "status": plan.status,
        "type": plan.type,
        "uri": f"/2010-04-01/Accounts/{plan.sid}.json",
    }


def _check_record(emu: Emulator, record: dict[str, Any]) -> None:
    account = emu.account(record["sid"])
    expected = _expected_record(emu, account)
    assert {k: record[k] for k in expected} == expected
    assert record["type"] in ("Full", "Trial")
    for field, ts in [
        ("date_created", account.plan.date_created),
        ("date_updated", account.plan.date_updated),
    ]:
        assert record[field].endswith(" +0000")
        assert parsedate_to_datetime(record[field]).timestamp() == ts
    assert record["subresource_uris"] and all(
        uri.startswith(f"/2010-04-01/Accounts/{account.sid}/") and uri.endswith(".json")
        for uri in record["subresource_uris"].values()
    )


def test_the_parent_lists_itself_and_every_subaccount(multi: Emulator) -> None:
    parent = multi.accounts[0]
    for login in _logins(parent):
        response = _get(multi, "/2010-04-01/Accounts.json", login)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == PAGE_KEYS
        assert sorted(a["sid"] for a in body["accounts"]) == sorted(a.sid for a in multi.accounts)
        for record in body["accounts"]:
            _check_record(multi, record)
        assert body["page"] == 0 and body["page_size"] == 50 and body["start"] == 0
        assert body["end"] == len(multi.accounts) - 1
        assert body["next_page_uri"] is None and body["previous_page_uri"] is None
        assert body["first_page_uri"] == "/2010-04-01/Accounts.json?PageSize=50&Page=0"
        assert body["uri"] == body["first_page_uri"]


def test_a_subaccount_lists_only_itself(multi: Emulator) -> None:
    for account in _active(multi)[1:]:
        for login in _logins(account):
            body = _get(multi, "/2010-04-01/Accounts.json", login).json()
            assert [a["sid"] for a in body["accounts"]] == [account.sid]
            _check_record(multi, body["accounts"][0])
            assert body["next_page_uri"] is None


def _walk_accounts(emu: Emulator, auth: tuple[str, str], uri: str) -> tuple[list[str], list[Any]]:
    """Follow ``next_page_uri`` (relative, as v2010 serves it) to the end."""
    sids: list[str] = []
    pages: list[Any] = []
    next_uri: str | None = uri
    while next_uri is not None:
        assert next_uri.startswith("/2010-04-01/Accounts.json?"), next_uri
        response = _get(emu, next_uri, auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == PAGE_KEYS
        if pages:  # a followed page's own uri is the link that led there
            assert body["uri"] == next_uri
        sids.extend(a["sid"] for a in body["accounts"])
        pages.append(body)
        next_uri = body["next_page_uri"]
        assert len(pages) < 100, "paging does not terminate"
    return sids, pages


def test_paging_through_next_page_uri_gives_every_account_once(multi: Emulator) -> None:
    parent = multi.accounts[0]
    auth = (parent.sid, parent.auth_token)
    sids, pages = _walk_accounts(multi, auth, "/2010-04-01/Accounts.json?PageSize=2")
    assert sorted(sids) == sorted(a.sid for a in multi.accounts)
    assert len(sids) == len(set(sids))
    assert len(pages) == 3 and [len(p["accounts"]) for p in pages] == [2, 2, 1]
    assert [p["page"] for p in pages] == [0, 1, 2]
    assert [(p["start"], p["end"]) for p in pages] == [(0, 1), (2, 3), (4, 4)]
    assert all(p["page_size"] == 2 for p in pages)
    assert pages[0]["previous_page_uri"] is None
    assert all(p["first_page_uri"] == "/2010-04-01/Accounts.json?PageSize=2&Page=0" for p in pages)
    assert all(parse_qs(urlsplit(p["next_page_uri"]).query)["PageToken"] for p in pages[:-1])
    # previous_page_uri leads back to the page before.
    back = _get(multi, pages[2]["previous_page_uri"], auth).json()
    assert [a["sid"] for a in back["accounts"]] == [a["sid"] for a in pages[1]["accounts"]]


def test_filters_are_applied_and_kept_in_the_uris(multi: Emulator) -> None:
    parent = multi.accounts[0]
    auth = (parent.sid, parent.auth_token)
    active = sorted(a.sid for a in _active(multi))
    sids, pages = _walk_accounts(multi, auth, "/2010-04-01/Accounts.json?Status=active&PageSize=3")
    assert sorted(sids) == active
    assert all("Status=active&" in p["first_page_uri"] for p in pages)
    name = multi.accounts[2].plan.friendly_name
    body = _get(multi, f"/2010-04-01/Accounts.json?FriendlyName={name}", auth).json()
    assert [a["sid"] for a in body["accounts"]] == [multi.accounts[2].sid]
    assert body["first_page_uri"].startswith("/2010-04-01/Accounts.json?FriendlyName=Emulator%20")
    bad = _get(multi, "/2010-04-01/Accounts.json?Status=asleep", auth)
    assert bad.status_code == 400 and bad.json()["code"] == 20001


def test_page_size_up_to_1000(multi: Emulator) -> None:
    parent = multi.accounts[0]
    auth = (parent.sid, parent.auth_token)
    body = _get(multi, "/2010-04-01/Accounts.json?PageSize=1000", auth).json()
    assert body["page_size"] == 1000 and len(body["accounts"]) == len(multi.accounts)
    for size in ["1001", "0", "x"]:
        response = _get(multi, f"/2010-04-01/Accounts.json?PageSize={size}", auth)
        assert response.status_code == 400 and response.json()["code"] == 20007


def test_fetching_one_account(multi: Emulator) -> None:
    parent, sub, sibling = multi.accounts[0], multi.accounts[1], multi.accounts[2]
    for target in multi.accounts:
        response = _get(
            multi, f"/2010-04-01/Accounts/{target.sid}.json", (parent.sid, parent.auth_token)
        )
        assert response.status_code == 200
        _check_record(multi, response.json())
    own = _get(multi, f"/2010-04-01/Accounts/{sub.sid}.json", (sub.sid, sub.auth_token))
    assert own.status_code == 200 and own.json()["sid"] == sub.sid
    for other in [parent.sid, sibling.sid, "AC" + "0" * 32]:
        _assert_401(_get(multi, f"/2010-04-01/Accounts/{other}.json", (sub.sid, sub.auth_token)))


def test_twilio_library_lists_the_accounts(multi: Emulator) -> None:
    twilio_rest = pytest.importorskip("twilio.rest")
    client = twilio_rest.Client(multi.account_sid, multi.auth_token)
    client.api.base_url = multi.base_url
    listed = client.api.v2010.accounts.list(page_size=2)
    assert sorted(a.sid for a in listed) == sorted(a.sid for a in multi.accounts)
    assert {a.owner_account_sid for a in listed} == {multi.account_sid}


# ----------------------------------------------------------------- the default: one account


def test_by_default_there_is_one_account_and_it_lists_itself(emu: Emulator) -> None:
    assert plan_accounts(EmulatorConfig()) == [a.plan for a in Emulator(EmulatorConfig()).accounts]
    assert len(emu.accounts) == 1 and emu.accounts[0].store is emu.store
    assert emu.account().sid == emu.account_sid
    body = _get(emu, "/2010-04-01/Accounts.json", (emu.account_sid, emu.auth_token)).json()
    assert [a["sid"] for a in body["accounts"]] == [emu.account_sid]
    assert body["accounts"][0]["owner_account_sid"] == emu.account_sid
    _assert_401(_get(emu, "/2010-04-01/Accounts.json", (emu.account_sid, "wrong")))


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


# ----------------------------------------------------------------- command line


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_account_flags_map_to_the_config_and_are_documented() -> None:
    config = cli.config_from_args(
        _parse("--subaccounts=3", "--subaccount-api-keys", "--subaccount-statuses=active,closed")
    )
    assert config.subaccounts == 3 and config.subaccount_api_keys
    assert config.subaccount_statuses == ("active", "closed")
    default = cli.config_from_args(_parse())
    assert (default.subaccounts, default.subaccount_api_keys) == (0, False)
    assert default.subaccount_statuses == ()
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    text = parser.format_help()
    for flag in ["--subaccounts", "--subaccount-api-keys", "--subaccount-statuses"]:
        assert flag in text
    with pytest.raises(SystemExit):
        _parse("--subaccounts=-1")


def test_bad_account_flags_fail_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_parse("--port=0", "--subaccounts=1", "--subaccount-statuses=asleep")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "asleep" in err and err.count("\n") == 1


def test_banner_lists_every_subaccount(start: Starter) -> None:
    one = start(EmulatorConfig(data=DataSpec(seed=1, services=1, users=1), port=0))
    assert cli._account_lines(one) == []  # one account: the banner is as it always was
    config = EmulatorConfig(
        data=DataSpec(seed=1, services=1, users=1),
        subaccounts=2,
        subaccount_api_keys=True,
        subaccount_statuses=("suspended",),
    )
    lines = cli._account_lines(start(config))
    emu = start(config)
    assert len(lines) == 3 and "/2010-04-01/Accounts.json" in lines[-1]
    for line, account in zip(lines, emu.accounts[1:], strict=False):
        assert f"account SID {account.sid}, auth token {account.auth_token}" in line
        assert f"API key SID {account.api_key_sid}, secret {account.api_key_secret}" in line
        assert account.status in line
    # A token given on the command line is not the demo's: the derived secrets are not shown.
    secret = start(replace(config, auth_token="t0ps3cret"))
    shown = "\n".join(cli._account_lines(secret))
    for account in secret.accounts[1:]:
        assert account.sid in shown
        assert account.auth_token not in shown and str(account.api_key_secret) not in shown


def test_the_command_serves_the_subaccounts_it_prints() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "twilio_emulator", "--port=0", "--users=2", "--subaccounts=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline()]
        while not lines[-1].startswith("Data:"):
            lines.append(process.stdout.readline())
            assert lines[-1], "".join(lines)
        match = re.search(r"(http://127\.0\.0\.1:\d+)", lines[0])
        assert match, lines[0]
        base = match.group(1)
        subs = [
            re.search(r"account SID (AC[0-9a-f]{32}), auth token ([0-9a-f]{32})", line)
            for line in lines
            if line.startswith("Subaccount ")
        ]
        assert len(subs) == 2 and all(subs)
        listed = requests.get(
            f"{base}/2010-04-01/Accounts.json", auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN), timeout=10
        ).json()["accounts"]
        tokens = {a["sid"]: a["auth_token"] for a in listed}
        for sub in subs:
            assert sub is not None
            sid, token = sub.groups()
            assert tokens[sid] == token
            services = requests.get(f"{base}/v1/Services", auth=(sid, token), timeout=10)
            assert {s["account_sid"] for s in services.json()["services"]} == {sid}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
