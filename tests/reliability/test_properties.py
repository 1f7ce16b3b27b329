"""Property-based tests of everything that parses what the API sends: records, attributes, the
date_updated window, fingerprints, base URLs and pages."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
import requests_mock as rm
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twilio_conversations import changes
from twilio_conversations.client import RetryPolicy, TwilioClient, validate_base_url
from twilio_conversations.errors import ConfigurationError, PagingError, TwilioConnectorError
from twilio_conversations.records import (
    USER_CONVERSATION_KEY,
    USER_CONVERSATIONS_ARROW_SCHEMA,
    parse_attributes,
    user_conversations_table,
)
from twilio_conversations.window import UpdatedWindow

settings.register_profile("reliability", max_examples=40, deadline=None)
settings.load_profile("reliability")

hexes = st.text("0123456789abcdef", min_size=32, max_size=32)
sids = lambda prefix: hexes.map(lambda h: prefix + h)  # noqa: E731
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
iso = moments.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
texts = st.text(max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def records(draw: Any) -> dict[str, Any]:
    closed = draw(st.booleans())
    read = draw(st.none() | st.integers(0, 10_000))
    return {
        "account_sid": draw(sids("AC")),
        "chat_service_sid": draw(sids("IS")),
        "conversation_sid": draw(sids("CH")),
        "user_sid": draw(sids("US")),
        "participant_sid": draw(sids("MB")),
        "friendly_name": draw(st.none() | texts),
        "unique_name": draw(st.none() | texts),
        "attributes": draw(texts | json_values.map(json.dumps)),
        "conversation_state": draw(st.sampled_from(["inactive", "active", "closed"])),
        "notification_level": draw(st.sampled_from(["default", "muted"])),
        "unread_messages_count": None if read is None else draw(st.integers(0, 1000)),
        "last_read_message_index": read,
        "timers": {"date_inactive": draw(iso), "date_closed": draw(iso)} if closed else {},
        "date_created": draw(iso),
        "date_updated": draw(iso),
        "created_by": draw(st.none() | texts),
        "url": "https://conversations.twilio.com/v1/x",
        "links": {"participant": "https://p", "conversation": "https://c"},
    }


def as_utc(text: str | None) -> datetime | None:
    return (
        None if text is None else datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    )


@given(
    st.lists(records(), max_size=8),
    st.dictionaries(st.from_regex(r"\Anew_[a-z]{1,8}\Z"), json_values, max_size=2),
)
def test_user_conversations_table_keeps_every_value_typed(
    rows: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    rows = [{**row, **extra} for row in rows]
    table = user_conversations_table(rows, load_id="123.4")
    assert table.num_rows == len(rows)
    assert table.schema.names[: len(USER_CONVERSATIONS_ARROW_SCHEMA)] == (
        USER_CONVERSATIONS_ARROW_SCHEMA.names
    )
    if rows:
        assert set(extra) <= set(table.schema.names)  # new API fields are kept as columns
    for row, out in zip(rows, table.to_pylist(), strict=True):
        for key in USER_CONVERSATION_KEY:
            assert out[key] == row[key]
        assert out["unread_messages_count"] == row["unread_messages_count"]
        assert out["last_read_message_index"] == row["last_read_message_index"]
        assert out["attributes"] == row["attributes"]
        assert out["attributes_json"] == parse_attributes(row["attributes"])
        assert out["date_updated"] == as_utc(row["date_updated"])
        assert out["date_created"] == as_utc(row["date_created"])
        assert out["timers__date_closed"] == as_utc(row["timers"].get("date_closed"))
        assert out["links__conversation"] == row["links"]["conversation"]
        assert out["_deleted"] is False and out["_dlt_load_id"] == "123.4"
    assert table.schema.field("date_updated").type == pa.timestamp("us", tz="UTC")


@given(st.one_of(texts, json_values.map(json.dumps), json_values, st.binary(max_size=8)))
@example('{"a": 1')
@example("NaN")
@example("")
def test_parse_attributes_returns_the_text_exactly_when_it_is_json(raw: Any) -> None:
    parsed = parse_attributes(raw)
    if not isinstance(raw, str):
        assert parsed is None
        return
    try:
        # Strict RFC 8259 JSON, what PostgreSQL's jsonb and DuckDB's JSON accept: no NaN or
        # Infinity, and text that is valid UTF-8 (no lone surrogates).
        raw.encode("utf-8")
        json.loads(raw, parse_constant=_reject_non_standard)
        valid = True
    except ValueError:
        valid = False
    assert parsed == (raw if valid else None)


def _reject_non_standard(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(moments, st.none() | moments, st.none() | moments, offsets)
def test_window_is_half_open_and_offset_independent(
    moment: datetime, start: datetime | None, end: datetime | None, tz: timezone
) -> None:
    assume(not (start and end and end <= start))
    window = UpdatedWindow.from_config(
        start.astimezone(tz).isoformat() if start else None, end.isoformat() if end else None
    )
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    expected = (start is None or moment >= start) and (end is None or moment < end)
    assert window.contains(stamp) is expected
    assert window.contains(moment.astimezone(tz).isoformat()) is expected
    rows = [{"date_updated": stamp, "n": 1}, {"date_updated": stamp, "n": 2}]
    assert window.select(rows) == (rows if expected else [])


@given(moments, moments)
def test_window_rejects_end_not_after_start(a: datetime, b: datetime) -> None:
    start, end = min(a, b), max(a, b)
    with pytest.raises(ConfigurationError):
        UpdatedWindow.from_config(end.isoformat(), start.isoformat())


@given(st.lists(records(), max_size=8, unique_by=lambda r: r["conversation_sid"]), st.randoms())
def test_fingerprint_ignores_list_and_key_order_but_not_content(
    rows: list[dict[str, Any]], rnd: random.Random
) -> None:
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    reordered = [dict(reversed(list(r.items()))) for r in shuffled]
    digest = changes.fingerprint(rows, sort_key="conversation_sid")
    assert changes.fingerprint(reordered, sort_key="conversation_sid") == digest
    assert len(digest) == 16
    if rows:
        changed = [dict(r) for r in rows]
        changed[rnd.randrange(len(rows))]["unread_messages_count"] = 1001  # above Twilio's cap
        assert changes.fingerprint(changed, sort_key="conversation_sid") != digest
        assert changes.fingerprint(rows[1:], sort_key="conversation_sid") != digest


hosts = st.one_of(
    st.sampled_from(
        [
            "localhost",
            "127.0.0.1",
            "127.8.9.10",
            "[::1]",
            "conversations.twilio.com",
            "conversations.dublin.ie1.twilio.com",
            "10.0.0.1",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
            "127.0.0.1.nip.io",
            "localhost.example.com",
            "example.com",
        ]
    ),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}\Z"),
)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@given(
    st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
    hosts,
    st.none() | st.integers(1, 65535),
    st.sampled_from(["", "/", "/v1", "?a=1", "#f"]),
)
def test_base_url_plain_http_only_on_loopback(
    scheme: str, host: str, port: int | None, tail: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{tail}"
    try:
        result = validate_base_url(url)
    except ConfigurationError as exc:
        assert str(exc).count("\n") == 0
        return
    parts = urlsplit(result)
    assert parts.scheme in ("http", "https")
    assert parts.scheme == "https" or is_loopback(host), f"plain http accepted for {url}"
    assert (parts.path, parts.query, parts.fragment) == ("", "", "")
    assert validate_base_url(result) == result  # idempotent


@given(st.text(max_size=40))
@example("http://[::1")
@example("http://127.0.0.1:port")
def test_base_url_validation_fails_only_with_configuration_errors(text: str) -> None:
    try:
        result = validate_base_url(text)
    except ConfigurationError:
        return
    urlsplit(result).port  # a usable URL has a usable port  # noqa: B018


# -- pages --------------------------------------------------------------------------------------

BASE = "https://conversations.twilio.com"
FAST = RetryPolicy(max_attempts=3, backoff_factor=0.0, max_delay=0.0, timeout=5)
page_items = st.lists(
    st.fixed_dictionaries({"conversation_sid": sids("CH"), "attributes": texts}), max_size=4
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(page_items, min_size=1, max_size=5), st.sampled_from(["PageToken", "Page"]))
def test_iter_pages_yields_every_record_once_in_order(
    pages: list[list[dict[str, Any]]], token: str
) -> None:
    client = TwilioClient(BASE, ("AC" + "a" * 32, "t"), FAST)
    path = "/v1/Services/IS1/Users/US1/Conversations"
    with rm.Mocker() as mock:
        for i, items in enumerate(pages):
            following = f"{BASE}{path}?PageSize=4&{token}={i + 1}" if i + 1 < len(pages) else None
            body = {
                "conversations": items,
                "meta": {"key": "conversations", "next_page_url": following},
            }
            query = "PageSize=4" + (f"&{token}={i}" if i else "")
            mock.get(f"{BASE}{path}?{query}", json=body, complete_qs=True)
        got = list(
            client.iter_pages(path, "conversations", {"PageSize": 4}, record_key="conversation_sid")
        )
    assert got == pages
    assert mock.call_count == len(pages)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 6), st.data(), st.sampled_from(["PageToken", "Page"]))
def test_a_next_page_that_leads_back_is_never_requested_again(
    length: int, data: st.DataObject, token: str
) -> None:
    """Pages 0 .. length-1 in a chain whose last page leads back to any page already read
    (its own URL included, and page 0 spelled with `Page=0` or without): the loop stops with a
    PagingError once every page was read once, before any is requested twice."""
    back = data.draw(st.integers(0, length - 1))
    first_spelling = data.draw(st.sampled_from(["", "&Page=0"]))
    client = TwilioClient(BASE, ("AC" + "a" * 32, "t"), FAST)
    path = "/v1/Services/IS1/Users"

    def url(i: int) -> str:
        return f"{BASE}{path}?PageSize=4" + (f"&{token}={i}" if i else first_spelling)

    with rm.Mocker() as mock:
        for i in range(length):
            following = url(i + 1) if i + 1 < length else url(back)
            body = {"users": [{"sid": f"US{i}"}], "meta": {"next_page_url": following}}
            query = "PageSize=4" + (f"&{token}={i}" if i else "")
            mock.get(f"{BASE}{path}?{query}", json=body, complete_qs=True)
        with pytest.raises(PagingError, match="loops"):
            list(client.iter_pages(path, "users", {"PageSize": 4}))
    assert mock.call_count == length


broken_bodies = st.one_of(
    st.binary(max_size=40).filter(lambda b: not b.strip().startswith(b"{")),
    st.just(b""),
    st.just(b'{"conversations": [{"conversation_sid": "CH1"}], "meta": {'),
    st.just(b"<html><body>502 Bad Gateway</body></html>"),
    st.just(b"[]"),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(broken_bodies, st.sampled_from([200, 502]))
def test_bodies_that_are_not_twilio_json_are_never_data(body: bytes, status: int) -> None:
    client = TwilioClient(BASE, ("AC" + "a" * 32, "t"), FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            content=body,
            status_code=status,
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(TwilioConnectorError) as failure:
            list(client.iter_pages("/v1/Services", "services"))
    assert mock.call_count == FAST.max_attempts  # retried, then given up
    assert "\n" not in str(failure.value)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(texts, json_values, max_size=3).filter(
        lambda d: not isinstance(d.get("services"), list)
    )
)
@example({})
def test_json_objects_that_are_not_pages_are_never_data(body: dict[str, Any]) -> None:
    client = TwilioClient(BASE, ("AC" + "a" * 32, "t"), FAST)
    with rm.Mocker() as mock:
        mock.get(f"{BASE}/v1/Services", json=body)
        with pytest.raises(TwilioConnectorError):
            list(client.iter_pages("/v1/Services", "services"))
