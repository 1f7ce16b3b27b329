"""The account-wide concurrency limit: Twilio's 429 / 20429, other traffic, the header, stats.

Requests are held in flight deterministically with the emulator's test gate (``RequestGate``):
an admitted request waits there, holding its account slot, until the test opens it; a request the
limit rejects never reaches it. So while the gate is closed, every answer the test receives is a
rejection, and it arrives without anything being released. No sleeps, no timing assertions; the
generous ``timeout`` values only keep a broken emulator from hanging the test.
"""

from __future__ import annotations

import argparse
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, RequestGate, cli

from .helpers import Starter, session_for

TINY = DataSpec(seed=3, services=1, users=5, max_conversations=60)
TOO_MANY = {
    "code": 20429,
    "message": "Too Many Requests",
    "more_info": "https://www.twilio.com/docs/errors/20429",
    "status": 429,
}
TIMEOUT = 30


def _get(emu: Emulator, path: str = "/v1/Users") -> requests.Response:
    with session_for(emu) as session:
        return session.get(f"{emu.base_url}{path}", timeout=TIMEOUT)


def _concurrent(response: requests.Response) -> int:
    return int(response.headers["Twilio-Concurrent-Requests"])


def _assert_limit_429(response: requests.Response, concurrent: int, retry: str | None) -> None:
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == TOO_MANY
    assert response.headers.get("Retry-After") == retry
    assert _concurrent(response) == concurrent


@contextmanager
def _in_parallel(emu: Emulator, count: int) -> Iterator[queue.Queue[requests.Response]]:
    """Send ``count`` GETs at once, each on its own connection; answers arrive in the queue."""
    answers: queue.Queue[requests.Response] = queue.Queue()
    with ThreadPoolExecutor(count) as pool:
        futures: list[Future[None]] = [
            pool.submit(lambda: answers.put(_get(emu))) for _ in range(count)
        ]
        try:
            yield answers
        finally:
            if emu.gate is not None:
                emu.gate.open()  # never leave the pool waiting on a failed test
            for future in futures:
                future.result(timeout=TIMEOUT)


def _take(answers: queue.Queue[requests.Response], count: int) -> list[requests.Response]:
    return [answers.get(timeout=TIMEOUT) for _ in range(count)]


@pytest.mark.parametrize("retry_after", [None, 2])
def test_exactly_the_limit_is_served_and_the_rest_is_429_at_once(
    start: Starter, retry_after: int | None
) -> None:
    limit, sent = 3, 7
    emu = start(
        EmulatorConfig(data=TINY, account_concurrency=limit, limit_retry_after_s=retry_after)
    )
    gate = emu.gate = RequestGate()
    retry = None if retry_after is None else str(retry_after)
    with _in_parallel(emu, sent) as answers:
        # The gate is closed: whatever answers now was rejected without being served.
        for response in _take(answers, sent - limit):
            _assert_limit_429(response, limit + 1, retry)
        assert gate.wait_for_arrivals(limit, timeout=TIMEOUT)
        assert (gate.arrivals, gate.held, emu.stats.account_in_flight) == (limit, limit, limit)
        # A 429 skips the latency too: with 10 minutes of it, the answer still comes at once.
        emu.latency_ms = 600_000
        _assert_limit_429(_get(emu), limit + 1, retry)
        emu.latency_ms = 0
        gate.open()
        served = _take(answers, limit)
    assert [r.status_code for r in served] == [200] * limit
    assert sorted(_concurrent(r) for r in served) == [1, 2, 3]
    assert all("Retry-After" not in r.headers for r in served)
    snap = emu.stats.snapshot()
    assert snap.account_limit_429s == sent - limit + 1
    assert snap.peak_in_flight == limit
    assert snap.by_status == {200: limit, 429: sent - limit + 1}
    assert snap.by_route["account_limit"] == sent - limit + 1
    assert snap.by_fault == {}
    # Every slot is free again.
    again = _get(emu)
    assert again.status_code == 200 and _concurrent(again) == 1


