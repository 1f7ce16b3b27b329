"""Fault injection: every kind observable, seeded sequences reproducible, latency applied."""

from __future__ import annotations

import json
import time

import pytest
import requests
from twilio_emulator import DataSpec, Emulator, EmulatorConfig, FaultKind, RequestGate

from .helpers import Starter, session_for

TINY = DataSpec(seed=3, services=1, users=5, max_conversations=60)


def _get(emu: Emulator, path: str = "/v1/Users") -> requests.Response:
    with session_for(emu) as session:
        return session.get(f"{emu.base_url}{path}", timeout=10)


def test_429_with_and_without_retry_after(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("429-retry-after")
    fresh_emu.faults.inject("429")
    first, second, third = (_get(fresh_emu) for _ in range(3))
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    assert first.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    assert second.status_code == 429 and "Retry-After" not in second.headers
    assert third.status_code == 200


@pytest.mark.parametrize(("kind", "status", "code"), [("503", 503, 20503), ("500", 500, 20500)])
def test_server_errors(fresh_emu: Emulator, kind: str, status: int, code: int) -> None:
    fresh_emu.faults.inject(kind)
    response = _get(fresh_emu)
    assert response.status_code == status and response.json()["code"] == code
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_dropped_connection_raises_connection_error(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("drop")
    with pytest.raises(requests.ConnectionError):
        _get(fresh_emu)
    assert _get(fresh_emu).status_code == 200
    assert fresh_emu.stats.snapshot().by_fault == {"drop": 1}


def test_dropped_connection_on_a_kept_alive_session(fresh_emu: Emulator) -> None:
    with session_for(fresh_emu) as session:
        assert session.get(f"{fresh_emu.base_url}/v1/Users").status_code == 200
        fresh_emu.faults.inject("drop")
        with pytest.raises(requests.ConnectionError):
            session.get(f"{fresh_emu.base_url}/v1/Users")
        assert session.get(f"{fresh_emu.base_url}/v1/Users").status_code == 200


def test_truncated_json_body(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("truncated")
    response = _get(fresh_emu)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_short_body_breaks_the_connection(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("short-body")
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        _get(fresh_emu)


def test_html_502_from_a_proxy(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("html-502")
    response = _get(fresh_emu)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert b"502 Bad Gateway" in response.content


def test_empty_200(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("empty-200")
    response = _get(fresh_emu)
    assert response.status_code == 200 and response.content == b""


def test_slow_fault_delays_the_answer(start: Starter) -> None:
    emu = start(EmulatorConfig(data=TINY, slow_ms=300))
    emu.faults.inject("slow")
    started = time.perf_counter()
    assert _get(emu).status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_injection_filters_on_path_and_counts(fresh_emu: Emulator) -> None:
    fresh_emu.faults.inject("503", count=2, path_contains="/Conversations")
    assert _get(fresh_emu, "/v1/Users").status_code == 200
    user = fresh_emu.users(fresh_emu.default_service_sid)[0]["sid"]
    path = f"/v1/Users/{user}/Conversations"
    assert [_get(fresh_emu, path).status_code for _ in range(3)] == [503, 503, 200]
    assert fresh_emu.faults.pending() == 0


def _fault_sequence(start: Starter, seed: int, n: int = 60) -> list[str]:
    emu = start(EmulatorConfig(data=TINY, fault_rate=0.5, fault_seed=seed))
    outcomes = []
    with session_for(emu) as session:
        for _ in range(n):
            try:
                response = session.get(f"{emu.base_url}/v1/Users", timeout=10)
                outcomes.append(f"{response.status_code}:{response.headers.get('Retry-After')}")
            except requests.ConnectionError:
                outcomes.append("dropped")
    return outcomes


def test_random_faults_are_reproducible_with_a_seed(start: Starter) -> None:
    first = _fault_sequence(start, seed=11)
    assert _fault_sequence(start, seed=11) == first
    assert _fault_sequence(start, seed=12) != first
    # The default mix: both 429 flavours, 503 and dropped connections, plus successes.
    assert {"200:None", "429:1", "429:None", "503:None", "dropped"} <= set(first)


def test_set_rate_with_kinds_and_reset(fresh_emu: Emulator) -> None:
    fresh_emu.faults.set_rate(1.0, kinds=["empty-200"])
    assert all(_get(fresh_emu).content == b"" for _ in range(3))
    assert [kind for _, _, kind in fresh_emu.faults.history] == [FaultKind.EMPTY_200] * 3
    fresh_emu.faults.reset()
    assert _get(fresh_emu).status_code == 200 and fresh_emu.faults.rate == 0.0
    with pytest.raises(ValueError):
        fresh_emu.faults.set_rate(1.5)
    with pytest.raises(ValueError):
        fresh_emu.faults.inject("teapot")


def test_latency_is_added_and_concurrency_still_scales(start: Starter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emu = start(EmulatorConfig(data=TINY, latency_ms=200))
    started = time.perf_counter()
    assert _get(emu).status_code == 200
    assert time.perf_counter() - started >= 0.2

    # The latency is slept in each request's own thread: requests overlap instead of queueing.
    # With a latency no request outlives, all 8 are seen in it at once (counted at the gate,
    # none ended); stopping the emulator then ends them (it hangs up on requests in latency).
    emu.latency_ms = 600_000
    emu.stats.reset()
    gate = emu.gate = RequestGate(open=True)  # counts arrivals only: they go on to the latency

    def dropped(_: int) -> bool:
        with session_for(emu) as session:
            try:
                session.get(f"{emu.base_url}/v1/Users", timeout=120)  # a guard against hangs
            except requests.ConnectionError:
                return True
        return False

    with ThreadPoolExecutor(8) as pool:
        outcomes = pool.map(dropped, range(8))
        try:
            assert gate.wait_for_arrivals(8, timeout=60), gate.arrivals  # a guard against hangs
            during = emu.stats.snapshot()
        finally:
            emu.stop()
        assert list(outcomes) == [True] * 8
    assert during.total == 0 and during.max_concurrent == 8, during
    # Each one ended by the stop, none served (its count may follow its client's hang-up).
    assert emu.stats.wait_for(lambda stats: stats.total == 8, timeout=30)
    assert emu.stats.snapshot().by_route == {"stopped": 8}
