"""The one place that speaks HTTP: auth, paging, retries, origin pinning and Twilio's errors.

A plain page loop, the shape of dlt's verified sources' helpers: GET a page, check and decode
its body once, yield its records, follow `meta.next_page_url` until it is null. Underneath is a
`requests` session with requests' own `HTTPAdapter` (`transport.py`), driven only through its
public API (`Request.prepare`, `merge_environment_settings`, `send`).

* Each HTTP attempt holds a slot of the adaptive concurrency limit (`throttle.py`); waiting out
  a backoff does not. A 429 tells the limit which generation of slots it came from, so a burst
  of 429s from requests that were all in flight together backs the pool off once.
* Retries: 429, 5xx, connection errors, timeouts, bodies cut short, and 200s that are not a
  Twilio page (an HTML page from a proxy, an empty or truncated body, JSON without the list and
  its `meta`). Full-jitter exponential backoff, or `Retry-After` when the server sends one:
  parallel workers that hit a 429 together must not retry together.
* Credentials go only to the configured origin: every URL is judged as it will be sent (after
  `next_page_url` is resolved against the URL of the page that carried it and the request is
  prepared), by two URL parsers that must agree; a `next_page_url` with characters outside
  RFC 3986 (whitespace, backslashes) or with user info is refused outright. Redirects are never
  followed.
* Errors leave as the one-line types of `errors.py`.
* One session per worker thread: `requests.Session` is not documented as thread-safe, and
  per-thread sessions keep one warm keep-alive connection each.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import orjson
import requests
from requests.auth import HTTPBasicAuth
from urllib3.util import parse_url

from .errors import (
    AuthenticationError,
    ConfigurationError,
    PagingError,
    TwilioAPIError,
    TwilioConnectionError,
    TwilioConnectorError,
    UnsafeUrlError,
    causes,
)
from .settings import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUEST_BACKOFF_FACTOR,
    DEFAULT_REQUEST_MAX_ATTEMPTS,
    DEFAULT_REQUEST_MAX_RETRY_DELAY,
    DEFAULT_REQUEST_TIMEOUT,
)
from .throttle import AdaptiveLimit, Ticket
from .transport import ApiSession

__all__ = [
    "RETRY_STATUSES",
    "USER_AGENT",
    "RequestStats",
    "RetryPolicy",
    "TwilioAPIError",
    "TwilioClient",
    "validate_base_url",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "twilio-conversations-dlt/0.1"

#: Transport errors worth another attempt: refused or dropped connections, timeouts, a body cut
#: short or undecodable (`requests.ConnectionError` covers read timeouts mid-body).
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

#: Seconds of backoff a request spends on a connection refused or a host name that does not
#: resolve before the run fails: nothing listens at `base_url`, or it names the wrong host, and
#: the whole retry budget (minutes) would only hide that. A proxy that restarts is back sooner.
UNREACHABLE_PATIENCE_S = 10.0

#: Characters RFC 3986 allows in a URI reference (percent-encoded octets included). Anything
#: else (whitespace, control characters, backslashes, non-ASCII) is spelled differently by
#: different URL parsers, and the difference decides which host gets the credentials.
_URI_REFERENCE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")

_log = logging.getLogger(__name__)
_sleep = time.sleep  # a module attribute, so tests can record the waits


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries before the run fails.

    Attributes:
        max_attempts: Attempts per request, the first included.
        backoff_factor: Seconds; the n-th wait is uniform in [0, factor * 2**n] (full jitter).
        max_delay: Cap on one wait, `Retry-After` included.
        timeout: Seconds to wait for a connection or for the response.
    """

    max_attempts: int = DEFAULT_REQUEST_MAX_ATTEMPTS
    backoff_factor: float = DEFAULT_REQUEST_BACKOFF_FACTOR
    max_delay: float = DEFAULT_REQUEST_MAX_RETRY_DELAY
    timeout: float = DEFAULT_REQUEST_TIMEOUT


@dataclass
class RequestStats:
    """Thread-safe counters of what went over the wire, for the run summary."""

    requests: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    by_stream: Counter[str] = field(default_factory=Counter)  # responses per `stream_of` name
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_response(self, status: int, url: str = "") -> None:
        stream = stream_of(url)  # outside the lock: the fetch threads share it
        with self._lock:
            self.requests += 1
            self.statuses[status] += 1
            self.by_stream[stream] += 1

    def record_retry(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] += 1


