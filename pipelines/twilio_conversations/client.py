"""The one place that speaks HTTP: auth, paging, retries, host pinning and Twilio's errors.

Built on dlt's `RESTClient` and `JSONLinkPaginator` (Twilio pages carry an absolute
`meta.next_page_url`) over a `requests` session trimmed to what one API origin needs
(`transport.py`). What is added here, and why:

* Retries use full-jitter exponential backoff and honour `Retry-After`: dlt's retrying client
  has no jitter, so parallel workers that hit a 429 together would retry together.
* Every response passes one hook that counts it, turns Twilio's error body into a one-line
  error and rejects bodies that cannot be Twilio JSON (an HTML page from a proxy, an empty or
  truncated 200), so they are retried and never parsed as data.
* `next_page_url` must stay on the configured scheme, host and port: credentials are never sent
  anywhere else.
* One session per worker thread: `requests.Session` is not documented as thread-safe, and
  per-thread sessions keep one warm keep-alive connection each.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from dlt.common import logger as dlt_logger
from dlt.common.jsonpath import compile_path
from dlt.sources.helpers.rest_client.auth import HttpBasicAuth
from dlt.sources.helpers.rest_client.client import RESTClient
from dlt.sources.helpers.rest_client.paginators import JSONLinkPaginator
from jsonpath_ng import JSONPath
from tenacity import RetryCallState, Retrying, retry_any, retry_if_exception_type
from tenacity.stop import stop_after_attempt

from .errors import (
    AuthenticationError,
    ConfigurationError,
    TwilioAPIError,
    TwilioConnectionError,
    TwilioConnectorError,
    UnsafeUrlError,
)
from .settings import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUEST_BACKOFF_FACTOR,
    DEFAULT_REQUEST_MAX_ATTEMPTS,
    DEFAULT_REQUEST_MAX_RETRY_DELAY,
    DEFAULT_REQUEST_TIMEOUT,
)
from .throttle import AdaptiveLimit
from .transport import ApiSession

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "twilio-conversations-dlt/0.1"


class _RetryableResponseError(requests.HTTPError):
    """A response worth another attempt (429, 5xx, or a 200 that is not Twilio JSON)."""


class _ErrorResponse(requests.HTTPError):
    """A final error response; translated to a `TwilioConnectorError` by the client."""


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_response(self, status: int) -> None:
        with self._lock:
            self.requests += 1
            self.statuses[status] += 1

    def record_retry(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] += 1


def validate_base_url(base_url: str) -> str:
    """Return the base URL without a trailing slash, or raise if it is unusable or unsafe.

    Plain `http://` is accepted only for loopback hosts (the emulator, tunnels in tests):
    anywhere else it would send credentials in clear text. Errors never repeat the whole value,
    which may hold a secret pasted by mistake; they name its scheme and host at most.
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
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {origin} uses plain http; only https is allowed, except on loopback"
        )
    if parts.query or parts.fragment or parts.path.strip("/"):
        raise ConfigurationError(f"base_url {origin} must be scheme and host only, {example}")
    return f"{parts.scheme}://{parts.netloc}"


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


# dlt compiles a JSON path string on every use (once per page for the data selector, once per
# list for the paginator); compiled once here, that was about a third of the CPU of a run.
_NEXT_PAGE_URL_PATH = compile_path("meta.next_page_url")
_LIST_PATHS: dict[str, JSONPath] = {}


def _list_path(key: str) -> JSONPath:
    path = _LIST_PATHS.get(key)
    if path is None:
        path = _LIST_PATHS.setdefault(key, compile_path(key))
    return path


