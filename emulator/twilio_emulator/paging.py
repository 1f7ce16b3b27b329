"""Twilio paging: PageSize / Page / PageToken, opaque signed tokens and the ``meta`` block.

Tokens are keyset cursors: ``"PA"`` (rows after a SID) or ``"PB"`` (rows before a SID, for
``previous_page_url``) followed by base64url of ``<sid>.<hmac>``. The HMAC covers the list's scope
(service/user), so a token cannot be replayed on another list or forged; anything that does not
verify is Twilio's 400 / 21481. Keyset cursors stay correct while rows are added or removed
between pages, like Twilio's.

``Page`` is client state only. A ``Page`` above 0 without a token is rejected with 400 / 70002
(the harder case for clients that compute pages instead of following ``next_page_url``).

Page-size policies for ``PageSize`` between the spec maximum (50, or 100 for services) and 1000:
``clamp`` (default) serves the spec maximum and echoes it in ``meta.page_size`` and every URL;
``strict`` answers 400 / 20007; ``lenient`` honours it. Outside 1..1000 (or not an integer) is
400 / 20007 under every policy.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import PageSizePolicy
from .errors import TwilioError, bad_request

DEFAULT_PAGE_SIZE = 50
ABSOLUTE_MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Cursor:
    """Decoded page token: rows strictly after (or before) ``sid``."""

    after: bool
    sid: str


@dataclass(frozen=True)
class PageRequest:
    """Validated paging parameters of one list request."""

    page_size: int
    page: int
    token: str | None
    cursor: Cursor | None


def _sign(scope: str, direction: str, sid: str, secret: bytes) -> str:
    mac = hmac.new(secret, f"{scope}\n{direction}\n{sid}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def encode_token(after: bool, sid: str, scope: str, secret: bytes) -> str:
    """An opaque token for the rows after/before ``sid`` in the list ``scope``."""
    direction = "A" if after else "B"
    raw = f"{sid}.{_sign(scope, direction, sid, secret)}".encode()
    return f"P{direction}" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str, secret: bytes) -> Cursor:
    """The cursor inside ``token``, or 400 / 21481 when it is not one of ours for this list."""
    invalid = bad_request(21481, "Invalid PageToken")
    if len(token) < 3 or token[:2] not in ("PA", "PB"):
        raise invalid
    direction = token[1]
    body = token[2:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid from None
    sid, _, signature = raw.rpartition(".")
    if not sid or not hmac.compare_digest(signature, _sign(scope, direction, sid, secret)):
        raise invalid
    return Cursor(after=direction == "A", sid=sid)


def _int_param(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def parse_page_request(
    query: Mapping[str, str],
    spec_max: int,
    policy: PageSizePolicy,
    scope: str,
    secret: bytes,
) -> PageRequest:
    """Validate PageSize / Page / PageToken under the page-size ``policy``."""
    size = DEFAULT_PAGE_SIZE
    if "PageSize" in query:
        parsed = _int_param(query["PageSize"])
        if parsed is None or not 1 <= parsed <= ABSOLUTE_MAX_PAGE_SIZE:
            raise TwilioError(
                400, 20007, f"PageSize must be an integer between 1 and {ABSOLUTE_MAX_PAGE_SIZE}"
            )
        size = parsed
    if size > spec_max:
        if policy == "strict":
            raise TwilioError(400, 20007, f"PageSize must be between 1 and {spec_max}")
        if policy == "clamp":
            size = spec_max

    page = 0
    if "Page" in query:
        parsed = _int_param(query["Page"])
        if parsed is None or parsed < 0:
            raise bad_request(20001, "Page must be a non-negative integer")
        page = parsed
    token = query.get("PageToken") or None
    if page > 0 and token is None:
        raise bad_request(70002, "PageToken is required when Page is greater than 0")
    cursor = decode_token(token, scope, secret) if token is not None else None
    return PageRequest(page_size=size, page=page, token=token, cursor=cursor)


def _same(value: Any) -> Any:
    return value


def window(
    items: Sequence[Any],
    key: Callable[[Any], Any] | None,
    req: PageRequest,
    parse: Callable[[str], Any] | None = None,
) -> tuple[int, int]:
    """``(start, end)`` of the requested page within ``items`` (sorted by ``key``).

    The cursor's value is compared with ``key(item)`` as it is (a SID), or as ``parse`` makes
    it (lists kept in another order: messages by index, conversations by creation date).
    """
    n = len(items)
    key = key or _same
    if req.cursor is None:
        return 0, min(n, req.page_size)
    bound = parse(req.cursor.sid) if parse is not None else req.cursor.sid
    if req.cursor.after:
        start = bisect.bisect_right(items, bound, key=key)
        return start, min(n, start + req.page_size)
    end = bisect.bisect_left(items, bound, key=key)
    return max(0, end - req.page_size), end


def page_meta(
    *,
    base: str,
    path: str,
    key: str,
    req: PageRequest,
    first_sid: str | None,
    last_sid: str | None,
    has_previous: bool,
    has_next: bool,
    scope: str,
    secret: bytes,
    query: str = "",
) -> dict[str, Any]:
    """Twilio's ``meta`` block with absolute URLs on ``base``.

    ``query`` (``"Order=desc&"``, already encoded, ending in ``&``) is the list's own parameters,
    repeated in every URL before the paging ones, as Twilio does.
    """
    size = req.page_size
    prefix = f"{base}{path}?{query}PageSize={size}&Page="
    url = f"{prefix}{req.page}" + (f"&PageToken={req.token}" if req.token else "")
    next_url = None
    if has_next and last_sid is not None:
        next_url = f"{prefix}{req.page + 1}&PageToken={encode_token(True, last_sid, scope, secret)}"
    previous_url = None
    if has_previous and first_sid is not None:
        token = encode_token(False, first_sid, scope, secret)
        previous_url = f"{prefix}{max(0, req.page - 1)}&PageToken={token}"
    return {
        "page": req.page,
        "page_size": size,
        "first_page_url": f"{prefix}0",
        "previous_page_url": previous_url,
        "url": url,
        "next_page_url": next_url,
        "key": key,
    }
