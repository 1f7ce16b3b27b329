"""The ways a real API deviates from its spec, each served by a server of the tests' own
(`misbehaving.py`, not the emulator): pages that loop, rows served twice, keys new inside known
objects, identities with outer spaces, a service that vanishes mid-run, and pages that are not a
list's. Each run is the CLI as a scheduler runs it; each table is checked against what the server
serves (its own records), never against the code under test. docs/reliability.md lists them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mirror import assert_services_mirror, assert_user_conversations_mirror, assert_users_mirror
from twilio_conversations.client import TwilioClient
from twilio_conversations.errors import PagingError

from . import misbehaving
from .helpers import attach, run_cli
from .misbehaving import Server, service, user, user_conversation

SERVICES = "/v1/Services"


def users_path(service_sid: str) -> str:
    return f"/v1/Services/{service_sid}/Users"


def conversations_path(service_sid: str, user_sid: str) -> str:
    return f"/v1/Services/{service_sid}/Users/{user_sid}/Conversations"


class Account:
    """Two services of three users, each user in up to five conversations, laid out on the
    server in pages of two; `truth()` is what the destination must hold."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.services = [service(1), service(2)]
        self.users = {
            s["sid"]: [user(s["sid"], 10 * i + n) for n in range(3)]
            for i, s in enumerate(self.services, 1)
        }
        self.rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in self.services:
            for n, u in enumerate(self.users[s["sid"]]):
                self.rows[(s["sid"], u["sid"])] = [
                    user_conversation(s["sid"], u["sid"], 100 * n + c) for c in range(n + 3)
                ]
        self.serve()

    def serve(self) -> None:
        self.server.lists.clear()
        self.server.paged(SERVICES, self.services, size=1)
        for s in self.services:
            self.server.paged(users_path(s["sid"]), self.users[s["sid"]])
            for u in self.users[s["sid"]]:
                self.server.paged(
                    conversations_path(s["sid"], u["sid"]), self.rows[(s["sid"], u["sid"])]
                )

    def all_users(self) -> list[dict[str, Any]]:
        return [u for s in self.services for u in self.users[s["sid"]]]

    def all_rows(self) -> list[dict[str, Any]]:
        return [r for rows in self.rows.values() for r in rows]


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server().start()
    yield running
    running.stop()


@pytest.fixture
def account(server: Server) -> Account:
    return Account(server)


def run(server: Server, tmp_path: Path, *args: str, **env: str) -> Any:
    return run_cli(server, "run", "--progress", "none", *args, cwd=tmp_path, **env)


def assert_mirror(tmp_path: Path, services: Any, users: Any, rows: Any) -> None:
    """Every table equals the server's records (one row per key: the oracle refuses repeats)."""
    pipeline = attach(tmp_path)
    assert_services_mirror(pipeline, services)
    assert_users_mirror(pipeline, users)
    assert_user_conversations_mirror(pipeline, rows)


def tables(tmp_path: Path) -> dict[str, list[Any]]:
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        return {
            t: sorted(map(str, con.execute(f"select * from twilio.{t}").fetchall()))
            for t in ("services", "users", "user_conversations")
        }


def one_error_line(result: Any) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert misbehaving.AUTH_TOKEN not in result.stdout + result.stderr
    return lines[0]


# -- 1. paging loops ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["conversations", "users", "users-self", "services"])
def test_a_next_page_that_leads_back_stops_the_run_with_one_line_and_loses_nothing(
    server: Server, account: Account, tmp_path: Path, which: str
) -> None:
    assert run(server, tmp_path).returncode == 0
    before = tables(tmp_path)
    first_service, busiest = (
        account.services[0]["sid"],
        account.users[account.services[0]["sid"]][2],
    )
    path, back_to = {
        # the busiest user's page 2 (of 3) leads back to page 1
        "conversations": (conversations_path(first_service, busiest["sid"]), 0),
        "users": (users_path(first_service), 0),
        "users-self": (users_path(first_service), 1),  # page 2 leads to itself
        "services": (SERVICES, 0),
    }[which]
    pages = server.lists[path]
    assert len(pages) >= 2
    pages[1].next = back_to
    account.services[0]["friendly_name"] = "changed"  # a change the failed run must not write
    server.served.clear()
    result = run(server, tmp_path)
    line = one_error_line(result)
    assert re.fullmatch(
        rf"error: the list {re.escape(server.base_url + path)} loops: its next_page_url leads "
        rf"back to a page already read, {re.escape(server.base_url + path)}\?\S+",
        line,
    ), line
    # Stopped at the repeat: each page of the list was read once, the loop's target not again.
    assert server.requests_to(path) == 2
    assert tables(tmp_path) == before, "the failed run changed the destination"


