"""Configuration objects: what data to generate and how the server behaves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Demo credentials: the emulator's own, they open nothing real.
DEMO_ACCOUNT_SID = "AC00000000000000000000000000000001"
DEMO_AUTH_TOKEN = "emulator-demo-auth-token"
DEMO_API_KEY_SID = "SK00000000000000000000000000000001"
DEMO_API_KEY_SECRET = "emulator-demo-api-key-secret"

#: Most subaccounts one emulator serves (Twilio's default limit per main account is 1,000).
MAX_SUBACCOUNTS = 1000
#: The ``status`` values of Twilio's v2010 Account resource.
ACCOUNT_STATUSES = ("active", "suspended", "closed")

PageSizePolicy = Literal["clamp", "strict", "lenient"]
PAGE_SIZE_POLICIES: tuple[PageSizePolicy, ...] = ("clamp", "strict", "lenient")


@dataclass(frozen=True)
class DataSpec:
    """Shape of the generated data set; the same spec always generates the same data.

    ``users`` is per service. With ``conversations_per_user`` set, every user belongs to exactly
    that many conversations (benchmarks); otherwise each user gets a mix of 0, a few (1-10), a
    moderate number (11-50) and more than 50 (up to ``max_conversations``) conversations.
    """

    seed: int = 7
    services: int = 3
    users: int = 40
    max_conversations: int = 120
    conversations_per_user: int | None = None

    def __post_init__(self) -> None:
        if self.services < 1:
            raise ValueError("services must be >= 1 (the default service always exists)")
        if self.users < 0 or self.max_conversations < 0:
            raise ValueError("users and max_conversations must be >= 0")
        if self.conversations_per_user is not None and self.conversations_per_user < 0:
            raise ValueError("conversations_per_user must be >= 0")


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the server needs. ``port=0`` picks a free port.

    ``fault_kinds`` is the mix used by ``fault_rate`` (``None`` = the default mix: 429 with and
    without Retry-After, 503, dropped connection). ``fault_seed`` defaults to ``data.seed``.
    ``public_url`` overrides the base of every ``*_url`` (default: the Host the client used).

    The account-wide concurrency limit (Twilio's 429 / 20429): ``account_concurrency`` requests
    may be served at once for the account (``None``, the default: no limit), ``other_traffic`` of
    them held permanently by the account's other clients (its production app), so a client gets
    ``account_concurrency - other_traffic``; requests beyond that are answered 429 at once, with
    ``Retry-After: limit_retry_after_s`` or (``None``, the default: Twilio does not promise it)
    without one. ``other_traffic`` also counts in ``Twilio-Concurrent-Requests`` without a limit.

    Several accounts (see :mod:`twilio_emulator.accounts`): ``subaccounts`` (default 0: one
    account, exactly as before) adds that many subaccounts of the account above, each with its
    own SID, Auth Token, data set (seed derived from ``data.seed`` and the account's index) and,
    with ``subaccount_api_keys``, its own API key. ``subaccount_statuses`` gives the first
    subaccounts a status other than "active" ("suspended" or "closed": listed by
    ``/2010-04-01/Accounts.json``, but their credentials are refused).
    """

    account_sid: str = DEMO_ACCOUNT_SID
    auth_token: str = DEMO_AUTH_TOKEN
    api_key_sid: str | None = None
    api_key_secret: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    latency_ms: float = 0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] | None = None
    fault_seed: int | None = None
    retry_after_s: int = 1
    slow_ms: float = 2000
    page_size_policy: PageSizePolicy = "clamp"
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    account_concurrency: int | None = None
    other_traffic: int = 0
    limit_retry_after_s: int | None = None
    subaccounts: int = 0
    subaccount_api_keys: bool = False
    subaccount_statuses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.page_size_policy not in PAGE_SIZE_POLICIES:
            raise ValueError(f"page_size_policy must be one of {PAGE_SIZE_POLICIES}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within 0..1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.account_concurrency is not None and self.account_concurrency < 1:
            raise ValueError("account_concurrency must be >= 1 (None: no limit)")
        if self.other_traffic < 0:
            raise ValueError("other_traffic must be >= 0")
        if self.limit_retry_after_s is not None and self.limit_retry_after_s < 0:
            raise ValueError("limit_retry_after_s must be >= 0 (None: no Retry-After)")
        if not 0 <= self.subaccounts <= MAX_SUBACCOUNTS:
            raise ValueError(f"subaccounts must be within 0..{MAX_SUBACCOUNTS}")
        if len(self.subaccount_statuses) > self.subaccounts:
            raise ValueError(
                f"subaccount_statuses has {len(self.subaccount_statuses)} entries "
                f"for {self.subaccounts} subaccount(s)"
            )
        for status in self.subaccount_statuses:
            if status not in ACCOUNT_STATUSES:
                raise ValueError(f"subaccount status must be one of {ACCOUNT_STATUSES}: {status!r}")
