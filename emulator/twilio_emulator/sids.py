"""Twilio-style identifiers: two-letter prefix + 32 lowercase hex digits (34 characters).

SIDs come from a caller-supplied ``random.Random`` so that the same seed always yields the
same data; request ids are random because nothing depends on them.
"""

from __future__ import annotations

import random
import re
import uuid

#: Prefixes used by the resources the emulator serves.
ACCOUNT = "AC"
API_KEY = "SK"
SERVICE = "IS"
USER = "US"
CONVERSATION = "CH"
PARTICIPANT = "MB"
MESSAGE = "IM"
ROLE = "RL"
REQUEST = "RQ"

_SID_RE = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")


def make_sid(prefix: str, rng: random.Random) -> str:
    """Return a new SID with ``prefix`` drawn from ``rng`` (deterministic for a seeded rng)."""
    return f"{prefix}{rng.getrandbits(128):032x}"


def is_sid(value: str, prefix: str | None = None) -> bool:
    """True when ``value`` looks like a SID (optionally with the given prefix)."""
    if _SID_RE.match(value) is None:
        return False
    return prefix is None or value.startswith(prefix)


def request_id() -> str:
    """A fresh ``Twilio-Request-Id`` value (``RQ`` + 32 hex)."""
    return REQUEST + uuid.uuid4().hex