def test_the_accounts_listing_stops_at_a_page_it_has_read(server: Server) -> None:
    path = "/2010-04-01/Accounts.json"
    records = [{"sid": misbehaving.sid("AC", n), "status": "active"} for n in range(4)]

    # v2010's shape: the list and `next_page_uri` (relative) at the top level, no `meta`.
    server.objects[path] = {
        "accounts": records[:2],
        "next_page_uri": path + "?Page=1&PageToken=PA1",
    }
    client = TwilioClient(server.base_url, (server.account_sid, server.auth_token))
    original = server.answer

    def answer(p: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if p == path and query.get("Page") == ["1"]:  # page 2 leads back to page 1
            return 200, {"accounts": records[2:], "next_page_uri": path + "?PageSize=2"}
        return original(p, query)

    server.answer = answer  # type: ignore[method-assign]
    with pytest.raises(PagingError, match="loops: its next_page_uri leads back"):
        list(client.iter_v2010_pages(path, "accounts", {"PageSize": 2}))
    assert server.requests_to(path) == 2


# -- 2. a row served twice ------------------------------------------------------------------


def test_a_row_served_twice_in_one_listing_is_one_row_and_the_last_copy_wins(
    server: Server, account: Account, tmp_path: Path
) -> None:
    first_service = account.services[0]["sid"]
    busiest = account.users[first_service][2]
    key = (first_service, busiest["sid"])
    rows = account.rows[key]
    # A conversation updated between two page requests: served on page 1, again on page 3.
    updated = {**rows[0], "friendly_name": "renamed", "date_updated": "2024-03-01T00:00:00Z"}
    pages = server.lists[conversations_path(*key)]
    pages[-1].records.append(updated)
    # A user updated between two pages of the listing, and a service served twice.
    renamed = {
        **account.users[first_service][0],
        "friendly_name": "renamed user",
        "date_updated": "2024-03-01T00:00:00Z",
    }
    server.lists[users_path(first_service)][-1].records.append(renamed)
    renamed_service = {**account.services[0], "friendly_name": "renamed service"}
    server.lists[SERVICES][-1].records.append(renamed_service)

    assert run(server, tmp_path).returncode == 0  # first load
    rows[0] = updated
    account.users[first_service][0] = renamed
    account.services[0] = renamed_service
    assert_mirror(tmp_path, account.services, account.all_users(), account.all_rows())

    # A later run: the user's list served twice again, with another change in its last copy.
    again = {**updated, "friendly_name": "renamed again", "date_updated": "2024-04-01T00:00:00Z"}
    pages[0].records[0] = updated
    pages[-1].records[-1] = again
    assert run(server, tmp_path).returncode == 0
    rows[0] = again
    assert_mirror(tmp_path, account.services, account.all_users(), account.all_rows())


# -- 3. keys new inside known objects ---------------------------------------------------------


def test_keys_new_inside_links_and_timers_become_columns(
    server: Server, account: Account, tmp_path: Path
) -> None:
    first_service = account.services[0]["sid"]
    target = account.users[first_service][1]
    rows = account.rows[(first_service, target["sid"])]
    rows[0]["links"] = {**rows[0]["links"], "messages": "https://conversations.twilio.com/v1/m"}
    rows[1]["timers"] = {"date_archived": "2024-05-01T00:00:00Z", "date_closed": None}
    account.serve()
    assert run(server, tmp_path).returncode == 0
    assert_mirror(tmp_path, account.services, account.all_users(), account.all_rows())
    with duckdb.connect(str(tmp_path / "test.duckdb"), read_only=True) as con:
        found = con.execute(
            "select count(links__messages), count(timers__date_archived) "
            "from twilio.user_conversations"
        ).fetchone()
    assert found == (1, 1)  # the columns exist and hold the one value each (the mirror: which)
    rerun = run(server, tmp_path)
    assert rerun.returncode == 0
    assert "rows written   services 0 · users 0 · user_conversations 0" in rerun.stdout, (
        rerun.stdout
    )


# -- 4. identities are sent as configured -----------------------------------------------------


def test_a_configured_identity_with_outer_spaces_is_sent_as_configured(
    server: Server, account: Account, tmp_path: Path
) -> None:
    first_service = account.services[0]["sid"]
    padded, plain = account.users[first_service][1], account.users[first_service][2]
    padded["identity"], plain["identity"] = " padded ", "padded"
    for u in (padded, plain):
        server.objects[f"{users_path(first_service)}/{u['identity']}"] = u
    result = run(server, tmp_path, "--service-sid", first_service, "--user-sid", " padded ")
    assert result.returncode == 0, result.stderr
    assert "' padded ' has spaces at its start or end" in result.stderr, result.stderr
    assert any("/Users/%20padded%20" in served for served in server.served), server.served
    assert_mirror(
        tmp_path,
        [account.services[0]],
        [padded],
        account.rows[(first_service, padded["sid"])],
    )


# -- 5. a service that vanishes mid-run -------------------------------------------------------


def test_a_service_that_vanishes_mid_run_is_skipped_and_its_rows_kept(
    server: Server, account: Account, tmp_path: Path
) -> None:
    assert run(server, tmp_path).returncode == 0
    gone, kept = account.services[1]["sid"], account.services[0]["sid"]
    kept_user = account.users[kept][0]
    account.rows[(kept, kept_user["sid"])].pop()  # a change in the other service
    account.serve()
    del server.lists[users_path(gone)]  # /Services still lists it; its users answer 404
    result = run(server, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"skipped        {gone}/Users: service not found (404)" in result.stdout, result.stdout
    # The vanished service's rows are as the last run left them; the other service's are new.
    assert_mirror(tmp_path, account.services, account.all_users(), account.all_rows())


# -- beyond the spec: pages that are not a list's ---------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no meta", r"malformed response body: page has no 'users' list and 'meta' object"),
        ("other list", r"the list \S+/Users gave a next_page_url to another list: \S+/v1/Services"),
        ("meta key", r"malformed response body: meta.key names the list 'services', not 'users'"),
        ("no key field", r"malformed page: record 1 has no 'sid'"),
    ],
)
def test_a_page_that_is_not_the_list_s_fails_with_one_line_and_loses_nothing(
    server: Server, account: Account, tmp_path: Path, breakage: str, message: str
) -> None:
    assert run(server, tmp_path).returncode == 0
    before = tables(tmp_path)
    page = server.lists[users_path(account.services[0]["sid"])][1]
    if breakage == "no meta":
        page.meta = False
    elif breakage == "other list":
        page.next = SERVICES
    elif breakage == "meta key":
        page.key = "services"
    else:
        page.records[0] = {k: v for k, v in page.records[0].items() if k != "sid"}
    line = one_error_line(run(server, tmp_path))
    assert re.search(message, line), line
    assert tables(tmp_path) == before
