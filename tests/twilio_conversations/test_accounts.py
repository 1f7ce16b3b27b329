"""Several Twilio accounts in one run: each account its own pipeline and dataset, each mirroring
exactly its own emulator data; discovery through /2010-04-01/Accounts.json; one account's
failure named while the others load; credentials only to each account's own origins.

Real emulator (a parent and subaccounts, each with its own data) on loopback, real DuckDB, the
real configuration path (SOURCES__TWILIO_CONVERSATIONS__ACCOUNTS, .dlt/secrets.toml) and, for
the CLI, real processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest
from cli_process import cli, emulator_env
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    truth_users,
)
from recording_proxy import RecordingProxy
from twilio_conversations.accounts import (
    Account,
    AccountsPlan,
    discover_accounts,
    plan_accounts,
)
from twilio_conversations.cli import _explain
from twilio_conversations.client import RequestStats
from twilio_conversations.credentials import TwilioCredentials
from twilio_conversations.errors import ConfigurationError
from twilio_conversations.runner import AccountRun, run_account, run_accounts
from twilio_writes import TwilioWrites

ACCOUNTS_ENV = "SOURCES__TWILIO_CONVERSATIONS__ACCOUNTS"


@pytest.fixture
def emu(start_emulator: Any) -> Any:
    """A parent and three subaccounts (API keys too), the third suspended."""
    return start_emulator(
        seed=5,
        services=2,
        users=5,
        max_conversations=60,
        subaccounts=3,
        subaccount_api_keys=True,
        subaccount_statuses=("active", "active", "suspended"),
    )


@pytest.fixture
def proxies() -> Iterator[list[RecordingProxy]]:
    made: list[RecordingProxy] = []
    yield made
    for proxy in made:
        proxy.close()


def entry(account: Any, name: str | None = None, key: bool = False, **more: Any) -> dict[str, Any]:
    """One `accounts` table for an emulator account: its token, or (`key`) its API key."""
    if key:
        out = {"api_key_sid": account.api_key_sid, "api_key_secret": account.api_key_secret}
    else:
        out = {"account_sid": account.sid, "auth_token": account.auth_token}
    if name:
        out["name"] = name
    return {**out, **more}


def run_all(tmp: Path, plan: AccountsPlan, **kwargs: Any) -> dict[str, AccountRun]:
    results = run_accounts(
        plan,
        dlt.destinations.duckdb(str(tmp / "accounts.duckdb")),
        pipelines_dir=str(tmp / "pipelines"),
        **kwargs,
    )
    return {r.account.name: r for r in results}


def assert_account_mirror(
    emu: Any,
    result: AccountRun,
    sid: str,
    service_sids: list[str] | None = None,
    user_sids: list[str] | None = None,
    origin: str | None = None,
) -> int:
    """The account's dataset holds exactly its own emulator data (within the filters); with
    `origin`, read through that proxy, whose address the records' URLs carry."""
    assert result.error is None, result.error
    pipeline = result.pipeline
    assert pipeline is not None
    services = [
        s for s in emu.services(account_sid=sid) if not service_sids or s["sid"] in service_sids
    ]
    users = [
        u
        for u in truth_users(emu, [s["sid"] for s in services], account_sid=sid)
        if not user_sids or u["sid"] in user_sids
    ]
    keys = {(u["chat_service_sid"], u["sid"]) for u in users}
    rows = [
        r
        for r in emu.all_user_conversations(account_sid=sid)
        if (r["chat_service_sid"], r["user_sid"]) in keys
    ]
    assert rows and {r["account_sid"] for r in rows} == {sid}
    if origin:
        services, users, rows = (rebased(x, emu.base_url, origin) for x in (services, users, rows))
    if not service_sids:
        assert_services_mirror(pipeline, services)
    assert_users_mirror(pipeline, users)
    return assert_user_conversations_mirror(pipeline, rows)


def rebased(value: Any, old: str, new: str) -> Any:
    """`value` with every URL on `old` moved to `new`."""
    if isinstance(value, str):
        return new + value[len(old) :] if value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: rebased(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebased(v, old, new) for v in value]
    return value


def written(result: AccountRun) -> dict[str, int]:
    assert result.outcome is not None, result.error
    return result.outcome.rows_written


# -- configured accounts ---------------------------------------------------------------------


