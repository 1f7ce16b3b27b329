"""Where change capture keeps its fingerprints: rows of the destination's `_fingerprints` table.

dlt writes a pipeline's whole state again whenever anything in it changes, so fingerprints kept
in resource state cost the size of the account at every run that changed one user
(docs/architecture.md, "Measurements behind the code"). Here each fingerprint is a row of
`_fingerprints` (resource, scope, key -> fingerprint), merged in the same load package as the rows
it describes: a run writes one bookkeeping row per changed partition, and a fingerprint reaches
the destination with its partition's rows, never on its own ahead of them (a crashed package is
loaded before the next run reads).

`Fingerprints` is the mapping `changes.py` works on (scope -> {key: fingerprint}): what the
destination held when the run started, plus what this run decided, which `rows()` hands out as
rows to load.

Which rows to trust is said by the resource state: `MARKER` is set once a resource keeps its
fingerprints in the table. A full refresh resets the state, so the table's old rows (dropped by
the same refresh) are ignored; a pipeline whose local folder was lost gets the marker back with
its state from the destination. A pipeline made before this table existed has its fingerprints in
the state: the first run moves them into the table (written whole, once) and out of the state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol

import dlt
import numpy as np
import numpy.typing as npt
from dlt.common.schema.typing import TColumnSchema, TMergeDispositionDict
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.sql_client import WithSqlClient
from dlt.sources import DltResource

from . import current
from .changes import FingerprintState
from .columns import add_table_variant
from .memory import release_free_memory
from .parts import Wait, at_once
from .settings import DELETED_COLUMN

logger = logging.getLogger(__name__)

TABLE = "_fingerprints"
MARKER = "fingerprints_table"  # resource state: this resource's fingerprints live in TABLE
LEGACY_KEY = "fingerprints"  # resource state of pipelines made before TABLE existed
PRIMARY_KEY = ("resource", "scope", "key")
COLUMNS: dict[str, TColumnSchema] = {
    "resource": {
        "data_type": "text",
        "nullable": False,
        "description": "The resource whose partition this is: services, users or "
        "user_conversations.",
    },
    "scope": {
        "data_type": "text",
        "nullable": False,
        "description": "The partition's service SID (`services` for the services themselves).",
    },
    "key": {
        "data_type": "text",
        "nullable": False,
        "description": "The partition's own SID: the service's, or the user's.",
    },
    "fingerprint": {
        "data_type": "text",
        "description": "Digest of the partition's rows as last loaded (change capture: a run "
        "rewrites a partition only when it differs).",
    },
    DELETED_COLUMN: {
        "data_type": "bool",
        "hard_delete": True,
        "description": "Tombstone flag: deletes the fingerprint of a partition that is gone.",
    },
}
WRITE_DISPOSITION: TMergeDispositionDict = {"disposition": "merge", "strategy": "delete-insert"}
_FETCH_ROWS = 20_000

# One row per key where the destination merges. A filesystem destination appends (unless its
# tables are delta or iceberg): every version is kept and the newest load's wins, which costs a
# window over the whole table (DuckDB held 600 MB for one over a million users' rows).
HELD_QUERY = """
SELECT resource, scope, key, fingerprint FROM {table}
WHERE {of} AND NOT COALESCE({deleted}, FALSE)
"""
LATEST_QUERY = """
SELECT resource, scope, key, fingerprint FROM (
    SELECT resource, scope, key, fingerprint, {deleted} AS deleted,
        ROW_NUMBER() OVER (PARTITION BY resource, scope, key ORDER BY _dlt_load_id DESC)
            AS version
    FROM {table} WHERE {of}
) AS versions
WHERE version = 1 AND NOT COALESCE(deleted, FALSE)
"""
_APPENDING = "dlt.destinations.filesystem"


class Fingerprints(MutableMapping[str, MutableMapping[str, str]]):
    """scope -> {key: fingerprint} as the destination holds it once this run's load commits.

    Every change made through the mapping (a key set, a key or a scope removed) is recorded for
    `rows()`. What the destination held is kept compact (`_Scope`): a million users' worth
    takes tens of megabytes, not the hundreds the same dicts of strings took
    (docs/architecture.md, "Measurements behind the code").
    """

    def __init__(
        self, resource: str, held: Mapping[str, Mapping[str, str] | Held] | None = None
    ) -> None:
        self.resource = resource
        self._scopes: dict[str, _Scope] = {}
        self._changes: dict[tuple[str, str], str | None] = {}
        for scope, keys in (held or {}).items():
            compact = keys if isinstance(keys, Held) else Held.of(keys)
            self._scopes[scope] = _Scope(self, scope, compact)

    def __getitem__(self, scope: str) -> MutableMapping[str, str]:
        return self._scopes[scope]

    def __setitem__(self, scope: str, keys: MutableMapping[str, str]) -> None:
        if scope in self._scopes:
            del self[scope]
        self._scopes[scope] = _Scope(self, scope, Held.of({}))
        self._scopes[scope].update(keys)

    def setdefault(
        self, scope: str, default: MutableMapping[str, str] | None = None
    ) -> MutableMapping[str, str]:
        """The scope's mapping, created (from `default`) if missing: the stored one, so that
        what the caller sets in it is recorded."""
        if scope not in self._scopes:
            self[scope] = default if default is not None else {}
        return self._scopes[scope]

    def __delitem__(self, scope: str) -> None:
        for key in list(self._scopes[scope]):
            self._record(scope, key, None)
        del self._scopes[scope]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._scopes))

    def __len__(self) -> int:
        return len(self._scopes)

    def _record(self, scope: str, key: str, fingerprint: str | None) -> None:
        self._changes[(scope, key)] = fingerprint

    def listed(self, scope: str) -> _Listed:
        """The keys of `scope` this run listed, for `changes.vanished`, kept as a flag per held
        key rather than as a set of a million strings."""
        return _Listed(self, scope)

    def rewrite_all(self) -> None:
        """Record every fingerprint held, so `rows()` writes them all (moving a legacy state)."""
        for scope, keys in self._scopes.items():
            for key, fingerprint in keys.items():
                self._record(scope, key, fingerprint)

    def pending(self) -> int:
        """Changes recorded since the last `rows()`."""
        return len(self._changes)

    def rows(self) -> list[dict[str, Any]]:
        """`_fingerprints` rows for the changes recorded since the last call, which they clear."""
        rows = [
            {"resource": self.resource, "scope": scope, "key": key, "fingerprint": fingerprint}
            if fingerprint is not None
            else {"resource": self.resource, "scope": scope, "key": key, DELETED_COLUMN: True}
            for (scope, key), fingerprint in self._changes.items()
        ]
        self._changes = {}
        return rows


class Held:
    """One scope's keys and fingerprints, sorted by their encoding (`_encode`): numpy `S`
    arrays, 19 + 9 bytes a user where a dict of strings takes over 200."""

    def __init__(self, keys: npt.NDArray[np.bytes_], prints: npt.NDArray[np.bytes_]) -> None:
        """`keys` sorted, without duplicates; `prints` in the same order."""
        self.keys = keys
        self.prints = prints

    def items(self) -> Iterator[tuple[str, str]]:
        """(key, fingerprint) pairs, decoded, in the arrays' order."""
        for key, fingerprint in zip(self.keys, self.prints, strict=True):
            yield _decode(key), _decode(fingerprint)

    @classmethod
    def of(cls, keys: Mapping[str, str]) -> Held:
        return cls.concatenate([(_encode(list(keys)), _encode(list(keys.values())))])

    @classmethod
    def concatenate(cls, parts: list[tuple[npt.NDArray[np.bytes_], ...]]) -> Held:
        """The parts' keys (distinct across parts) sorted, with their fingerprints.

        Empties `parts`: each part is released once copied, so a scope is held about once
        while it is joined, not as its parts, their concatenation and its sorted copy.
        """
        size = sum(len(keys) for keys, _ in parts)
        keys = np.empty(size, dtype=f"S{max((k.itemsize for k, _ in parts), default=1)}")
        prints = np.empty(size, dtype=f"S{max((p.itemsize for _, p in parts), default=1)}")
        end = size
        while parts:
            part_keys, part_prints = parts.pop()
            keys[end - len(part_keys) : end] = part_keys
            prints[end - len(part_keys) : end] = part_prints
            end -= len(part_keys)
        order = np.argsort(keys)
        keys = keys[order]
        return cls(keys, prints[order])


