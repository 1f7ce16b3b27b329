"""Narrow HTTP behaviour of the client, with `requests-mock` (end-to-end runs use the emulator)."""

from __future__ import annotations

import pytest
import requests
import requests_mock as rm
from twilio_conversations import client as client_module
from twilio_conversations.client import RetryPolicy, TwilioClient, validate_base_url
from twilio_conversations.errors import (
    AuthenticationError,
    ConfigurationError,
    TwilioAPIError,
    TwilioConnectionError,
    UnsafeUrlError,
)

BASE = "https://conversations.twilio.com"
AUTH = ("AC" + "a" * 32, "token-123")
FAST = RetryPolicy(max_attempts=3, backoff_factor=0.001, max_delay=0.01, timeout=5)


def page(items: list[dict], next_url: str | None, key: str = "conversations") -> dict:
    return {key: items, "meta": {"key": key, "next_page_url": next_url, "page_size": 50}}


def test_follows_next_page_url_until_null() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            json=page([{"sid": "1"}], f"{BASE}/v1/Services?PageToken=b", "services"),
        )
        mock.get(f"{BASE}/v1/Services?PageToken=b", json=page([{"sid": "2"}], None, "services"))
        pages = list(client.iter_pages("/v1/Services", "services", {"PageSize": 50}))
    assert pages == [[{"sid": "1"}], [{"sid": "2"}]]
    assert mock.call_count == 2
    # Basic auth goes with every request; the token never appears in the URL.
    assert all(r.headers["Authorization"].startswith("Basic ") for r in mock.request_history)
    assert "token-123" not in mock.request_history[1].url


def test_refuses_next_page_on_another_host() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            json=page([{"sid": "1"}], "https://evil.example/v1/Services?p=2", "services"),
        )
        evil = mock.get("https://evil.example/v1/Services", json=page([], None, "services"))
        with pytest.raises(UnsafeUrlError, match="another host: https://evil.example/v1/Services"):
            list(client.iter_pages("/v1/Services", "services"))
    assert evil.call_count == 0


def test_401_is_authentication_error_without_retry() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            status_code=401,
            json={"code": 20003, "message": "Authenticate", "status": 401},
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
        with pytest.raises(AuthenticationError, match="authentication failed") as info:
            list(client.iter_pages("/v1/Services", "services"))
    assert mock.call_count == 1
    assert "token-123" not in str(info.value)


def test_404_carries_twilio_code_and_message() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services/IS1/Users/US1/Conversations",
            status_code=404,
            json={"code": 20404, "message": "The requested resource was not found", "status": 404},
        )
        with pytest.raises(TwilioAPIError) as info:
            list(client.iter_pages("/v1/Services/IS1/Users/US1/Conversations", "conversations"))
    assert (info.value.status, info.value.code) == (404, 20404)
    assert "\n" not in str(info.value)


def test_retries_429_and_503_then_succeeds_and_counts() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            [
                {"status_code": 429, "json": {"code": 20429, "message": "Too Many Requests"}},
                {"status_code": 503, "json": {"code": 20503, "message": "Service unavailable"}},
                {"json": page([{"sid": "1"}], None, "services")},
            ],
        )
        pages = list(client.iter_pages("/v1/Services", "services"))
    assert pages == [[{"sid": "1"}]]
    assert client.stats.retries == 2
    assert client.stats.requests == 3
    assert client.stats.statuses[429] == 1


def test_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    client = TwilioClient(
        BASE, AUTH, RetryPolicy(max_attempts=3, backoff_factor=0.001, max_delay=30)
    )
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            [
                {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"code": 20429}},
                {"json": page([], None, "services")},
            ],
        )
        list(client.iter_pages("/v1/Services", "services"))
    assert waits == [7.0]


def test_malformed_200_is_retried_then_reported_not_parsed() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            text="<html>Bad gateway</html>",
            headers={"Content-Type": "text/html"},
        )
        with pytest.raises(TwilioAPIError, match="malformed response body"):
            list(client.iter_pages("/v1/Services", "services"))
    assert mock.call_count == FAST.max_attempts


def test_connection_errors_exhaust_budget_with_one_line() -> None:
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(f"{BASE}/v1/Services", exc=requests.ConnectionError("connection reset"))
        with pytest.raises(TwilioConnectionError, match="after 3 attempts"):
            list(client.iter_pages("/v1/Services", "services"))
    assert mock.call_count == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://conversations.twilio.com/", "https://conversations.twilio.com"),
        (
            "https://conversations.dublin.ie1.twilio.com",
            "https://conversations.dublin.ie1.twilio.com",
        ),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("conversations.twilio.com", "absolute URL"),
        ("http://conversations.twilio.com", "plain http"),
        ("http://10.0.0.5:8080", "plain http"),
        ("https://user:pw@conversations.twilio.com", "credentials"),
        ("https://conversations.twilio.com/v1", "scheme and host only"),
        ("ftp://conversations.twilio.com", "absolute URL"),
    ],
)
def test_base_url_rejected(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        validate_base_url(url)


def test_waits_are_full_jitter_without_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    policy = RetryPolicy(max_attempts=5, backoff_factor=1.0, max_delay=3.0)
    client = TwilioClient(BASE, AUTH, policy)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services",
            [{"status_code": 503, "json": {}}] * 4 + [{"json": page([], None, "services")}],
        )
        list(client.iter_pages("/v1/Services", "services"))
    assert len(waits) == 4
    # the n-th wait is uniform in [0, min(max_delay, factor * 2**n)]
    assert all(0 <= w <= min(3.0, 2.0**n) for n, w in enumerate(waits, start=1)), waits