def test_each_account_mirrors_its_own_data_then_a_rerun_writes_nothing(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, sub1, sub2, _ = emu.accounts
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__BASE_URL", emu.base_url)
    monkeypatch.setenv(
        ACCOUNTS_ENV,
        json.dumps([entry(parent, "main"), entry(sub1, "acme", key=True), entry(sub2)]),
    )
    plan = plan_accounts()
    assert plan is not None
    assert plan.names() == ["main", "acme", sub2.sid.lower()]
    results = run_all(isolated_dlt, plan)
    counts = {
        name: assert_account_mirror(emu, results[name], account.sid)
        for name, account in (("main", parent), ("acme", sub1), (sub2.sid.lower(), sub2))
    }
    # distinct data, each in its own pipeline and dataset
    assert len(set(counts.values())) == 3, counts
    assert {r.pipeline.pipeline_name for r in results.values() if r.pipeline} == {
        "twilio_conversations__main",
        "twilio_conversations__acme",
        f"twilio_conversations__{sub2.sid.lower()}",
    }
    assert results["acme"].dataset == "twilio_acme"
    for name, count in counts.items():
        assert written(results[name])["user_conversations"] == count
        assert results[name].outcome.views  # type: ignore[union-attr]

    again = run_all(isolated_dlt, plan_accounts())  # type: ignore[arg-type]
    for name, result in again.items():
        assert set(written(result).values()) == {0}, (name, written(result))
        assert result.outcome.report.users_scanned > 0  # type: ignore[union-attr]


def test_run_account_loads_one_named_account_and_raises_its_error(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one orchestrator task per account calls (deploy/airflow, deploy/dagster)."""
    parent, sub1, _, _ = emu.accounts
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__BASE_URL", emu.base_url)
    broken = {"name": "broken", "account_sid": sub1.sid, "auth_token": "not-the-token"}
    monkeypatch.setenv(ACCOUNTS_ENV, json.dumps([entry(parent, "main"), broken]))
    destination = dlt.destinations.duckdb(str(isolated_dlt / "tasks.duckdb"))

    loaded = run_account("main", destination)
    pipeline = dlt.pipeline(
        "twilio_conversations__main", destination=destination, dataset_name="twilio_main"
    )
    count = assert_account_mirror(
        emu,
        AccountRun(Account("main", TwilioCredentials(), ""), "twilio_main", pipeline=pipeline),
        parent.sid,
    )
    assert loaded["account"] == "main" and loaded["dataset"] == "twilio_main"
    assert loaded["user_conversations"] == count
    with pytest.raises(Exception, match="authentication failed"):
        run_account("broken", destination)
    with pytest.raises(ConfigurationError, match="main, broken"):
        run_account("typo", destination)
    monkeypatch.delenv(ACCOUNTS_ENV)
    with pytest.raises(ConfigurationError, match="no accounts configured"):
        run_account("main", destination)


def test_filters_apply_to_their_own_account(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, sub1, *_ = emu.accounts
    service = emu.services(account_sid=parent.sid)[1]["sid"]
    sub_service = emu.services(account_sid=sub1.sid)[0]["sid"]
    user = emu.users(sub_service, account_sid=sub1.sid)[0]["sid"]
    monkeypatch.setenv(
        ACCOUNTS_ENV,
        json.dumps(
            [
                entry(parent, "main", base_url=emu.base_url, service_sids=[service]),
                entry(sub1, "sub", base_url=emu.base_url, user_sids=[user]),
            ]
        ),
    )
    results = run_all(isolated_dlt, plan_accounts())  # type: ignore[arg-type]
    assert_account_mirror(emu, results["main"], parent.sid, service_sids=[service])
    assert_account_mirror(emu, results["sub"], sub1.sid, user_sids=[user])
    assert written(results["sub"])["users"] == 1


def test_a_vanished_user_is_removed_only_from_its_own_account(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, sub1, *_ = emu.accounts
    monkeypatch.setenv(
        ACCOUNTS_ENV,
        json.dumps(
            [
                entry(parent, "main", base_url=emu.base_url),
                entry(sub1, "sub", base_url=emu.base_url),
            ]
        ),
    )
    run_all(isolated_dlt, plan_accounts())  # type: ignore[arg-type]
    service = emu.services(account_sid=sub1.sid)[0]["sid"]
    gone = emu.users(service, account_sid=sub1.sid)[0]["sid"]
    writes = TwilioWrites(emu)
    writes.session.auth = (sub1.sid, sub1.auth_token)
    writes.delete_user(service, gone)
    again = run_all(isolated_dlt, plan_accounts())  # type: ignore[arg-type]
    assert again["sub"].outcome.report.users_removed == 1  # type: ignore[union-attr]
    assert again["main"].outcome.report.users_removed == 0  # type: ignore[union-attr]
    assert set(written(again["main"]).values()) == {0}
    assert_account_mirror(emu, again["sub"], sub1.sid)
    assert_account_mirror(emu, again["main"], parent.sid)


def test_credentials_go_only_to_their_own_accounts_origin(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch, proxies: list[RecordingProxy]
) -> None:
    parent, sub1, sub2, _ = emu.accounts
    origin_a, origin_b = RecordingProxy(emu.base_url), RecordingProxy(emu.base_url)
    proxies.extend([origin_a, origin_b])
    monkeypatch.setenv(
        ACCOUNTS_ENV,
        json.dumps(
            [
                entry(sub1, "a", key=True, base_url=origin_a.base_url),
                entry(sub2, "b", base_url=origin_b.base_url),
            ]
        ),
    )
    results = run_all(isolated_dlt, plan_accounts())  # type: ignore[arg-type]
    assert_account_mirror(emu, results["a"], sub1.sid, origin=origin_a.base_url)
    assert_account_mirror(emu, results["b"], sub2.sid, origin=origin_b.base_url)
    assert origin_a.senders == {sub1.api_key_sid}
    assert origin_b.senders == {sub2.sid}
    assert len(origin_a.paths) > 5 and len(origin_b.paths) > 5


def test_a_5xx_storm_at_one_account_fails_it_alone(
    emu: Any, isolated_dlt: Path, monkeypatch: pytest.MonkeyPatch, proxies: list[RecordingProxy]
) -> None:
    parent, sub1, *_ = emu.accounts
    storm = RecordingProxy(emu.base_url, fail_status=503)
    proxies.append(storm)
    monkeypatch.setenv(
        ACCOUNTS_ENV,
        json.dumps(
            [
                entry(sub1, "stormy", base_url=storm.base_url),
                entry(parent, "main", base_url=emu.base_url),
            ]
        ),
    )
    results = run_all(
        isolated_dlt,
        plan_accounts(),  # type: ignore[arg-type]
        source_kwargs={"request_max_attempts": 3, "request_max_retry_delay": 0.0},
    )
    error = results["stormy"].error
    assert error is not None and results["stormy"].outcome is None
    code, line = _explain(error)  # what the CLI prints: `error: account stormy: <line>`
    assert code == 1 and line.startswith("Twilio API error 20503 (HTTP 503) for "), line
    assert len(storm.paths) == 3  # the first request, retried to its budget
    assert_account_mirror(emu, results["main"], parent.sid)  # the next account still loads


# -- discovery -------------------------------------------------------------------------------


def parent_credentials(emu: Any) -> TwilioCredentials:
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = emu.account_sid, emu.auth_token
    return credentials


def test_discovery_pages_accounts_json_and_loads_every_active_account(
    emu: Any, isolated_dlt: Path, proxies: list[RecordingProxy]
) -> None:
    accounts_origin, conversations = RecordingProxy(emu.base_url), RecordingProxy(emu.base_url)
    proxies.extend([accounts_origin, conversations])
    stats = RequestStats()
    plan = discover_accounts(
        conversations.base_url,
        parent_credentials(emu),
        accounts_base_url=accounts_origin.base_url,
        page_size=1,
        stats=stats,
    )
    # four accounts listed one per page, following the relative next_page_uri to its null
    assert stats.requests == 4
    assert [p.split("?")[0] for p in accounts_origin.paths] == ["/2010-04-01/Accounts.json"] * 4
    assert sum("PageToken=" in p for p in accounts_origin.paths) == 3
    active = [a for a in emu.accounts if a.status == "active"]
    assert sorted(plan.names()) == sorted(a.sid.lower() for a in active)
    suspended = emu.accounts[3]
    assert [(s.sid, s.status) for s in plan.skipped] == [(suspended.sid, "suspended")]

    results = run_all(isolated_dlt, plan)
    for account in active:
        result = results[account.sid.lower()]
        assert_account_mirror(emu, result, account.sid, origin=conversations.base_url)
    # the parent's credentials only to the accounts origin and the Conversations origin; the
    # subaccounts' only to the Conversations origin
    assert accounts_origin.senders == {emu.account_sid}
    assert conversations.senders == {a.sid for a in active}


def test_discovery_refuses_a_next_page_uri_on_another_host(
    emu: Any, proxies: list[RecordingProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accounts listing's next_page_uri passes the client's origin pinning: an absolute
    URI elsewhere is refused before the parent's credentials go there."""
    elsewhere = RecordingProxy(emu.base_url)
    proxies.append(elsewhere)
    from twilio_conversations import client as client_module

    real = client_module._decode

    def pointing_elsewhere(response: Any, list_key: str | None) -> dict[str, Any]:
        body = real(response, list_key)
        if body.get("next_page_uri"):
            body["next_page_uri"] = elsewhere.base_url + body["next_page_uri"]
        return body

    monkeypatch.setattr(client_module, "_decode", pointing_elsewhere)
    with pytest.raises(Exception, match="refusing next_page_uri on another host"):
        discover_accounts(
            emu.base_url, parent_credentials(emu), accounts_base_url=emu.base_url, page_size=1
        )
    assert elsewhere.paths == []


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        (
            [{"name": "a", "account_sid": "AC" + "1" * 32, "auth_tokn": "x"}],
            "`auth_tokn`; did you mean `auth_token`",
        ),
        (
            [{"name": "a", "account_sid": "AC" + "1" * 32, "auth_token": "x", "service_sid": []}],
            "did you mean `service_sids`",
        ),
        (
            [{"name": "Bad-Name", "account_sid": "AC" + "1" * 32, "auth_token": "x"}],
            "name 'Bad-Name' must be",
        ),
        ([{"api_key_sid": "SK" + "1" * 32, "api_key_secret": "x"}], "needs a `name`"),
        ([{"name": "a", "account_sid": "AC1", "auth_token": "x"}], "is not an Account SID"),
        ([{"name": "a", "account_sid": "AC" + "1" * 32}], "credentials missing"),
        (
            [
                {"name": "a", "account_sid": "AC" + "1" * 32, "auth_token": "x"},
                {"name": "a", "account_sid": "AC" + "2" * 32, "auth_token": "y"},
            ],
            "is also the name of accounts[0]",
        ),
        ({"name": "a"}, "non-empty list"),
    ],
)
def test_a_malformed_accounts_list_is_one_line_before_any_request(
    monkeypatch: pytest.MonkeyPatch, accounts: Any, message: str
) -> None:
    monkeypatch.setenv(ACCOUNTS_ENV, json.dumps(accounts))
    with pytest.raises(ConfigurationError) as raised:
        plan_accounts()
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_single_account_config_plans_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan_accounts() is None