# The list a request reads, from its path's shape (IDs stripped): for the summary's requests
# per stream. A single record (`.../Users/{US}`) counts with its list.
_STREAMS = {
    ("v1", "Services"): "services",
    ("v1", "Services", "*", "Users"): "users",
    ("v1", "Services", "*", "Users", "*"): "users",
    ("v1", "Services", "*", "Users", "*", "Conversations"): "user_conversations",
    ("v1", "Services", "*", "Conversations"): "conversations",
    ("2010-04-01", "Accounts.json"): "accounts",
}


def stream_of(url: str) -> str:
    """`user_conversations` for `.../Services/IS../Users/US../Conversations?PageSize=50`."""
    parts = urlsplit(url).path.strip("/").split("/")
    if parts[0] == "v1":
        parts[2::2] = ["*"] * len(parts[2::2])  # the SIDs (IS…, US…) between the names
    return _STREAMS.get(tuple(parts), "other")


def validate_base_url(base_url: str) -> str:
    """Return the base URL without a trailing slash, or raise if it is unusable or unsafe.

    Plain `http://` is accepted only for loopback hosts (the emulator, tunnels in tests):
    anywhere else it would send credentials in clear text. Errors never repeat the whole value,
    which may hold a secret pasted by mistake; they name its scheme, host, port and path at most.
    """
    example = "e.g. https://conversations.twilio.com"
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigurationError(f"base_url is not a valid URL ({example})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an absolute URL with scheme and host, {example}"
        )
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not contain credentials")
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {origin} uses plain http; only https is allowed, except on loopback"
        )
    if parts.query or parts.fragment or parts.path.strip("/"):
        extra = repr(parts.path) if parts.path.strip("/") else "its query"
        raise ConfigurationError(
            f"base_url {_shown(base_url.strip())} must be scheme and host only "
            f"(remove {extra}), {example}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# -- origins -------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Unsafe(Exception):
    """Why a URL is not sent: the reason completes "refusing <what> ..."."""


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an absolute URL as both urllib and urllib3 read it.

    requests hands `urlsplit`'s reading to urllib3's pool manager and urllib3's own reading to a
    proxy; a URL the two read differently, or that carries user info, is never sent.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        other = parse_url(url)
    except ValueError:  # urllib3's LocationParseError is a ValueError
        raise _Unsafe("that is not a valid URL") from None
    if "@" in parts.netloc or parts.username is not None or other.auth:
        raise _Unsafe("with user info in it")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = port or _DEFAULT_PORTS.get(scheme)
    other_host = (other.host or "").lower().removeprefix("[").removesuffix("]")
    other_scheme = (other.scheme or "").lower()
    other_port = other.port or _DEFAULT_PORTS.get(other_scheme)
    if (scheme, host, port) != (other_scheme, other_host, other_port) or not host:
        raise _Unsafe("that URL parsers read differently")
    return scheme, host, port


def _shown(url: str, query: bool = False) -> str:
    """Scheme, host, port and path of a URL for a message: no user info, one line; the query
    only with `query` (a page's `PageToken` tells two pages of a list apart)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return ascii(url[:120])
    netloc = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme}://{netloc}" + (f":{port}" if port else "") + parts.path
    if query and parts.query:
        shown += f"?{parts.query[:200]}"
    return shown if shown.isprintable() and shown.isascii() else ascii(shown[:200])


def _page_identity(url: str) -> tuple[str, ...]:
    """What makes a page of a list the same page: its `PageToken` when it has one (Twilio's
    position in the list; `Page` is only the client's count), else its path and query with the
    parameters sorted and a missing `Page` read as the first, 0."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    tokens = [value for name, value in params if name == "PageToken"]
    if tokens:
        return ("PageToken", *tokens)
    if not any(name == "Page" for name, _ in params):
        params.append(("Page", "0"))
    return (unquote(parts.path), *sorted(f"{name}={value}" for name, value in params))


def _keyed(records: list[Any], key: str, url: str) -> list[dict[str, Any]]:
    """The page's records, if each is an object with its key: a record without one could be
    neither stored nor told apart from another (not retried: a server that sends it once sends
    it again)."""
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or not isinstance(record.get(key), str) or not record[key]:
            raise TwilioAPIError(
                200, None, f"malformed page: record {number} has no {key!r}", _shown(url)
            )
    return records


class _Trail:
    """The pages one listing has read, so that a next page that leads back to one of them
    (a server's paging loop) or off to another list stops the run with one line instead of
    paging for ever. One short tuple a page: a user's conversations are a few dozen pages at
    most, a million users' listing 20,000 (a few megabytes)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self._read: set[tuple[str, ...]] = set()

    def read(self, url: str) -> None:
        if self.first is None:
            self.first = url
        self._read.add(_page_identity(url))

    def check(self, next_url: str, what: str) -> None:
        first = self.first or next_url
        listing = _shown(first)
        if unquote(urlsplit(next_url).path) != unquote(urlsplit(first).path):
            raise PagingError(
                f"the list {listing} gave a {what} to another list: {_shown(next_url)}"
            )
        if _page_identity(next_url) in self._read:
            raise PagingError(
                f"the list {listing} loops: its {what} leads back to a page already read, "
                f"{_shown(next_url, query=True)}"
            )


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _twilio_error_fields(response: requests.Response) -> tuple[int | None, str]:
    """Twilio's `code` and `message` from an error body; a short summary if it is not JSON."""
    try:
        body = orjson.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, Mapping) and "message" in body:
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body["message"])
    content_type = response.headers.get("Content-Type", "unknown")
    return None, f"{response.reason or 'error'} (non-JSON body, {content_type})"


