"""Errors the connector raises. Each renders as one line a scheduler log can show as it is."""

from __future__ import annotations

from collections.abc import Iterator


class TwilioConnectorError(Exception):
    """Base class: something the user must act on; `str()` is a complete one-line message."""


class ConfigurationError(TwilioConnectorError):
    """Invalid configuration, detected before any request is sent."""


class AuthenticationError(TwilioConnectorError):
    """Twilio rejected the credentials (HTTP 401, error 20003)."""


class NotFoundError(TwilioConnectorError):
    """A configured service or user does not exist."""


class UnsafeUrlError(TwilioConnectorError):
    """The API pointed us at a host we must not send credentials to."""


class PagingError(TwilioConnectorError):
    """A list's pages do not chain to an end: a next page leads back to a page already read in
    the same listing (it would page for ever), or to another list."""


class TwilioAPIError(TwilioConnectorError):
    """An error response from the API that retries did not cure.

    Attributes:
        status: HTTP status code.
        code: Twilio error code (e.g. 20404), when the body carried one.
        message: Twilio's message, or a summary of a body that was not Twilio's JSON.
        url: The request URL (no credentials are ever part of it).
    """

    def __init__(self, status: int, code: int | None, message: str, url: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        code_part = f" {code}" if code is not None else ""
        super().__init__(f"Twilio API error{code_part} (HTTP {status}) for {url}: {message}")


class TwilioConnectionError(TwilioConnectorError):
    """The API could not be reached, or kept failing, after every retry."""


class RunInProgressError(TwilioConnectorError):
    """Another run of the same pipeline holds its lock."""


class FirstLoadInProgressError(RunInProgressError):
    """Another pipeline's first load into the same dataset is unfinished (`first_load.py`)."""


class DestinationLockedError(TwilioConnectorError):
    """The DuckDB file stayed held open by another process for longer than `lock_timeout`."""


class ViewsNotRefreshedError(TwilioConnectorError):
    """The load succeeded but the analyst views could not be (re)created."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it, and so on (`__cause__`, else `__context__`), each once: dlt
    wraps the connector's and the drivers' errors in its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
