"""Property tests of paging and mutations, in-process through ``App.handle`` (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio_emulator import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DataSpec,
    Store,
    TwilioError,
)
from twilio_emulator.app import App, Request, parse_query
from twilio_emulator.paging import decode_token, encode_token

BASE = "http://emulator.test"
AUTH = {
    "Authorization": "Basic "
    + base64.b64encode(f"{DEMO_ACCOUNT_SID}:{DEMO_AUTH_TOKEN}".encode()).decode()
}


def _app(policy: str = "clamp") -> App:
    store = Store.generate(
        DataSpec(seed=13, services=1, users=6, max_conversations=90), DEMO_ACCOUNT_SID
    )
    return App(
        store, account_sid=DEMO_ACCOUNT_SID, auth_token=DEMO_AUTH_TOKEN, page_size_policy=policy
    )  # type: ignore[arg-type]


def _get(app: App, url: str) -> tuple[int, Any]:
    parts = urlsplit(url)
    response = app.handle(Request("GET", parts.path, parse_query(parts.query), AUTH, b"", BASE))
    return response.status, json.loads(response.body)


def _walk(app: App, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        status, body = _get(app, next_url)
        assert status == 200, body
        assert len(body["conversations"]) <= body["meta"]["page_size"]
        rows.extend(body["conversations"])
        next_url = body["meta"]["next_page_url"]
    return rows


APP = _app("lenient")
SERVICE = APP.store.default_service_sid
USERS = APP.store.services[SERVICE].user_sids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=st.sampled_from(USERS), size=st.integers(min_value=1, max_value=120))
def test_any_page_size_walks_every_row_once_in_order(user: str, size: int) -> None:
    rows = _walk(APP, f"{BASE}/v1/Services/{SERVICE}/Users/{user}/Conversations?PageSize={size}")
    with APP.store.lock:
        expected = [m.conversation_sid for m in APP.store.services[SERVICE].users[user].memberships]
    assert [r["conversation_sid"] for r in rows] == expected


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=20),
    leave_at=st.integers(min_value=0, max_value=200),
)
def test_walk_while_a_row_leaves_never_duplicates_or_skips_others(size: int, leave_at: int) -> None:
    app = _app()
    service = app.store.default_service_sid
    with app.store.lock:
        users = app.store.services[service].users
        user = max(users, key=lambda sid: len(users[sid].memberships))
        before = [m.conversation_sid for m in users[user].memberships]
    victim = before[leave_at % len(before)]
    rows: list[str] = []
    next_url: str | None = f"{BASE}/v1/Users/{user}/Conversations?PageSize={size}"
    while next_url:
        _, body = _get(app, next_url)
        rows.extend(r["conversation_sid"] for r in body["conversations"])
        if len(rows) >= size and victim in before:
            app.store.leave(service, user, victim)
            before.remove(victim)
        next_url = body["meta"]["next_page_url"]
    assert len(rows) == len(set(rows))
    others = [sid for sid in before if sid != victim]
    assert [sid for sid in rows if sid != victim] == others


@settings(max_examples=50, deadline=None)
@given(
    sid=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    after=st.booleans(),
    scope=st.text(alphabet="abcdefUSCH/0123456789", min_size=1, max_size=40),
)
def test_tokens_round_trip_and_are_bound_to_their_scope(sid: str, after: bool, scope: str) -> None:
    secret = b"s" * 32
    token = encode_token(after, "CH" + sid, scope, secret)
    cursor = decode_token(token, scope, secret)
    assert (cursor.after, cursor.sid) == (after, "CH" + sid)
    with pytest.raises(TwilioError) as err:
        decode_token(token, scope + "x", secret)
    assert err.value.code == 21481
