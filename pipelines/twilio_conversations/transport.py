"""The `requests` session the client drives: requests' own, configured, nothing overridden.

A plain `requests.Session` with requests' `HTTPAdapter` (no urllib3-level retries: the client
retries, with jitter and inside the concurrency limit). Proxies (`HTTP(S)_PROXY`, `NO_PROXY`) and
the CA bundle (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) come from the environment the way requests
reads them: the client calls `Session.merge_environment_settings` once per session (one origin,
so one answer) and passes the result to `send`.
Redirects are never followed: the client sends with `allow_redirects=False` and refuses a 3xx.

Earlier versions replaced `prepare_request`, `merge_environment_settings`, `send` and parts of
`HTTPAdapter` (pool caching, one-shot body reads) and patched private attributes. At Twilio's
latency they made no difference (docs/architecture.md, "Measurements behind the code"), so
they went; what the client still saves, it saves through requests' public API
(`TwilioClient._session`, `TwilioClient._get`).
"""

from __future__ import annotations

import requests


class ApiSession(requests.Session):
    """A `requests.Session` for the API: JSON accepted, our User-Agent, requests' default
    `HTTPAdapter` (connection pooling and keep-alive, no retries of its own).

    Args:
        user_agent: The `User-Agent` header sent with every request.
    """

    def __init__(self, user_agent: str) -> None:
        super().__init__()
        self.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
