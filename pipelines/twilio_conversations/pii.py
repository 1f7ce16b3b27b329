"""Per-column PII policy: keep a column as the API sends it, hash it, or drop it.

Twilio marks a conversation's `friendly_name` and `unique_name` as PII and `attributes` as
sensitive PII; a user's `identity` is often an e-mail address, and a conversation's `created_by`
is the identity of whoever created it. The policy is applied to each record as it is read, before
change capture fingerprints it and before dlt sees it, so a raw value of a hashed or dropped
column never reaches a load package, the destination, history, views, logs, the trace or state.

Configuration, under `[sources.twilio_conversations]` (`keep` is the default of every column):

    [sources.twilio_conversations.pii]
    users.identity = "hash"
    user_conversations.created_by = "hash"     # holds identities too: hash both to join them
    user_conversations.attributes = "drop"

TOML reads `users.identity = ...` as a table `users` holding `identity`; the flat form with quoted
keys (`"users.identity" = "hash"`) means the same, and so does the environment variable
`SOURCES__TWILIO_CONVERSATIONS__PII='{"users": {"identity": "hash"}}'` (or
`'{"users.identity": "hash"}'`). An unknown table, column or policy stops the run (a typo must
never leave a column unprotected).

* `hash`: `hmac-sha256:` followed by 64 lowercase hex digits, the HMAC-SHA-256 of the value's
  UTF-8 text keyed with `pii_hash_key` (a secret: `.dlt/secrets.toml` or
  `SOURCES__TWILIO_CONVERSATIONS__PII_HASH_KEY`, at least 16 characters). The same value gives
  the same digest in every column, run and account that share the key, so joins and group-bys
  work (`user_conversations.created_by` joins `users.identity`). Null stays null. A hashed
  `attributes` is the hash of the raw JSON string, and its parsed twin `attributes_json` is null.
* `drop`: the value is null in every row written (and so is `attributes_json` for `attributes`).
  The column stays in the table, as dlt never removes columns, so queries and views keep working.

Changing the policy (or the key) changes the rows, hence their fingerprints: the next run
rewrites every partition holding a value of an affected column, and only those.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ConfigurationError

KEEP, HASH, DROP = "keep", "hash", "drop"
POLICIES = (KEEP, HASH, DROP)

# The columns a policy may name, per table. `attributes_json` is derived from `attributes` and
# follows its policy.
PII_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "users": ("identity", "friendly_name", "attributes"),
    "user_conversations": ("friendly_name", "unique_name", "attributes", "created_by"),
    "conversations": ("friendly_name", "unique_name", "attributes"),
}
DERIVED_COLUMNS: Mapping[str, str] = {"attributes_json": "attributes"}

HASH_PREFIX = "hmac-sha256:"
MIN_KEY_LENGTH = 16
KEY_SETTING = "pii_hash_key"
_KEY_WHERE = (
    f"set {KEY_SETTING} under [sources.twilio_conversations] in .dlt/secrets.toml, or "
    f"SOURCES__TWILIO_CONVERSATIONS__{KEY_SETTING.upper()}"
)
_SHOWN = 60


def hash_value(key: bytes, value: Any) -> str | None:
    """`hmac-sha256:<64 hex>` of `value`'s UTF-8 text (null stays null).

    Values other than text (Twilio sends text in every PII column) are hashed as their JSON.
    """
    if value is None:
        return None
    data = value.encode() if isinstance(value, str) else orjson.dumps(value, default=str)
    return HASH_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TablePolicy:
    """The hashed and dropped columns of one table (at least one of them)."""

    hashed: tuple[str, ...]
    dropped: tuple[str, ...]
    key: bytes = b""

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `record` with the policy applied (a field the record lacks stays absent)."""
        row = dict(record)
        for name in self.hashed:
            if name in row:
                row[name] = hash_value(self.key, row[name])
        for name in self.dropped:
            if name in row:
                row[name] = None
        return row