def test_select_names_one_account_or_fails_with_the_names() -> None:
    credentials = TwilioCredentials()
    plan = AccountsPlan(
        [
            Account("a", credentials, "https://x.example"),
            Account("b", credentials, "https://x.example"),
        ]
    )
    assert plan.select(["b"]).names() == ["b"]
    with pytest.raises(ConfigurationError, match="'c': no such account; configured: a, b"):
        plan.select(["c"])


# -- the CLI, as a scheduler runs it ---------------------------------------------------------


def write_secrets(cwd: Path, text: str) -> None:
    (cwd / ".dlt").mkdir(exist_ok=True)
    (cwd / ".dlt" / "secrets.toml").write_text(text)


def accounts_toml(emu: Any, *tables: dict[str, Any]) -> str:
    lines = ["[sources.twilio_conversations]", f'base_url = "{emu.base_url}"', ""]
    for table in tables:
        lines.append("[[sources.twilio_conversations.accounts]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines)


def cli_env(isolated_dlt: Path) -> dict[str, str]:
    import os

    return {**os.environ, "DESTINATION__DUCKDB__CREDENTIALS": str(isolated_dlt / "cli.duckdb")}


def attach(isolated_dlt: Path, name: str) -> AccountRun:
    """The account's pipeline as the CLI left it, for the mirror assertions."""
    pipeline = dlt.pipeline(
        f"twilio_conversations__{name}",
        destination=dlt.destinations.duckdb(str(isolated_dlt / "cli.duckdb")),
        dataset_name=f"twilio_{name}",
    )
    return AccountRun(Account(name, TwilioCredentials(), ""), f"twilio_{name}", pipeline=pipeline)


def test_cli_one_bad_token_fails_by_name_while_the_others_load(
    emu: Any, isolated_dlt: Path
) -> None:
    parent, sub1, sub2, _ = emu.accounts
    write_secrets(
        isolated_dlt,
        accounts_toml(
            emu,
            entry(parent, "main"),
            {"name": "broken", "account_sid": sub1.sid, "auth_token": "not-the-token"},
            entry(sub2, "other", key=True),
        ),
    )
    done = cli("run", cwd=isolated_dlt, env=cli_env(isolated_dlt))
    assert done.returncode == 1, done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: account broken: authentication failed")
    assert "not-the-token" not in done.stdout + done.stderr
    assert done.stdout.startswith("twilio_conversations: 3 account(s): 2 loaded · 1 failed")
    assert "account broken (" in done.stdout and "FAILED" in done.stdout
    assert f"account main ({parent.sid}): loaded into duckdb dataset twilio_main" in done.stdout
    assert "account other" in done.stdout
    assert_account_mirror(emu, attach(isolated_dlt, "main"), parent.sid)
    assert_account_mirror(emu, attach(isolated_dlt, "other"), sub2.sid)

    # a re-run writes nothing for the accounts that loaded, and the broken one fails again
    again = cli("run", cwd=isolated_dlt, env=cli_env(isolated_dlt))
    assert again.returncode == 1, again.stderr
    unchanged = "rows written   services 0 · users 0 · user_conversations 0"
    assert again.stdout.count(unchanged) == 2, again.stdout

    # one orchestrator task per account: --account runs only that one, exit 0
    one = cli("run", "--account", "other", cwd=isolated_dlt, env=cli_env(isolated_dlt))
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("twilio_conversations: 1 account(s): 1 loaded · 0 failed")
    assert unchanged in one.stdout


def test_cli_json_has_one_entry_per_account_and_the_skipped_ones(
    emu: Any, isolated_dlt: Path
) -> None:
    parent, sub1, *_ = emu.accounts
    write_secrets(
        isolated_dlt,
        accounts_toml(
            emu,
            entry(parent, "main"),
            {"name": "broken", "account_sid": sub1.sid, "auth_token": "not-the-token"},
        ),
    )
    done = cli("run", "--json", cwd=isolated_dlt, env=cli_env(isolated_dlt))
    assert done.returncode == 1, done.stderr
    [line] = done.stdout.splitlines()
    record = json.loads(line)
    assert record["exit_code"] == 1 and record["status"] == "failed"
    assert record["error"] == done.stderr.strip().removeprefix("error: ")
    main, broken = record["accounts"]
    assert (main["account"], main["account_sid"], main["status"]) == ("main", parent.sid, "ok")
    assert main["dataset"] == "twilio_main"
    assert main["rows_written"]["user_conversations"] == len(
        emu.all_user_conversations(account_sid=parent.sid)
    )
    assert (broken["account"], broken["status"]) == ("broken", "failed")
    assert broken["error"].startswith("authentication failed")
    assert "not-the-token" not in done.stdout + done.stderr
    assert record["skipped_accounts"] == []


def test_cli_discovery_skips_inactive_accounts_and_says_so(emu: Any, isolated_dlt: Path) -> None:
    write_secrets(
        isolated_dlt,
        "\n".join(
            [
                "[sources.twilio_conversations]",
                f'base_url = "{emu.base_url}"',
                f'accounts_base_url = "{emu.base_url}"',
                "subaccounts = true",
            ]
        ),
    )
    done = cli("run", cwd=isolated_dlt, env=emulator_env(emu, **cli_env(isolated_dlt)))
    assert done.returncode == 0, done.stderr
    suspended = emu.accounts[3]
    assert "3 loaded · 0 failed · 1 skipped (not active)" in done.stdout
    assert f"account {suspended.sid} (Emulator subaccount 3): skipped, status suspended" in (
        done.stdout
    )
    for account in emu.accounts[:3]:
        assert_account_mirror(emu, attach(isolated_dlt, account.sid.lower()), account.sid)
    # the tokens the listing carried are never shown
    for account in emu.accounts:
        assert account.auth_token not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("table", "top", "expected"),
    [
        (
            'auth_tokn = "x"',
            "",
            "error: accounts[1] ('sub'): unknown setting `auth_tokn`; did you mean `auth_token`?",
        ),
        ("", "RENAME", "error: unknown setting `acounts`"),
        # a mistyped filter beside a valid list: one line before any account runs, not one
        # failure per account
        ("", "lookback_dayz = 3", "error: unknown setting `lookback_dayz`"),
    ],
)
def test_cli_a_typo_in_the_accounts_config_is_one_line_and_exit_2(
    emu: Any, isolated_dlt: Path, table: str, top: str, expected: str
) -> None:
    text = accounts_toml(emu, entry(emu.accounts[0], "main"), entry(emu.accounts[1], "sub"))
    if table:
        text += table + "\n"
    if top == "RENAME":
        text = text.replace(".accounts]]", ".acounts]]")
    elif top:
        text = text.replace("\n\n", f"\n{top}\n\n", 1)
    write_secrets(isolated_dlt, text)
    done = cli("run", cwd=isolated_dlt, env=emulator_env(emu, **cli_env(isolated_dlt)))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(expected), done.stderr
    assert not (isolated_dlt / "cli.duckdb").exists()  # nothing ran
    assert emu.stats.snapshot().total == 0  # before any request


