"""The `requests` session under dlt's `RESTClient`, without the per-request work Twilio never needs.

`RESTClient` drives a `requests.Session` in three steps per request: `prepare_request`,
`merge_environment_settings` and `send`. requests' general-purpose versions merge cookie jars and
settings key by key, read proxy settings from the environment again and walk the redirect
machinery. A load is CPU-bound on the client (W1: 2,041 requests, all in one process), and
measured on the emulator that bookkeeping was about a fifth of the CPU a page cost.

Twilio's REST API sets no cookies and does not redirect (the client refuses a redirect before it
could be followed), and proxies (`HTTP(S)_PROXY`, `NO_PROXY`) and the CA bundle are read once,
when the session is made. So GET requests are prepared directly (URL, params, headers, auth,
hooks) and sent by requests' own `send` with redirects off: connection pools, proxies, TLS
verification, timeouts and the mapping of transport errors stay requests'. Requests with a body
take requests' own path throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlencode

import requests
from requests.hooks import HOOKS
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies, requote_uri


class ApiSession(requests.Session):
    """A session for one API origin: no cookies, no redirects, environment read once.

    Args:
        base_url: The origin; `HTTP(S)_PROXY` / `NO_PROXY` are resolved for it once.
        timeout: Seconds to wait for a connection or a response, unless a call says otherwise.
        ca_bundle: Path of a CA bundle to verify TLS against (None: the default store).
    """

    def __init__(self, base_url: str, timeout: float, ca_bundle: str | None = None) -> None:
        super().__init__()
        self.timeout = timeout
        self.proxies.update(get_environ_proxies(base_url))
        if ca_bundle:
            self.verify = ca_bundle
        self.trust_env = False  # requests would re-read proxies and CA settings per request

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if request.data or request.json or request.files or request.cookies:
            return super().prepare_request(request)
        prepared = requests.PreparedRequest()
        prepared.method = (request.method or "GET").upper()
        prepared.url = _with_params(requote_uri(request.url), request.params)
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            cast(Mapping[str, str], self.headers)
        )
        if request.headers:
            headers.update(request.headers)
        prepared.headers = headers
        prepared.body = None
        prepared.hooks = {
            event: [*request.hooks.get(event, ()), *self.hooks.get(event, ())] for event in HOOKS
        }
        auth = request.auth or self.auth
        if auth is not None:
            prepared.prepare_auth(auth)
        return prepared

    def merge_environment_settings(  # the environment was read once, in __init__
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        return {
            "proxies": proxies or self.proxies,
            "stream": self.stream if stream is None else stream,
            "verify": self.verify if verify is None else verify,
            "cert": cert or self.cert,
        }

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("proxies", self.proxies)
        kwargs.setdefault("allow_redirects", False)  # never followed: see the module docstring
        response: requests.Response = super().send(request, **kwargs)
        return response


def _with_params(url: str, params: Any) -> str:
    if not params:
        return url
    if isinstance(params, str | bytes):
        query = params.decode() if isinstance(params, bytes) else params
    else:
        pairs = params.items() if isinstance(params, Mapping) else params
        query = urlencode([(k, v) for k, v in pairs if v is not None], doseq=True)
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"
