"""Deterministic, realistic demo data: services, users, conversations and memberships.

Everything is drawn from one ``random.Random(seed)`` in a fixed order, so a seed is a data set.
Generated timestamps lie before a fixed "now" derived from the seed; the store's logical clock
starts there, so later mutations are always newer than anything generated.

Speed matters (1,000,000 memberships in a few seconds): the per-membership loop makes two
random draws, formats one SID and builds one tuple, nothing more. Messages and non-user
participants are not generated here: :mod:`twilio_emulator.history` derives them from each
conversation when they are served, without drawing from ``rng`` (so adding them changed none of
the data above).
"""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from .config import DataSpec
from .model import Conversation, Membership, Service, User
from .sids import CONVERSATION, PARTICIPANT, ROLE, SERVICE, USER, make_sid

_EPOCH_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
DAY = 86_400
T = TypeVar("T")

FIRST = [
    "ana",
    "alex",
    "ben",
    "carla",
    "dev",
    "emma",
    "felix",
    "grace",
    "hugo",
    "ines",
    "jack",
    "kim",
    "liam",
    "maya",
    "noah",
    "olga",
    "pablo",
    "quinn",
    "rosa",
    "sam",
    "tara",
    "umar",
    "vera",
    "will",
    "xena",
    "yusuf",
    "zoe",
]
LAST = [
    "smith",
    "garcia",
    "chen",
    "novak",
    "okafor",
    "silva",
    "muller",
    "rossi",
    "kowalski",
    "tanaka",
    "berg",
    "dubois",
    "haddad",
    "ivanova",
    "jensen",
    "lopez",
]
DOMAINS = ("example.com", "example.org", "corp.example.net")
TOPICS = (
    "Order",
    "Support ticket",
    "Delivery",
    "Billing question",
    "Project",
    "Team chat",
    "Appointment",
    "Return",
)
#: Identities that need URL-encoding in a path; the first users of every service get some.
SPECIAL_IDENTITIES = (
    "first+tag@example.com",
    "Anna Maria López",
    "ops/team@example.com",
    "josé.garcía@exämple.es",
    "50% off?#deal",
    "用户-42",
)
SERVICE_NAMES = ("Default Conversations Service", "Support", "Sales", "Field Ops", "Partners")


def base_now(seed: int) -> int:
    """The fixed "now" of a data set: 2025-01-01 plus up to a year, derived from the seed."""
    return _EPOCH_2025 + (seed % 365) * DAY + 12 * 3600


def _attribute_pool(rng: random.Random) -> list[str]:
    """Attribute strings to draw from: mostly ``{}``, some JSON objects, a few invalid ones.

    Drawing from a pool (rather than building JSON per record) keeps generation fast; 64
    distinct rich documents are plenty of variety for a connector to handle.
    """
    rich = [
        json.dumps(
            {
                "priority": rng.choice(["low", "normal", "high"]),
                "tags": rng.sample(
                    ["vip", "billing", "bug", "eu", "us", "beta"], rng.randint(0, 3)
                ),
                "external_id": rng.randint(1000, 999_999),
            }
        )
        for _ in range(64)
    ]
    # Attributes are free-form user data: a few are not valid JSON at all.
    invalid = ['{"unterminated": ', "not json", "{'single': 'quotes'}"]
    return ["{}"] * 120 + rich + invalid * 2


def _pick(rand: Callable[[], float], seq: Sequence[T]) -> T:
    """``rng.choice`` without its Python-level overhead (one C call per draw)."""
    return seq[int(rand() * len(seq))]


def _between(rand: Callable[[], float], low: int, high: int) -> int:
    """``rng.randint(low, high)`` (inclusive) from one ``random()`` draw."""
    return low + int(rand() * (high - low + 1))


def _identity(rng: random.Random, used: set[str], i: int) -> str:
    if i < 2 or (i < len(SPECIAL_IDENTITIES) and rng.random() < 0.5):
        candidate = SPECIAL_IDENTITIES[i]
        if candidate not in used:
            return candidate
    while True:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        candidate = f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(DOMAINS)}"
        if candidate not in used:
            return candidate


def _conversation(
    rng: random.Random, now: int, creators: list[str], attributes: list[str]
) -> Conversation:
    rand = rng.random
    created = now - _between(rand, DAY, 730 * DAY)
    updated = created + int(rand() * (now - created))
    r = rand()
    state = "active" if r < 0.6 else "inactive" if r < 0.85 else "closed"
    inactive = closed = None
    if state != "active":
        inactive = updated + _between(rand, 3600, 30 * DAY)
        closed = inactive + _between(rand, 3600, 30 * DAY)
        # Keep timers in the past of "now" as well.
        inactive, closed = min(inactive, now - 2), min(closed, now - 1)
    # A few conversations have more than 1,000 messages so the unread cap shows.
    r = rand()
    if r < 0.2:
        count = 0
    elif r < 0.6:
        count = _between(rand, 1, 40)
    elif r < 0.92:
        count = _between(rand, 41, 400)
    else:
        count = _between(rand, 900, 1600)
    number = _between(rand, 1000, 99999)
    friendly = None if rand() < 0.1 else f"{_pick(rand, TOPICS)} #{number}"
    unique = f"conv-{number}-{rng.getrandbits(16):04x}" if rand() < 0.3 else None
    creator = _pick(rand, creators) if creators and rand() < 0.4 else "system"
    return Conversation(
        sid=make_sid(CONVERSATION, rng),
        friendly_name=friendly,
        unique_name=unique,
        attributes=_pick(rand, attributes),
        state=state,
        created_by=creator,
        date_created=created,
        date_updated=updated,
        date_inactive=inactive,
        date_closed=closed,
        message_count=count,
        history_count=count,
        # History ends before the conversation went inactive, else just before "now".
        history_end=inactive if inactive is not None else now - 1,
        generated=True,
    )


