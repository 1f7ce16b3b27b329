"""Where change capture keeps its fingerprints: rows of the destination's `_fingerprints` table.

dlt writes a pipeline's whole state again whenever anything in it changes, so fingerprints kept
in resource state cost the size of the account at every run that changed one user
(docs/performance.md, "Bookkeeping at scale"). Here each fingerprint is a row of `_fingerprints`
(resource, scope, key -> fingerprint), merged in the same load package as the rows it describes:
a run writes one bookkeeping row per changed partition, and a fingerprint reaches the destination
with its partition's rows, never on its own ahead of them (a crashed package is loaded before the
next run reads).

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
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import dlt
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.common.schema.typing import TColumnSchema, TMergeDispositionDict
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.sources import DltResource

from .changes import FingerprintState
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
_FETCH_ROWS = 10_000

# The latest row per key: one row per key where the destination merges; on a filesystem
# destination, which appends, every version is kept and the newest load's wins.
HELD_QUERY = """
SELECT resource, scope, key, fingerprint FROM (
    SELECT resource, scope, key, fingerprint, {deleted} AS deleted,
        ROW_NUMBER() OVER (PARTITION BY resource, scope, key ORDER BY _dlt_load_id DESC)
            AS version
    FROM {table}
) AS versions
WHERE version = 1 AND NOT COALESCE(deleted, FALSE)
"""


class Fingerprints(MutableMapping[str, MutableMapping[str, str]]):
    """scope -> {key: fingerprint} as the destination holds it once this run's load commits.

    Every change made through the mapping (a key set, a key or a scope removed) is recorded for
    `rows()`.
    """

    def __init__(self, resource: str, held: Mapping[str, dict[str, str]] | None = None) -> None:
        """`held`'s dicts become the store's own (not copied): pass what is not used elsewhere."""
        self.resource = resource
        self._scopes: dict[str, _Scope] = {}
        self._changes: dict[tuple[str, str], str | None] = {}
        for scope, keys in (held or {}).items():
            self._scopes[scope] = _Scope(self, scope, keys)

    def __getitem__(self, scope: str) -> MutableMapping[str, str]:
        return self._scopes[scope]

    def __setitem__(self, scope: str, keys: MutableMapping[str, str]) -> None:
        if scope in self._scopes:
            del self[scope]
        self._scopes[scope] = _Scope(self, scope, {})
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


class _Scope(MutableMapping[str, str]):
    """One scope's keys; changes are recorded in the owning `Fingerprints`."""

    def __init__(self, owner: Fingerprints, scope: str, keys: dict[str, str]) -> None:
        self._owner = owner
        self._scope = scope
        self._keys = keys

    def __getitem__(self, key: str) -> str:
        return self._keys[key]

    def __setitem__(self, key: str, fingerprint: str) -> None:
        if self._keys.get(key) != fingerprint:
            self._keys[key] = fingerprint
            self._owner._record(self._scope, key, fingerprint)

    def __delitem__(self, key: str) -> None:
        del self._keys[key]
        self._owner._record(self._scope, key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def open_fingerprints(
    resource: str, read: dict[str, dict[str, dict[str, str]]] | None = None
) -> FingerprintState:
    """The fingerprints of `resource` for this run, read where they live (see the module doc).

    Call inside the resource, where `dlt.current` names the pipeline and its state. `read`:
    what `read_fingerprints` returned before the extract (the runner reads them while it may
    wait for a DuckDB file another process holds); without it they are read here. A destination
    that cannot be read back (no SQL client: a custom `@dlt.destination`, a vector store) keeps
    them in the resource state, as before this table: a plain dict there, written whole.
    """
    state = dlt.current.resource_state()
    pipeline = dlt.current.pipeline()
    if not _readable(pipeline):
        kept: FingerprintState = state.setdefault(LEGACY_KEY, {})
        return kept
    legacy = state.pop(LEGACY_KEY, None)
    if legacy is not None:
        store = Fingerprints(resource, legacy)
        store.rewrite_all()
    elif state.get(MARKER):
        held = read if read is not None else read_fingerprints(pipeline)
        store = Fingerprints(resource, held.pop(resource, {}))  # handed over, not copied
    else:
        store = Fingerprints(resource)  # a first load, or after a full refresh
    state[MARKER] = True
    return store


def pending(state: FingerprintState) -> int:
    """Changes recorded for `TABLE` and not handed out yet (0 for a state-kept dict)."""
    return state.pending() if isinstance(state, Fingerprints) else 0


def _readable(pipeline: dlt.Pipeline) -> bool:
    """Whether the destination has an SQL client to read `TABLE` back (none configured: no)."""
    if pipeline.destination is None:
        return False
    try:
        pipeline.sql_client()
    except SqlClientNotAvailable:
        return False
    return True


def read_fingerprints(pipeline: dlt.Pipeline) -> dict[str, dict[str, dict[str, str]]]:
    """resource -> scope -> {key: fingerprint}: what the destination's `_fingerprints` holds,
    read in one query, in bounded chunks."""
    held: dict[str, dict[str, dict[str, str]]] = {}
    if not _readable(pipeline):
        return held
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(TABLE)
            deleted = client.escape_column_name(DELETED_COLUMN)
            with client.execute_query(HELD_QUERY.format(table=table, deleted=deleted)) as cursor:
                while chunk := cursor.fetchmany(_FETCH_ROWS):
                    for resource, scope, key, fingerprint in chunk:
                        held.setdefault(resource, {}).setdefault(scope, {})[key] = fingerprint
    except DatabaseUndefinedRelation:
        logger.debug("%s has no %s table yet", pipeline.dataset_name, TABLE)
    return held


def add_table(resource: DltResource) -> DltResource:
    """Make `TABLE` a table variant of `resource`, with the hints of its own only.

    dlt starts a variant from a copy of the resource's hints: the first call empties the copied
    columns (an empty `columns` replaces them), the second sets the table's; the resource's
    merge key is cleared, the primary key and write disposition replaced.
    """
    resource.apply_hints(table_name=TABLE, create_table_variant=True, columns={})
    resource.apply_hints(
        table_name=TABLE,
        create_table_variant=True,
        write_disposition=WRITE_DISPOSITION,
        primary_key=list(PRIMARY_KEY),
        merge_key=[],
        columns=COLUMNS,
    )
    return resource