def test_other_traffic_takes_its_share_of_the_slots(start: Starter) -> None:
    limit, other, sent = 5, 3, 6
    emu = start(EmulatorConfig(data=TINY, account_concurrency=limit, other_traffic=other))
    gate = emu.gate = RequestGate()
    with _in_parallel(emu, sent) as answers:
        for response in _take(answers, sent - (limit - other)):
            _assert_limit_429(response, limit + 1, None)
        assert gate.wait_for_arrivals(limit - other, timeout=TIMEOUT)
        assert gate.arrivals == limit - other
        gate.open()
        served = _take(answers, limit - other)
    assert [r.status_code for r in served] == [200, 200]
    assert sorted(_concurrent(r) for r in served) == [other + 1, other + 2]
    snap = emu.stats.snapshot()
    assert snap.peak_in_flight == limit  # the account's view: other traffic included
    assert snap.account_limit_429s == sent - (limit - other)
    # The share may change while running (a pattern): the whole limit frees up.
    emu.other_traffic = 0
    gate.close()
    with _in_parallel(emu, limit) as answers:
        assert gate.wait_for_arrivals(2 + limit, timeout=TIMEOUT)
        gate.open()
        assert [r.status_code for r in _take(answers, limit)] == [200] * limit


def test_other_traffic_holding_every_slot_leaves_only_429s(start: Starter) -> None:
    emu = start(EmulatorConfig(data=TINY, account_concurrency=2, other_traffic=2))
    with session_for(emu) as session:
        # A rejected request's body is still read: the kept-alive connection stays in step.
        posted = session.post(
            f"{emu.base_url}/v1/Services", data={"FriendlyName": "x" * 5000}, timeout=TIMEOUT
        )
        listed = session.get(f"{emu.base_url}/v1/Services", timeout=TIMEOUT)
    for response in (posted, listed):
        _assert_limit_429(response, 3, None)
    assert len(emu.store.services) == 1  # the POST was not processed
    snap = emu.stats.snapshot()
    assert snap.account_limit_429s == 2 and snap.peak_in_flight == 0


def test_latency_counts_as_in_flight(start: Starter) -> None:
    # One slot; the first request spends a minute in latency, the emulator's stop ends it.
    emu = start(EmulatorConfig(data=TINY, account_concurrency=1, latency_ms=60_000))
    gate = emu.gate = RequestGate(open=True)  # counts arrivals only: they go on to the latency
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_get, emu)
        assert gate.wait_for_arrivals(1, timeout=TIMEOUT)
        # The first request is in its latency, so it holds the only slot; the 429 itself comes
        # without latency (a minute of it would exceed TIMEOUT).
        _assert_limit_429(_get(emu), 2, None)
        assert emu.stats.account_in_flight == 1
        emu.stop()  # wakes the request out of its latency: it hangs up
        with pytest.raises(requests.ConnectionError):
            first.result(timeout=TIMEOUT)
    snap = emu.stats.snapshot()
    assert snap.account_limit_429s == 1 and snap.peak_in_flight == 1


def test_a_gate_with_holds_holds_only_the_paths_it_names(start: Starter) -> None:
    emu = start(EmulatorConfig(data=TINY))
    gate = emu.gate = RequestGate(holds=lambda path: path.endswith("/Conversations"))
    user = emu.users(emu.services()[0]["sid"])[0]
    with ThreadPoolExecutor(1) as pool:
        listing = pool.submit(_get, emu, "/v1/Users")
        assert listing.result(timeout=TIMEOUT).status_code == 200  # not named: not held
        conversations = pool.submit(_get, emu, f"/v1/Users/{user['sid']}/Conversations")
        assert gate.wait_for_arrivals(1, timeout=TIMEOUT)
        assert (gate.arrivals, gate.held, conversations.done()) == (1, 1, False)
        gate.open()
        assert conversations.result(timeout=TIMEOUT).status_code == 200
    assert gate.arrivals == 1  # the listing passed uncounted


