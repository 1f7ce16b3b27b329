"""Change capture: decide per user whether anything changed, from compact fingerprints.

Twilio's lists cannot be filtered server-side, so every run reads every scanned user's whole list;
what we can save is writes. And `date_updated` is the conversation's timestamp, not the
membership's: read-state changes do not move it, a join brings an old one and a leave just drops
the row. So a cursor cannot tell what changed. Instead each partition (one user's rows, or one
user or service record) is fingerprinted; a partition whose fingerprint moved is rewritten whole
(merge on a partition key replaces it, rows gone from the API go with it), one that vanished gets
a tombstone, and one that did not change writes nothing.

State is a mapping scope -> {key: fingerprint}, 16 hex characters per user: bytes per user, not
per row. It lives in the destination's `_fingerprints` table (`fingerprints.py`), one row per
partition, written in the same load package as the partition's rows, so a failed run advances
nothing and a run writes bookkeeping in proportion to what changed.

Everything here is pure and synchronous; the resources in `__init__.py` call it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Container, Mapping, MutableMapping, Sequence
from typing import Any

import orjson

FINGERPRINT_BYTES = 8

FingerprintState = MutableMapping[str, MutableMapping[str, str]]


def fingerprint(records: Sequence[Mapping[str, Any]], sort_key: str | None = None) -> str:
    """A stable digest of records, independent of the order the API listed them in.

    Args:
        records: API records as decoded from JSON.
        sort_key: Field that identifies a record within the partition; the API's order is
            undocumented, so records are sorted by it first.
    """
    ordered = sorted(records, key=lambda r: str(r.get(sort_key))) if sort_key else records
    # orjson with sorted keys: the canonical bytes of json.dumps(sort_keys=True), computed far
    # more cheaply (figures in docs/architecture.md, "Measurements behind the code").
    payload = orjson.dumps(ordered, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(payload, digest_size=FINGERPRINT_BYTES).hexdigest()


def has_changed(state: FingerprintState, scope: str, key: str, new_fingerprint: str) -> bool:
    """Whether the partition differs from what the destination holds (new counts as changed)."""
    return state.get(scope, {}).get(key) != new_fingerprint


def is_known(state: FingerprintState, scope: str, key: str) -> bool:
    """Whether the destination holds this partition (a new, empty one needs no tombstone)."""
    return key in state.get(scope, {})


def remember(state: FingerprintState, scope: str, key: str, new_fingerprint: str) -> None:
    """Record what the destination will hold once this load commits."""
    state.setdefault(scope, {})[key] = new_fingerprint


def changed_records(
    state: FingerprintState, scope: str, records: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Records (each its own partition, keyed by `sid`) that are new or differ from what the
    destination holds; their new fingerprints are remembered."""
    changed = []
    for record in records:
        digest = fingerprint([record])
        if has_changed(state, scope, record["sid"], digest):
            changed.append(record)
            remember(state, scope, record["sid"], digest)
    return changed


def vanished(state: FingerprintState, scope: str, seen: Container[str]) -> list[str]:
    """Keys the destination holds in `scope` that a complete scan no longer saw."""
    return sorted(key for key in state.get(scope, {}) if key not in seen)


def forget(state: FingerprintState, scope: str, keys: Collection[str]) -> None:
    """Drop keys whose partitions were deleted; drop the scope once it is empty."""
    known = state.get(scope)
    if known is None:
        return
    for key in keys:
        known.pop(key, None)
    if not known:
        del state[scope]


def vanished_scopes(state: FingerprintState, seen_scopes: Collection[str]) -> list[str]:
    """Scopes (services) the destination holds that a complete scan no longer saw."""
    return sorted(scope for scope in state if scope not in seen_scopes)


def drop_vanished(state: FingerprintState, scope: str, seen: Container[str]) -> list[str]:
    """Keys the destination holds in `scope` that a complete scan no longer saw, forgotten.

    The caller writes a tombstone for each key returned, in the same load: state and destination
    commit together, so a failed run forgets nothing.
    """
    gone = vanished(state, scope, seen)
    forget(state, scope, gone)
    return gone


def drop_vanished_scopes(
    state: FingerprintState, seen_scopes: Collection[str]
) -> dict[str, list[str]]:
    """Scopes (services) the destination holds that a complete scan no longer saw, each with the
    keys it held (in the order they were remembered), forgotten; the caller writes a tombstone
    for every key."""
    return {scope: list(state.pop(scope)) for scope in vanished_scopes(state, seen_scopes)}