def _conversation_counts(rng: random.Random, spec: DataSpec) -> list[int]:
    """Per-user conversation counts: exact, or a mix that guarantees each kind appears."""
    if spec.conversations_per_user is not None:
        return [spec.conversations_per_user] * spec.users
    top = spec.max_conversations
    kinds = ["zero", "few", "moderate", "many"]
    counts = []
    for i in range(spec.users):
        kind = kinds[i] if i < 4 else rng.choices(kinds, weights=(15, 45, 30, 10))[0]
        if kind == "zero" or top == 0:
            n = 0
        elif kind == "few":
            n = rng.randint(1, min(10, top))
        elif kind == "moderate":
            n = rng.randint(min(11, top), min(50, top))
        else:
            n = rng.randint(min(51, top), top)
        counts.append(n)
    rng.shuffle(counts)
    return counts


def generate_service(rng: random.Random, spec: DataSpec, now: int, index: int) -> Service:
    """One service with ``spec.users`` users and their memberships."""
    created = now - rng.randint(800 * DAY, 1500 * DAY)
    name = SERVICE_NAMES[index] if index < len(SERVICE_NAMES) else f"Service {index}"
    service = Service(
        sid=make_sid(SERVICE, rng),
        friendly_name=name,
        date_created=created,
        date_updated=created + rng.randint(0, 100 * DAY),
        is_default=index == 0,
        role_sid=make_sid(ROLE, rng),
    )
    attributes = _attribute_pool(rng)
    used: set[str] = set()
    users: list[User] = []
    for i in range(spec.users):
        identity = _identity(rng, used, i)
        used.add(identity)
        first = identity.split("@")[0].replace(".", " ").title()
        u_created = now - rng.randint(DAY, 700 * DAY)
        users.append(
            User(
                sid=make_sid(USER, rng),
                identity=identity,
                friendly_name=None if rng.random() < 0.15 else first,
                attributes=_pick(rng.random, attributes),
                role_sid=service.role_sid,
                date_created=u_created,
                date_updated=u_created + int(rng.random() * (now - u_created)),
            )
        )

    counts = _conversation_counts(rng, spec)
    total = sum(counts)
    biggest = max(counts, default=0)
    # Pool size: enough for the biggest user to pick distinct conversations and for about
    # four participants per conversation on average (more for big benchmark sets).
    pool_size = max(biggest * 2, total // (8 if total > 100_000 else 4), 1 if total else 0)
    creators = [u.identity for u in users[:50]]
    pool = sorted(
        (_conversation(rng, now, creators, attributes) for _ in range(pool_size)),
        key=lambda c: c.sid,
    )
    service.conversations = {c.sid: c for c in pool}
    service.conversation_sids = [c.sid for c in pool]
    service.conversations_by_unique_name = {c.unique_name: c for c in pool if c.unique_name}

    # The hot loop (one iteration per membership): local names, C-level draws only, and
    # tuple.__new__ instead of the NamedTuple constructor (half the cost).
    getrandbits, rand = rng.getrandbits, rng.random
    new = tuple.__new__
    for user, n in zip(users, counts, strict=True):
        chosen: set[int] = set()
        while len(chosen) < n:
            chosen.add(int(rand() * pool_size))
        members = []
        for ci in sorted(chosen):
            conv = pool[ci]
            count = conv.message_count
            r = rand()
            if count == 0 or r < 0.12:
                last_read = None  # read position never set
            elif r < 0.6:
                last_read = count - 1  # fully read
            else:
                last_read = int(rand() * count)
            sid = f"{PARTICIPANT}{getrandbits(128):032x}"
            members.append(new(Membership, (conv.sid, sid, r > 0.9, last_read)))
        user.memberships = members

    users.sort(key=lambda u: u.sid)
    service.user_sids = [u.sid for u in users]
    service.users = {u.sid: u for u in users}
    service.users_by_identity = {u.identity: u for u in users}
    return service


def generate_services(spec: DataSpec) -> tuple[list[Service], int]:
    """All services of a data set plus its "now" (epoch seconds)."""
    rng = random.Random(spec.seed)
    now = base_now(spec.seed)
    # Millions of new tuples would trigger the cyclic GC over and over (a third of the time);
    # nothing generated here forms a cycle, so pause it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        services = [generate_service(rng, spec, now, i) for i in range(spec.services)]
    finally:
        if was_enabled:
            gc.enable()
    return services, now
