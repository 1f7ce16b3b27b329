"""A client that hangs up before its response is written (a killed run, a timeout) costs the
emulator a debug line, not a traceback on stderr; any other error in a handler still shows."""

from __future__ import annotations

from typing import Any

import pytest


def raised_in_handler(server: Any, error: BaseException) -> None:
    """What socketserver does with an exception a request's handler raised."""
    try:
        raise error
    except BaseException:
        server.handle_error(None, ("127.0.0.1", 40000))


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError()])
def test_a_client_gone_away_prints_nothing(
    emulator: Any, error: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    raised_in_handler(emulator._server, error)
    assert capsys.readouterr().err == ""


def test_another_error_still_shows(emulator: Any, capsys: pytest.CaptureFixture[str]) -> None:
    raised_in_handler(emulator._server, ValueError("a bug in a handler"))
    assert "ValueError: a bug in a handler" in capsys.readouterr().err