#: Prefix of a `list_key` that names a v2010 page's list (see `_decode`).
V2010_LIST = "v2010:"


class _Malformed(Exception):
    """A 2xx body that is not what Twilio sends."""


def _decode(response: requests.Response, list_key: str | None) -> dict[str, Any]:
    """The body of a 2xx response as a Twilio object (or page, with `list_key`), or raise.

    An HTML page from a proxy, an empty or truncated body, or a JSON object without the list and
    its `meta` is never read as a (possibly empty) page. A `list_key` starting with `v2010:` is
    a page of Twilio's REST API v2010 (`Accounts.json`): the list and `next_page_uri` at the top
    level, no `meta`.
    """
    content_type = response.headers.get("Content-Type")
    if content_type is not None and "json" not in content_type:
        raise _Malformed(f"body is {content_type}, not JSON")
    try:
        body = orjson.loads(response.content)  # several times faster than the json module
    except ValueError:
        raise _Malformed("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Malformed("body is not a JSON object")
    if list_key is not None and list_key.startswith(V2010_LIST):
        key = list_key.removeprefix(V2010_LIST)
        if not isinstance(body.get(key), list):
            raise _Malformed(f"page has no {key!r} list")
        next_uri = body.get("next_page_uri")
        if next_uri is not None and not isinstance(next_uri, str):
            raise _Malformed("next_page_uri is neither a string nor null")
    elif list_key is not None:
        meta = body.get("meta")
        if not isinstance(body.get(list_key), list) or not isinstance(meta, dict):
            raise _Malformed(f"page has no {list_key!r} list and 'meta' object")
        next_url = meta.get("next_page_url")
        if next_url is not None and not isinstance(next_url, str):
            raise _Malformed("meta.next_page_url is neither a string nor null")
        if meta.get("key", list_key) != list_key:
            raise _Malformed(f"meta.key names the list {meta['key']!r}, not {list_key!r}")
    return body


class TwilioClient:
    """Authenticated, retrying, origin-pinned access to the Conversations API.

    Args:
        base_url: Scheme and host, e.g. `https://conversations.twilio.com`.
        auth: (username, password) for HTTP Basic: Account SID + token or API key + secret.
        retry: Retry budget per request.
        stats: Counters shared with the run summary.
        max_in_flight: Most requests in flight at once; cut to 70 % once per burst of 429s and
            regrown by one per round of successes (see `throttle.AdaptiveLimit`).
    """

    def __init__(
        self,
        base_url: str,
        auth: tuple[str, str],
        retry: RetryPolicy | None = None,
        stats: RequestStats | None = None,
        max_in_flight: int = DEFAULT_MAX_WORKERS,
    ) -> None:
        self.base_url = validate_base_url(base_url)
        self.retry = retry or RetryPolicy()
        self.stats = stats or RequestStats()
        self.concurrency = AdaptiveLimit(max_in_flight)
        try:
            self._origin = _origin(self.base_url)
        except _Unsafe as unsafe:
            raise ConfigurationError(f"base_url {unsafe}: {_shown(self.base_url)}") from None
        self._auth = HTTPBasicAuth(*auth)
        self._local = threading.local()

    # -- public API -------------------------------------------------------------------------

    def iter_pages(
        self,
        path: str,
        key: str,
        params: dict[str, Any] | None = None,
        first: bool = False,
        record_key: str = "sid",
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the records of each page of a list, following `meta.next_page_url` to the end.

        `first`: each page takes the next free slot of the concurrency limit before other
        requests (for a listing that gates the rest of the run, see `AdaptiveLimit.slot`).
        `record_key`: the field that identifies a record; a record without it fails the run.

        Raises:
            AuthenticationError: On HTTP 401.
            TwilioAPIError: On any other error response that retries did not cure.
            TwilioConnectionError: When the server stayed unreachable.
            UnsafeUrlError: When a next page (or a redirect) points off the configured origin.
        """
        url, query, what = f"{self.base_url}{path}", params, "request URL"
        trail = _Trail()
        while True:
            body, sent = self._get(url, query, key, what, first)
            trail.read(sent)
            yield _keyed(body[key], record_key, sent)
            next_url = body["meta"].get("next_page_url")
            if not next_url:
                return
            url = self._resolve_next(next_url, sent)
            trail.check(url, "next_page_url")
            query, what = None, "next_page_url"  # Twilio's next_page_url carries the query

    def iter_v2010_pages(
        self, path: str, key: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The same loop for a list of Twilio's REST API v2010 (`/2010-04-01/Accounts.json`):
        the records are top-level `key`, the next page is `next_page_uri`, a URI relative to
        the API's host (resolved against the URL of the page that carried it and pinned to the
        configured origin like every other URL), null on the last page."""
        url, query, what = f"{self.base_url}{path}", params, "request URL"
        trail = _Trail()
        while True:
            body, sent = self._get(url, query, V2010_LIST + key, what)
            trail.read(sent)
            yield _keyed(body[key], "sid", sent)
            next_uri = body.get("next_page_uri")
            if not next_uri:
                return
            url = self._resolve_next(next_uri, sent, "next_page_uri")
            trail.check(url, "next_page_uri")
            query, what = None, "next_page_uri"

    def get(self, path: str) -> dict[str, Any]:
        """GET one JSON object (e.g. a single user)."""
        body, _ = self._get(f"{self.base_url}{path}", None, None, "request URL")
        return body

    # -- internals --------------------------------------------------------------------------

    def _session(self) -> tuple[ApiSession, dict[str, Any]]:
        """This thread's session, and the environment's settings for the origin.

        `merge_environment_settings` (proxies, `NO_PROXY`, CA bundle) depends only on the host, and
        there is one: it is read once per session. Called per request it walks `os.environ` twice
        (docs/architecture.md, "Measurements behind the code"). A call of requests' public API,
        not an override.
        """
        local: tuple[ApiSession, dict[str, Any]] | None = getattr(self._local, "session", None)
        if local is None:
            session = ApiSession(USER_AGENT)
            settings = dict(session.merge_environment_settings(self.base_url, {}, None, None, None))
            local = (session, settings)
            self._local.session = local
        return local

    def _pinned(self, url: str, what: str) -> None:
        try:
            origin = _origin(url)
        except _Unsafe as unsafe:
            raise UnsafeUrlError(f"refusing {what} {unsafe}: {_shown(url)}") from None
        if origin != self._origin:
            raise UnsafeUrlError(
                f"refusing {what} on another host: {_shown(url)} (configured {self.base_url})"
            )

    def _resolve_next(self, next_url: str, current: str, what: str = "next_page_url") -> str:
        if not _URI_REFERENCE.fullmatch(next_url):
            raise UnsafeUrlError(
                f"refusing {what} with characters outside RFC 3986 (whitespace, "
                f"backslash, control or non-ASCII): {ascii(next_url[:120])}"
            )
        resolved = urljoin(current, next_url)
        self._pinned(resolved, what)
        return resolved

    def _get(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        list_key: str | None,
        what: str,
        first: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """One GET with retries: the decoded body and the URL it was sent to.

        The origin is checked on the prepared request, i.e. on the URL `send` gets.
        """
        self._pinned(url, what)  # before requests parses it (it raises on some spellings)
        session, settings = self._session()
        # Prepared on its own with the session's headers, not by `Session.prepare_request`,
        # which merges cookie jars and settings key by key for every request: the session holds
        # no cookies, auth or params to merge (figures: docs/architecture.md, "Measurements
        # behind the code").
        request = requests.Request(
            "GET", url, params=params, auth=self._auth, headers=session.headers
        ).prepare()
        sent = request.url or url
        self._pinned(sent, what)
        attempts = self.retry.max_attempts
        unreachable_waited = 0.0  # backoff spent on a refused connection or an unknown host
        for attempt in range(1, attempts + 1):
            response: requests.Response | None = None
            failure: TwilioConnectorError
            try:
                with self.concurrency.slot(first) as ticket:
                    response = session.send(
                        request, allow_redirects=False, timeout=self.retry.timeout, **settings
                    )
            except _TRANSIENT_ERRORS as exc:
                reason, failure = type(exc).__name__, self._unreachable(sent, exc)
                why = _unreachable_why(exc)
                if why is not None:
                    wait = self._backoff(attempt, None)
                    if unreachable_waited + wait > UNREACHABLE_PATIENCE_S or attempt == attempts:
                        raise self._not_listening(why, attempt, unreachable_waited) from None
                    unreachable_waited += wait
                    self._retry_after(wait, sent, reason, attempt)
                    continue
            except requests.RequestException as exc:
                raise TwilioConnectionError(
                    f"could not get {_shown(sent)}: {type(exc).__name__}"
                ) from None
            else:
                try:
                    return self._accept(response, ticket, list_key), sent
                except _Malformed as exc:
                    reason = str(response.status_code)
                    failure = TwilioAPIError(
                        response.status_code, None, f"malformed response body: {exc}", _shown(sent)
                    )
                except _Retryable:
                    reason, failure = str(response.status_code), self._api_error(response, sent)
            if attempt == attempts:
                raise failure
            self._retry_after(self._backoff(attempt, response), sent, reason, attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _retry_after(self, wait: float, url: str, reason: str, attempt: int) -> None:
        self.stats.record_retry(reason)
        _log.info(
            "waiting %.1f s to retry %s after %s (attempt %d of %d)",
            wait,
            _shown(url),
            reason,
            attempt,
            self.retry.max_attempts,
            extra={"retry_wait_s": wait, "retry_reason": reason},
        )
        _sleep(wait)

    def _not_listening(self, why: str, attempts: int, waited: float) -> TwilioConnectionError:
        return TwilioConnectionError(
            f"could not reach {self.base_url}: {why} ({attempts} attempt(s) in {waited:.0f} s); "
            "check that base_url is right and that the server is up (the emulator: "
            "`twilio-emulator`; a proxy, if one is configured)"
        )

    def _accept(
        self, response: requests.Response, ticket: Ticket, list_key: str | None
    ) -> dict[str, Any]:
        """Count a response, feed the limiter, and return its body or raise what it means."""
        status = response.status_code
        self.stats.record_response(status, response.url or "")
        if status == 429:
            self.concurrency.throttled(ticket)
        elif status < 400:
            self.concurrency.succeeded(ticket)
        if 300 <= status < 400:
            # Twilio's API does not redirect; following one could carry credentials elsewhere.
            location = response.headers.get("Location", "")
            target = _shown(location) if urlsplit(location).scheme else ascii(location[:120])
            raise UnsafeUrlError(f"refusing to follow a redirect (HTTP {status}) to {target}")
        if status in RETRY_STATUSES:
            raise _Retryable
        if status >= 400:
            raise self._api_error(response, response.url or "")
        return _decode(response, list_key)

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        """`Retry-After` when the server sent one, else full-jitter exponential; both capped."""
        if response is not None:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                return min(retry_after, self.retry.max_delay)
        ceiling = min(self.retry.max_delay, self.retry.backoff_factor * 2**attempt)
        return random.uniform(0, ceiling)

    def _api_error(self, response: requests.Response, url: str) -> TwilioConnectorError:
        code, message = _twilio_error_fields(response)
        if response.status_code == 401:
            return AuthenticationError(
                f"authentication failed: Twilio rejected the credentials (HTTP 401, "
                f"error {code or 20003}) at {self.base_url}; check account_sid/auth_token "
                "or api_key_sid/api_key_secret"
            )
        return TwilioAPIError(response.status_code, code, message, _shown(url))

    def _unreachable(self, url: str, exc: Exception) -> TwilioConnectionError:
        return TwilioConnectionError(
            f"could not get {_shown(url)} after {self.retry.max_attempts} attempts: "
            f"{type(exc).__name__}"
        )


def _unreachable_why(exc: Exception) -> str | None:
    """ "connection refused" or "its host name does not resolve" where that is behind `exc`
    (requests wraps urllib3's error, which wraps the socket's), else None."""
    for cause in causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "its host name does not resolve"
    return None


class _Retryable(Exception):
    """A 429 or 5xx: worth another attempt."""