@dataclass(frozen=True)
class PiiPolicy:
    """Table -> its policy, for the tables where some column is not `keep`."""

    tables: Mapping[str, TablePolicy]

    def apply(
        self, table: str, records: Sequence[Mapping[str, Any]]
    ) -> Sequence[Mapping[str, Any]]:
        """`records` with the table's policy applied; the same list where every column is kept
        (no per-row work on the default path)."""
        policy = self.tables.get(table)
        if policy is None:
            return records
        return [policy.apply(record) for record in records]

    def describe(self) -> str:
        """`users.identity=hash, ...` or `keep` (column names only, never values)."""
        parts = [
            f"{table}.{name}={action}"
            for table, policy in sorted(self.tables.items())
            for action, names in ((HASH, policy.hashed), (DROP, policy.dropped))
            for name in names
        ]
        return ", ".join(parts) or KEEP


KEEP_ALL = PiiPolicy({})


def parse_policy(config: Mapping[str, Any] | None, key: str | None = None) -> PiiPolicy:
    """The policy `pii` configures, checked; `key` is `pii_hash_key`.

    Raises:
        ConfigurationError: One line naming an unknown table, column or policy, or a `hash`
            without a usable key.
    """
    if not config:
        return KEEP_ALL
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            'pii must be a table of "<table>.<column>" = "keep" | "hash" | "drop", got '
            f"{type(config).__name__}"
        )
    chosen: dict[str, dict[str, str]] = {}
    for table, column, action in _entries(config):
        chosen.setdefault(table, {})[column] = action
    hashed = [f"{t}.{c}" for t, cols in chosen.items() for c, a in cols.items() if a == HASH]
    secret = b""
    if hashed:
        if not key:
            raise ConfigurationError(
                f'pii: {hashed[0]} = "hash" needs a key: {_KEY_WHERE}. Not started'
            )
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigurationError(
                f"pii: {KEY_SETTING} is shorter than {MIN_KEY_LENGTH} characters; use a long "
                "random secret (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        secret = key.encode()
    tables = {}
    for table, columns in chosen.items():
        hashes = tuple(c for c in PII_COLUMNS[table] if columns.get(c) == HASH)
        drops = tuple(c for c in PII_COLUMNS[table] if columns.get(c) == DROP)
        if hashes or drops:
            tables[table] = TablePolicy(hashes, drops, secret if hashes else b"")
    return PiiPolicy(tables)


def _entries(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(table, column, policy) for every entry, flat (`"users.identity"`) or nested."""
    entries: list[tuple[str, str, str]] = []
    for raw_key, value in config.items():
        name = str(raw_key)
        if isinstance(value, Mapping):
            table = _table(name)
            entries.extend(
                (table, _column(table, str(c)), _policy(f"{table}.{c}", v))
                for c, v in value.items()
            )
            continue
        table_name, dot, column_name = name.partition(".")
        if not dot:
            raise ConfigurationError(
                f"pii: `{_shown(name)}` names no column; write `<table>.<column>` (e.g. "
                f"`users.identity`). PII columns: {_all_columns()}"
            )
        table = _table(table_name)
        entries.append((table, _column(table, column_name), _policy(name, value)))
    return entries


def _table(name: str) -> str:
    if name in PII_COLUMNS:
        return name
    raise ConfigurationError(
        f"pii: unknown table `{_shown(name)}`{_suggest(name, list(PII_COLUMNS))}. PII columns: "
        f"{_all_columns()}. Not started: ignoring it would leave columns unprotected"
    )


def _column(table: str, name: str) -> str:
    if name in PII_COLUMNS[table]:
        return name
    if name in DERIVED_COLUMNS:
        raise ConfigurationError(
            f"pii: {table}.{name} follows {table}.{DERIVED_COLUMNS[name]}: set that one instead"
        )
    candidates = [f"{table}.{c}" for c in PII_COLUMNS[table]]
    raise ConfigurationError(
        f"pii: unknown column `{_shown(f'{table}.{name}')}`"
        f"{_suggest(f'{table}.{name}', candidates)}. PII columns: {_all_columns()}. Not started: "
        "ignoring it would leave a column unprotected"
    )


def _policy(column: str, value: Any) -> str:
    action = value.strip().lower() if isinstance(value, str) else None
    if action in POLICIES:
        return action
    shown = _shown(str(value))
    raise ConfigurationError(
        f"pii: {column} = `{shown}` is not a policy{_suggest(shown.lower(), list(POLICIES))}; "
        "use keep, hash or drop. Not started"
    )


def _suggest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _all_columns() -> str:
    return ", ".join(f"{t}.{c}" for t, columns in PII_COLUMNS.items() for c in columns)


def _shown(text: str) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…"