# SIDs and hex digests, the bulk of what is held, are kept as their bytes: a SID's 32 hex digits
# as 16 bytes, then its two letters, then SID_MARK; a digest's hex digits as bytes, then
# HEX_MARK. Neither mark can occur in UTF-8, so anything else is kept as its UTF-8 and every
# value decodes back unambiguously; as a last byte, a mark also keeps numpy from stripping a
# trailing zero byte. A million users' keys and fingerprints take 56 MB instead of 100 MB.
SID_MARK, HEX_MARK = 0xFE, 0xFF
_SID_HEX = 32
_SID = re.compile(rf"[A-Z]{{2}}[0-9a-f]{{{_SID_HEX}}}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_NIBBLES = np.full(256, 0xFF, dtype=np.uint8)  # byte -> its hex digit's value, 0xFF: not one
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def _encode(values: list[str]) -> npt.NDArray[np.bytes_]:
    """`values` encoded (see SID_MARK), as a numpy array of fixed-width byte strings; a chunk
    of SIDs, or of equally long digests, is encoded without a Python loop."""
    plain = _bytes_array(values)
    if not len(plain) or plain.itemsize < 2 or plain.itemsize % 2:
        return _encode_each(values)
    digits = plain.view(np.uint8).reshape(len(plain), plain.itemsize)
    sid = plain.itemsize == 2 + _SID_HEX
    letters, hexes = (digits[:, :2], digits[:, 2:]) if sid else (digits[:, :0], digits)
    nibbles = _NIBBLES[hexes]
    if (nibbles > 15).any() or ((letters - np.uint8(65)) > 25).any():  # A-Z: 65-90
        return _encode_each(values)
    raw = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    mark = np.full((len(plain), 1), SID_MARK if sid else HEX_MARK, dtype=np.uint8)
    packed = np.ascontiguousarray(np.hstack([raw, letters, mark]))
    return packed.view(f"S{packed.shape[1]}").ravel()


def _encode_each(values: list[str]) -> npt.NDArray[np.bytes_]:
    if not values:
        return np.array([], dtype="S1")
    return np.array([_encode_one(value) for value in values], dtype="S")


def _encode_one(value: str) -> bytes:
    """One value's encoding (see SID_MARK)."""
    if _SID.fullmatch(value):
        return bytes.fromhex(value[2:]) + value[:2].encode() + bytes([SID_MARK])
    if _HEX.fullmatch(value):
        return bytes.fromhex(value) + bytes([HEX_MARK])
    return value.encode()


def _decode(encoded: bytes) -> str:
    """The value `_encode_one` encoded."""
    if encoded and encoded[-1] == SID_MARK:
        return encoded[-3:-1].decode() + encoded[:-3].hex()
    if encoded and encoded[-1] == HEX_MARK:
        return encoded[:-1].hex()
    return encoded.decode()


def _bytes_array(values: list[str]) -> npt.NDArray[np.bytes_]:
    """`values` UTF-8 encoded, as a numpy array of fixed-width byte strings."""
    if not values:
        return np.array([], dtype="S1")
    try:
        return np.array(values, dtype="S")
    except UnicodeEncodeError:  # numpy encodes ASCII only
        return np.array([value.encode() for value in values], dtype="S")


class _Scope(MutableMapping[str, str]):
    """One scope's keys; changes are recorded in the owning `Fingerprints`.

    The keys the destination held are `Held` arrays with a flag each for "removed" and "listed
    by this run"; keys this run adds go to a dict, folded into the arrays once it grows, so a
    first load of a million users stays compact too.
    """

    _FOLD_AT = 1 << 16

    def __init__(self, owner: Fingerprints, scope: str, held: Held) -> None:
        self._owner = owner
        self._scope = scope
        self._held = held
        self._removed = np.zeros(len(held.keys), dtype=bool)
        self._listed = np.zeros(len(held.keys), dtype=bool)
        self._added: dict[str, str] = {}
        self._count = len(held.keys)

    def _index(self, key: str) -> int:
        """Where `key` is in the held arrays, -1 if it is not there."""
        keys = self._held.keys
        encoded = _encode_one(key)
        if not len(keys) or len(encoded) > keys.itemsize:
            return -1
        # The method, not np.searchsorted: a run looks every user up several times, and the
        # function form costs twice as much a call (docs/architecture.md, "Measurements behind
        # the code").
        index = int(keys.searchsorted(encoded))
        return index if index < len(keys) and keys[index] == encoded else -1

    def __getitem__(self, key: str) -> str:
        added = self._added.get(key)
        if added is not None:
            return added
        index = self._index(key)
        if index < 0 or self._removed[index]:
            raise KeyError(key)
        return _decode(self._held.prints[index])

    def __setitem__(self, key: str, fingerprint: str) -> None:
        if key in self._added:
            if self._added[key] == fingerprint:
                return
            self._added[key] = fingerprint
        elif (index := self._index(key)) < 0:
            self._added[key] = fingerprint
            self._count += 1
            if len(self._added) > max(self._FOLD_AT, len(self._held.keys) // 4):
                self._fold()
        else:
            removed = bool(self._removed[index])
            encoded = _encode_one(fingerprint)
            if not removed and self._held.prints[index] == encoded:
                return
            self._count += removed
            self._removed[index] = False
            self._set_print(index, encoded)
        self._owner._record(self._scope, key, fingerprint)

    def _set_print(self, index: int, encoded: bytes) -> None:
        prints = self._held.prints
        if len(encoded) > prints.itemsize:  # a wider fingerprint than any held: widen them all
            self._held.prints = prints = prints.astype(f"S{len(encoded)}")
        prints[index] = encoded

    def __delitem__(self, key: str) -> None:
        if key in self._added:
            del self._added[key]
        else:
            index = self._index(key)
            if index < 0 or self._removed[index]:
                raise KeyError(key)
            self._removed[index] = True
        self._count -= 1
        self._owner._record(self._scope, key, None)

    def __iter__(self) -> Iterator[str]:
        yield from list(self._added)
        held = self._held.keys[~self._removed]
        for key in held:
            yield _decode(key)

    def __len__(self) -> int:
        return self._count

    def mark_listed(self, key: str) -> None:
        index = self._index(key)
        if index >= 0:
            self._listed[index] = True

    def was_listed(self, key: str) -> bool:
        """Keys added by this run count as listed: a run adds only what it listed."""
        if key in self._added:
            return True
        index = self._index(key)
        return index >= 0 and bool(self._listed[index])

    def _fold(self) -> None:
        """Move the added keys into the arrays (as listed keys, see `was_listed`)."""
        keys = np.concatenate([self._held.keys, _encode(list(self._added))])
        order = np.argsort(keys, kind="stable")  # one sort of held and added together
        prints = np.concatenate([self._held.prints, _encode(list(self._added.values()))])
        new = np.zeros(len(self._added), dtype=bool)
        self._removed = np.concatenate([self._removed, new])[order]
        self._listed = np.concatenate([self._listed, ~new])[order]
        self._held, self._added = Held(keys[order], prints[order]), {}


class _Listed:
    """The keys of one scope a run listed (see `Fingerprints.listed`)."""

    def __init__(self, owner: Fingerprints, scope: str) -> None:
        self._owner = owner
        self._scope = scope

    def add(self, key: str) -> None:
        scope = self._owner._scopes.get(self._scope)
        if scope is not None:
            scope.mark_listed(key)

    def update(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        scope = self._owner._scopes.get(self._scope)
        return scope is not None and isinstance(key, str) and scope.was_listed(key)


def open_fingerprints(
    resource: str,
    state: dict[str, Any] | None = None,
    wait: Wait = at_once,
) -> FingerprintState:
    """The fingerprints of `resource` for this run, read where they live (see the module doc).

    Call inside the resource, where `dlt.current` names the pipeline and its state; `state`:
    where in the resource state they are noted (the resource's own by default). `wait`: how
    the caller reads the destination (`Parts.wait`: waiting for a DuckDB file another process
    holds). A destination that cannot be read back (no SQL client: a custom `@dlt.destination`,
    a vector store) keeps them in the resource state, as before this table: a plain dict
    there, written whole.
    """
    state = dlt.current.resource_state() if state is None else state
    pipeline = dlt.current.pipeline()
    if not _readable(pipeline):
        kept: FingerprintState = state.setdefault(LEGACY_KEY, {})
        return kept
    legacy = state.pop(LEGACY_KEY, None)
    if legacy is not None:
        store = Fingerprints(resource, legacy)
        store.rewrite_all()
    elif state.get(MARKER):
        held = wait(lambda: read_fingerprints(pipeline, resource))
        store = Fingerprints(resource, held.pop(resource, {}))  # handed over, not copied
    else:
        store = Fingerprints(resource)  # a first load, or after a full refresh
    state[MARKER] = True
    return store


class Listed(Protocol):
    """The keys of one scope a run has listed (a `set`, or `Fingerprints.listed`)."""

    def add(self, key: str) -> None: ...

    def __contains__(self, key: object) -> bool: ...


def listed(state: FingerprintState, scope: str) -> Listed:
    """Where a run notes the keys of `scope` it lists, for `changes.vanished` at the end."""
    return state.listed(scope) if isinstance(state, Fingerprints) else set()


def pending(state: FingerprintState) -> int:
    """Changes recorded for `TABLE` and not handed out yet (0 for a state-kept dict)."""
    return state.pending() if isinstance(state, Fingerprints) else 0


def _readable(pipeline: dlt.Pipeline) -> bool:
    """Whether the destination has an SQL client to read `TABLE` back (none configured: no)."""
    # What `pipeline.sql_client()` checks, without building a client (~40 ms of configuration).
    return pipeline.destination is not None and issubclass(
        pipeline.destination.client_class, WithSqlClient
    )


def read_fingerprints(
    pipeline: dlt.Pipeline, resource: str | None = None
) -> dict[str, dict[str, Held]]:
    """resource -> scope -> `Held`: what the destination's `_fingerprints` holds (of `resource`
    only, if given), read in one query, in chunks, each made compact before the next is
    fetched. (Rows, not arrow: an unchanged re-run does not load pyarrow; docs/architecture.md,
    "Measurements behind the code".)"""
    if not _readable(pipeline):
        return {}
    assert pipeline.destination is not None  # _readable
    query = LATEST_QUERY if pipeline.destination.destination_type == _APPENDING else HELD_QUERY
    parts: dict[tuple[str, str], list[tuple[npt.NDArray[np.bytes_], ...]]] = {}
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(TABLE)
            deleted = client.escape_column_name(DELETED_COLUMN)
            of = "resource = %s" if resource else "TRUE"
            args = (resource,) if resource else ()
            text = query.format(table=table, deleted=deleted, of=of)
            with client.execute_query(text, *args) as cursor:
                while chunk := cursor.fetchmany(_FETCH_ROWS):
                    for where, pair in _by_scope(chunk):
                        parts.setdefault(where, []).append(pair)
    except DatabaseUndefinedRelation:
        logger.debug("%s has no %s table yet", pipeline.dataset_name, TABLE)
    held: dict[str, dict[str, Held]] = {}
    # The rows' and chunks' freed memory goes back to the OS as each scope is joined, else the
    # allocator keeps it for the whole run (docs/architecture.md, "Measurements behind the
    # code").
    while parts:
        release_free_memory()
        (resource, scope), arrays = parts.popitem()
        held.setdefault(resource, {})[scope] = Held.concatenate(arrays)
    release_free_memory()
    return held


def _by_scope(
    rows: list[tuple[Any, ...]],
) -> Iterator[tuple[tuple[str, str], tuple[npt.NDArray[np.bytes_], ...]]]:
    """(resource, scope) -> (keys, fingerprints) of a chunk of rows: column by column, since a
    chunk holds a handful of (resource, scope) pairs (services) and many keys."""
    resources, scopes, keys, prints = zip(*rows, strict=True)
    if len(pairs := set(zip(resources, scopes, strict=True))) == 1:
        yield pairs.pop(), (_encode(list(keys)), _encode(list(prints)))
        return
    resource_of, scope_of = _bytes_array(list(resources)), _bytes_array(list(scopes))
    key_array, print_array = _encode(list(keys)), _encode(list(prints))
    for resource, scope in pairs:
        picked = (resource_of == resource.encode()) & (scope_of == scope.encode())
        yield (resource, scope), (key_array[picked], print_array[picked])


def add_table(resource: DltResource) -> DltResource:
    """Make `TABLE` a table of `resource`, with the hints of its own only."""
    return add_table_variant(resource, TABLE, WRITE_DISPOSITION, COLUMNS, PRIMARY_KEY)


def rows_to_load(*states: FingerprintState) -> Iterator[Any]:
    """The fingerprints changed since the last call, as rows of their table, in this load
    (none where they are kept in the resource state). Several resources' rows go in one table:
    the same user's keys then share the parquet row group's dictionary."""
    rows = [row for state in states if isinstance(state, Fingerprints) for row in state.rows()]
    if rows:
        from .records import fingerprints_table

        table = fingerprints_table(rows, current.load_id())
        yield dlt.mark.with_table_name(table, TABLE)