class PinnedJSONLinkPaginator(JSONLinkPaginator):
    """Follows `meta.next_page_url`, refusing any URL off the configured origin."""

    def __init__(self, base_url: str) -> None:
        super().__init__(next_url_path=_NEXT_PAGE_URL_PATH)
        self._origin = _origin(base_url)

    def __str__(self) -> str:
        # dlt formats this into a log line after every list, logged or not; the compiled path's
        # own string is built by walking it (~1 % of a page's CPU).
        return f"{type(self).__name__} at {id(self):x}: next_url_path: meta.next_page_url"

    def update_request(self, request: requests.Request) -> None:
        next_url = self._next_reference
        if next_url and urlsplit(next_url).scheme and _origin(next_url) != self._origin:
            scheme, host, port = self._origin
            raise UnsafeUrlError(
                f"refusing next_page_url on another host: {_strip_query(next_url)} "
                f"(configured {scheme}://{host}:{port})"
            )
        super().update_request(request)


class _RESTClient(RESTClient):
    """dlt's `RESTClient`, formatting its per-request INFO line only when INFO is logged.

    dlt sanitizes the URL (parsing it) for that line on every request, logged or not: about 3 %
    of a page's CPU when dlt logs at its default level, WARNING.
    """

    def _log_request(self, request: requests.Request, prepared_url: str) -> None:
        if dlt_logger.LOGGER is not None and dlt_logger.LOGGER.isEnabledFor(logging.INFO):
            super()._log_request(request, prepared_url)


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


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


class _JitteredBackoff:
    """tenacity wait: `Retry-After` when the server sent one, else full-jitter exponential."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None)
        if response is not None:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                return min(retry_after, self._policy.max_delay)
        ceiling = min(self._policy.max_delay, self._policy.backoff_factor * 2**state.attempt_number)
        return random.uniform(0, ceiling)


def _twilio_error_fields(response: requests.Response) -> tuple[int | None, str]:
    """Twilio's `code` and `message` from an error body; a short summary if it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and "message" in body:
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body["message"])
    content_type = response.headers.get("Content-Type", "unknown")
    return None, f"{response.reason or 'error'} (non-JSON body, {content_type})"


def _parse_once(response: requests.Response, list_key: str | None) -> None:
    """Decode a 2xx body once, check it is what Twilio sends, and make `.json()` reuse it.

    Runs inside the retry loop, so an HTML page from a proxy, an empty or truncated body, or a
    JSON object without the list and its `meta` is retried, and in the end reported, but never
    read as a (possibly empty) page. dlt's paginator and data selector each call
    `response.json()`; serving the decoded body from here also halves the JSON decoding.
    """
    content_type = response.headers.get("Content-Type")
    if content_type is not None and "json" not in content_type:
        raise _RetryableResponseError(f"body is {content_type}, not JSON", response=response)
    try:
        body = orjson.loads(response.content)  # several times faster than the json module
    except ValueError:
        raise _RetryableResponseError("body is not valid JSON", response=response) from None
    if not isinstance(body, dict):
        raise _RetryableResponseError("body is not a JSON object", response=response)
    if list_key is not None:
        meta = body.get("meta")
        if not isinstance(body.get(list_key), list) or not isinstance(meta, dict):
            raise _RetryableResponseError(
                f"page has no {list_key!r} list and 'meta' object", response=response
            )
    response.json = lambda *args, **kwargs: body  # type: ignore[method-assign]