def test_a_client_that_has_its_answer_may_send_the_next_request_at_once(start: Starter) -> None:
    """One slot serves a sequential keep-alive client: every answered request gave its slot back.

    The server frees the slot just *before* writing the answer, so this cannot race; the test
    does not prove that ordering, though (freeing it just after the write passes it as well).
    """
    emu = start(EmulatorConfig(data=TINY, account_concurrency=1))
    with session_for(emu) as session:
        answers = [session.get(f"{emu.base_url}/v1/Users", timeout=TIMEOUT) for _ in range(30)]
    assert [r.status_code for r in answers] == [200] * 30
    assert {_concurrent(r) for r in answers} == {1}
    assert emu.stats.snapshot().account_limit_429s == 0


def test_the_header_is_on_every_response(start: Starter) -> None:
    emu = start(EmulatorConfig(data=TINY, account_concurrency=10, other_traffic=2))
    service = emu.default_service_sid
    emu.faults.inject("503", path_contains="/Fault503")
    emu.faults.inject("429", path_contains="/Fault429")
    responses = {
        "list": _get(emu, "/v1/Users"),
        "fetch": _get(emu, f"/v1/Services/{service}"),
        "404": _get(emu, "/v1/Nope"),
        "401": requests.get(f"{emu.base_url}/v1/Users", timeout=TIMEOUT),
        "503": _get(emu, "/v1/Fault503"),
        "injected 429": _get(emu, "/v1/Fault429"),
    }
    assert {name: r.status_code for name, r in responses.items()} == {
        "list": 200,
        "fetch": 200,
        "404": 404,
        "401": 401,
        "503": 503,
        "injected 429": 429,
    }
    # One request at a time, plus the other traffic's 2.
    assert {name: _concurrent(r) for name, r in responses.items()} == dict.fromkeys(responses, 3)
    emu.other_traffic = 10  # now the account is full: the limit's own 429 carries it too
    _assert_limit_429(_get(emu), 11, None)
    snap = emu.stats.snapshot()
    assert snap.by_fault == {"503": 1, "429": 1}  # injected faults, counted apart
    assert snap.account_limit_429s == 1 and snap.by_status[429] == 2


def test_other_traffic_without_a_limit_only_shows_in_the_header(start: Starter) -> None:
    emu = start(EmulatorConfig(data=TINY, other_traffic=4))
    response = _get(emu)
    assert response.status_code == 200 and _concurrent(response) == 5


def test_no_limit_by_default(start: Starter) -> None:
    config = EmulatorConfig(data=TINY)
    assert (config.account_concurrency, config.other_traffic, config.limit_retry_after_s) == (
        None,
        0,
        None,
    )
    emu = start(config)
    gate = emu.gate = RequestGate()
    sent = 8
    with _in_parallel(emu, sent) as answers:
        assert gate.wait_for_arrivals(sent, timeout=TIMEOUT)  # all 8 in flight at once
        gate.open()
        served = _take(answers, sent)
    assert [r.status_code for r in served] == [200] * sent
    assert sorted(_concurrent(r) for r in served) == list(range(1, sent + 1))
    snap = emu.stats.snapshot()
    assert snap.account_limit_429s == 0 and snap.peak_in_flight == sent
    assert "account_limit" not in snap.by_route
    emu.stats.reset()
    snap = emu.stats.snapshot()
    assert (snap.account_limit_429s, snap.peak_in_flight) == (0, 0)


@pytest.mark.parametrize(
    "field", [{"account_concurrency": 0}, {"other_traffic": -1}, {"limit_retry_after_s": -1}]
)
def test_config_rejects_bad_values(field: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**field)  # type: ignore[arg-type]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_flags_map_to_the_config() -> None:
    config = cli.config_from_args(_parse())
    assert (config.account_concurrency, config.other_traffic, config.limit_retry_after_s) == (
        None,
        0,
        None,
    )
    config = cli.config_from_args(
        _parse("--account-concurrency=100", "--other-traffic=60", "--limit-retry-after=2")
    )
    assert (config.account_concurrency, config.other_traffic, config.limit_retry_after_s) == (
        100,
        60,
        2,
    )
    config = cli.config_from_args(_parse("--account-concurrency=5", "--limit-retry-after=none"))
    assert config.limit_retry_after_s is None


@pytest.mark.parametrize(
    "argv",
    [["--account-concurrency=0"], ["--other-traffic=-1"], ["--limit-retry-after=soon"]],
)
def test_cli_rejects_bad_limit_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)
