"""Twilio's error envelope and the errors the emulator raises.

Store operations raise :class:`TwilioError`; the HTTP layer turns it into Twilio's JSON body
``{"code", "message", "more_info", "status"}``. Python callers of the store see the same
exception, which keeps the two faces of the emulator consistent.
"""

from __future__ import annotations

from typing import Any

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


class TwilioError(Exception):
    """An API error with Twilio's HTTP status, error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body Twilio sends for this error."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }


class NotFound(TwilioError):
    """404 / 20404. The HTTP layer rewrites the message with the requested path, as Twilio does."""

    def __init__(self, what: str) -> None:
        super().__init__(404, 20404, f"The requested resource {what} was not found")


def bad_request(code: int, message: str) -> TwilioError:
    """400 with the given Twilio code."""
    return TwilioError(400, code, message)


def conflict(code: int, message: str) -> TwilioError:
    """409 with the given Twilio code (duplicates)."""
    return TwilioError(409, code, message)


def missing_param(name: str) -> TwilioError:
    """400 / 20001, Twilio's wording for an absent required form field."""
    return TwilioError(400, 20001, f"Missing required parameter {name} in the post body")


def authenticate() -> TwilioError:
    """401 / 20003: wrong or missing credentials."""
    return TwilioError(401, 20003, "Authenticate")


def method_not_allowed(method: str) -> TwilioError:
    """405 / 20004."""
    return TwilioError(405, 20004, f"Method not allowed: {method}")