def test_cli_filter_flags_apply_to_one_selected_account_only(emu: Any, isolated_dlt: Path) -> None:
    parent, sub1, *_ = emu.accounts
    write_secrets(isolated_dlt, accounts_toml(emu, entry(parent, "main"), entry(sub1, "sub")))
    service = emu.services(account_sid=parent.sid)[0]["sid"]
    env = cli_env(isolated_dlt)
    several = cli("run", "--service-sid", service, cwd=isolated_dlt, env=env)
    assert several.returncode == 2, several.stderr
    assert several.stderr == (
        "error: --service-sid applies to one account: add --account NAME, or set the filter per "
        "account in the accounts list\n"
    )
    unknown = cli("run", "--account", "mian", cwd=isolated_dlt, env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: --account 'mian' (did you mean main?)")
    one = cli("run", "--account", "main", "--service-sid", service, cwd=isolated_dlt, env=env)
    assert one.returncode == 0, one.stderr
    assert_account_mirror(emu, attach(isolated_dlt, "main"), parent.sid, service_sids=[service])
    # the README's query across accounts, once both are loaded
    assert cli("run", cwd=isolated_dlt, env=env).returncode == 0
    import duckdb

    with duckdb.connect(str(isolated_dlt / "cli.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT 'main' AS account, * FROM twilio_main.user_conversation_summary "
            "UNION ALL BY NAME "
            "SELECT 'sub' AS account, * FROM twilio_sub.user_conversation_summary"
        ).fetchall()
    users = {
        name: len(truth_users(emu, account_sid=a.sid))
        for name, a in (("main", parent), ("sub", sub1))
    }
    assert len(rows) == sum(users.values())
    assert {r[0] for r in rows} == {"main", "sub"}


def test_cli_exit_2_when_every_account_fails_on_its_configuration(
    emu: Any, isolated_dlt: Path
) -> None:
    """A configured service the account cannot see is fixed in the configuration: when that is
    every account's failure, the run exits 2 (retrying cannot help); one line per account."""
    parent, sub1, *_ = emu.accounts
    other = emu.services(account_sid=sub1.sid)[0]["sid"]  # sub's service, not main's
    mine = emu.services(account_sid=parent.sid)[0]["sid"]
    write_secrets(
        isolated_dlt,
        accounts_toml(
            emu,
            entry(parent, "main", service_sids=[other]),
            entry(sub1, "sub", service_sids=[mine]),
        ),
    )
    done = cli("run", cwd=isolated_dlt, env=cli_env(isolated_dlt))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "error"]
    assert lines[0].startswith("error: account main: ") and other in lines[0]
    assert lines[1].startswith("error: account sub: ") and mine in lines[1]


def test_section_level_filters_with_several_accounts_stop_the_run(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ACCOUNTS_ENV, json.dumps([entry(emu.accounts[0], "main")]))
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__SERVICE_SIDS", '["IS' + "0" * 32 + '"]')
    with pytest.raises(ConfigurationError, match="set it per account"):
        plan_accounts()
    monkeypatch.delenv("SOURCES__TWILIO_CONVERSATIONS__SERVICE_SIDS")
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__SUBACCOUNTS", "true")
    with pytest.raises(ConfigurationError, match="not both"):
        plan_accounts()