class TwilioClient:
    """Authenticated, retrying, host-pinned access to the Conversations API.

    Args:
        base_url: Scheme and host, e.g. `https://conversations.twilio.com`.
        auth: (username, password) for HTTP Basic: Account SID + token or API key + secret.
        retry: Retry budget per request.
        stats: Counters shared with the run summary.
        max_in_flight: Most requests in flight at once; halved on each 429 and regrown slowly.
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
        self._auth = HttpBasicAuth(*auth)
        self._local = threading.local()

    # -- public API -------------------------------------------------------------------------

    def iter_pages(
        self, path: str, key: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the records of each page of a list, following `meta.next_page_url` to the end.

        Raises:
            AuthenticationError: On HTTP 401.
            TwilioAPIError: On any other error response that retries did not cure.
            TwilioConnectionError: When the server stayed unreachable.
            UnsafeUrlError: When a next page lives on another host.
        """
        client = self._rest_client()
        pages = client.paginate(
            path,
            params=params,
            paginator=PinnedJSONLinkPaginator(self.base_url),
            data_selector=_list_path(key),
            hooks={"response": [partial(self._on_response, list_key=key)]},
        )
        with self._translated_errors(path):
            for page in pages:
                yield list(page)

    def get(self, path: str) -> dict[str, Any]:
        """GET one JSON object (e.g. a single user)."""
        with self._translated_errors(path):
            response = self._rest_client().get(path, hooks={"response": [self._on_response]})
            body: dict[str, Any] = response.json()
            return body

    # -- internals --------------------------------------------------------------------------

    def _rest_client(self) -> RESTClient:
        client: RESTClient | None = getattr(self._local, "client", None)
        if client is None:
            client = _RESTClient(
                base_url=self.base_url,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                auth=self._auth,
                session=self._new_session(),
            )
            self._local.client = client
        return client

    def _new_session(self) -> requests.Session:
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        session = ApiSession(self.base_url, self.retry.timeout, ca_bundle)
        retrying = Retrying(
            wait=_JitteredBackoff(self.retry),
            retry=retry_any(
                retry_if_exception_type(
                    (
                        _RetryableResponseError,
                        requests.ConnectionError,
                        requests.Timeout,
                        requests.exceptions.ChunkedEncodingError,
                    )
                )
            ),
            stop=stop_after_attempt(self.retry.max_attempts),
            before_sleep=self._before_retry,
            reraise=True,
        )
        send: Callable[..., requests.Response] = session.send

        def send_in_slot(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            # Each attempt holds a slot; waiting out a backoff does not.
            with self.concurrency.slot():
                return send(request, **kwargs)

        session.send = retrying.wraps(send_in_slot)  # type: ignore[method-assign]
        return session

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None)
        reason = str(response.status_code) if response is not None else type(exc).__name__
        self.stats.record_retry(reason)

    def _on_response(
        self, response: requests.Response, *args: Any, list_key: str | None = None, **kwargs: Any
    ) -> None:
        self.stats.record_response(response.status_code)
        status = response.status_code
        if status == 429:
            self.concurrency.throttled()
        elif status < 400:
            self.concurrency.succeeded()
        if 300 <= status < 400:
            # Twilio's API does not redirect; following one could carry credentials elsewhere.
            location = response.headers.get("Location", "")
            target = _strip_query(location) if urlsplit(location).scheme else location or "?"
            raise UnsafeUrlError(f"refusing to follow a redirect (HTTP {status}) to {target}")
        if status in RETRY_STATUSES:
            raise _RetryableResponseError(f"HTTP {status}", response=response)
        if status >= 400:
            raise _ErrorResponse(f"HTTP {status}", response=response)
        _parse_once(response, list_key)

    @contextmanager
    def _translated_errors(self, path: str) -> Iterator[None]:
        try:
            yield
        except (requests.RequestException, json.JSONDecodeError) as exc:
            raise self._translate(exc, path) from None

    def _translate(self, exc: Exception, path: str) -> TwilioConnectorError:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if isinstance(exc, json.JSONDecodeError):  # requests' own JSONDecodeError included
            return TwilioAPIError(200, None, f"response is not valid JSON ({exc.msg})", url)
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            response = exc.response
            url = _strip_query(response.url or url)
            code, message = _twilio_error_fields(response)
            if response.status_code == 401:
                return AuthenticationError(
                    f"authentication failed: Twilio rejected the credentials (HTTP 401, "
                    f"error {code or 20003}) at {self.base_url}; check account_sid/auth_token "
                    "or api_key_sid/api_key_secret"
                )
            if response.status_code < 400:
                message = f"malformed response body: {exc}"
            return TwilioAPIError(response.status_code, code, message, url)
        return TwilioConnectionError(
            f"could not get {_strip_query(url)} after {self.retry.max_attempts} attempts: "
            f"{type(exc).__name__}"
        )