def test_each_page_is_decoded_once_and_params_go_only_with_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    loads = client_module.orjson.loads
    monkeypatch.setattr(
        client_module.orjson, "loads", lambda data: decoded.append(data) or loads(data)
    )
    client = TwilioClient(BASE, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{BASE}/v1/Services?PageSize=2",
            json=page([{"sid": "1"}], f"{BASE}/v1/Services?PageSize=2&PageToken=b", "services"),
            complete_qs=True,
        )
        mock.get(
            f"{BASE}/v1/Services?PageSize=2&PageToken=b",
            json=page([{"sid": "2"}], None, "services"),
            complete_qs=True,
        )
        pages = list(client.iter_pages("/v1/Services", "services", {"PageSize": 2}))
    assert pages == [[{"sid": "1"}], [{"sid": "2"}]]
    assert len(decoded) == 2


# -- Twilio's REST API v2010 (the accounts listing) --------------------------------------------

API = "https://api.twilio.com"
ACCOUNTS = "/2010-04-01/Accounts.json"


def test_v2010_follows_the_relative_next_page_uri_against_the_page_url() -> None:
    client = TwilioClient(API, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(
            f"{API}{ACCOUNTS}?PageSize=1",
            json={"accounts": [{"sid": "1"}], "next_page_uri": f"{ACCOUNTS}?Page=1&PageToken=x"},
        )
        mock.get(
            f"{API}{ACCOUNTS}?Page=1&PageToken=x",
            json={"accounts": [{"sid": "2"}], "next_page_uri": None},
        )
        pages = list(client.iter_v2010_pages(ACCOUNTS, "accounts", {"PageSize": 1}))
    assert pages == [[{"sid": "1"}], [{"sid": "2"}]]
    assert mock.request_history[1].url == f"{API}{ACCOUNTS}?Page=1&PageToken=x"


@pytest.mark.parametrize(
    "next_uri",
    ["https://evil.example/2010-04-01/Accounts.json?Page=1", "//evil.example/Accounts.json"],
)
def test_v2010_refuses_a_next_page_uri_on_another_host(next_uri: str) -> None:
    client = TwilioClient(API, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(f"{API}{ACCOUNTS}", json={"accounts": [], "next_page_uri": next_uri})
        evil = mock.get("https://evil.example/", json={})
        with pytest.raises(UnsafeUrlError, match="refusing next_page_uri on another host"):
            list(client.iter_v2010_pages(ACCOUNTS, "accounts"))
    assert evil.call_count == 0


def test_v2010_page_without_its_list_is_retried_then_malformed() -> None:
    client = TwilioClient(API, AUTH, FAST)
    with rm.Mocker() as mock:
        mock.get(f"{API}{ACCOUNTS}", json={"next_page_uri": None})
        with pytest.raises(TwilioAPIError, match="page has no 'accounts' list"):
            list(client.iter_v2010_pages(ACCOUNTS, "accounts"))
    assert mock.call_count == FAST.max_attempts


@pytest.mark.parametrize(
    ("base_url", "why"),
    [
        (None, "connection refused"),  # a loopback port nothing listens on
        ("https://no-such-host.invalid", "its host name does not resolve"),  # RFC 6761
    ],
    ids=["refused", "unknown-host"],
)
def test_a_server_that_is_not_there_fails_within_seconds_saying_what_to_check(
    monkeypatch: pytest.MonkeyPatch, base_url: str | None, why: str
) -> None:
    """Not the whole retry budget (minutes with the defaults): a few attempts, at most ~10 s of
    backoff, then one line that names the origin, the cause and what to check."""
    from conftest import free_port

    base_url = base_url or f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    client = TwilioClient(base_url, AUTH, RetryPolicy())  # the defaults: 10 attempts
    with pytest.raises(TwilioConnectionError) as failed:
        list(client.iter_pages("/v1/Services", "services"))
    message = str(failed.value)
    assert message.startswith(f"could not reach {base_url}: {why} (")
    assert "check that base_url is right and that the server is up" in message
    assert 0 < sum(waits) <= 10.0, waits
    assert len(waits) < RetryPolicy().max_attempts - 1


def test_a_server_that_answers_503_keeps_the_whole_retry_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    client = TwilioClient(BASE, AUTH, RetryPolicy())
    with rm.Mocker() as mock:
        mock.get(f"{BASE}/v1/Services", status_code=503, json={"code": 20503, "message": "down"})
        with pytest.raises(TwilioAPIError, match="HTTP 503"):
            list(client.iter_pages("/v1/Services", "services"))
    assert mock.call_count == RetryPolicy().max_attempts
    assert len(waits) == RetryPolicy().max_attempts - 1
