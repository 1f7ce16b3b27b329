"""Whether a run may append `user_conversations` instead of merging: one claim per dataset, taken
in the destination itself.

A first load appends: every row is new, so the append equals the merge and spares the staging
copy and the delete-insert (docs/architecture.md, "Measurements behind the code"). It is safe
only if nobody else writes the table until it ends. Two first loads from two pipeline folders (two
containers, a cron job beside a manual run, two hosts on one volume) both see an empty table,
and two appends would store every row twice, for good.

So the dataset holds one claim, a row of `CLAIM_TABLE` taken atomically by the destination
(`INSERT ... ON CONFLICT DO NOTHING` on a one-row primary key, in the same statement whoever
races): only the pipeline (name, folder, host; or the `first_load_holder` it is given) that
holds it appends. While it is unfinished, any other pipeline's run refuses with one line
(`FirstLoadInProgressError`) instead of writing:
a merge beside those appends could still duplicate a user the appends reach later. The holder's
run that completes a scan finishes the claim with a row of `FINISHED_TABLE` in its last load
package; the claim counts as finished once that package is recorded in `_dlt_loads` (after every
one of its jobs). A full refresh starts over, and takes the claim whoever held it.

Where the destination cannot hold a claim (no SQL client, a filesystem), nothing appends: the
merge is always correct.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.sql_client import SqlClientBase, WithSqlClient
from dlt.sources import DltResource

from .columns import add_table_variant
from .errors import FirstLoadInProgressError
from .file_lock import lock_holder

logger = logging.getLogger(__name__)

CLAIM_TABLE = "_first_load_claim"
FINISHED_TABLE = "_first_loads_finished"  # a row per claim finished, loaded by dlt
TABLE = "user_conversations"


@dataclass(frozen=True)
class FirstLoad:
    """What this run may do: `append` its user conversations, and finish the claim `token` (the
    claim this pipeline holds, unfinished) once its scan is complete."""

    append: bool = False
    token: str | None = None


@dataclass(frozen=True)
class _Claim:
    token: str
    holder: str
    claimed_at: str
    finished: bool


def decide(
    pipeline: dlt.Pipeline, *, known: bool, emptied: bool = False, holder: str | None = None
) -> FirstLoad:
    """Take or check the dataset's claim and say whether this run appends.

    `known`: the pipeline's state says its rows are loaded (a later run: it merges). `emptied`:
    this run drops the table first (a full refresh: it appends whoever held the claim).
    `holder`: who this run claims as; by default the pipeline's name, folder and host.
    Raises `FirstLoadInProgressError` while another pipeline's first load holds the claim.
    """
    if not _can_claim(pipeline):
        return FirstLoad()
    me = f"holder {holder!r}" if holder else _holder(pipeline)
    try:
        with pipeline.sql_client() as client:
            claim = _read_claim(client)
            if claim and not claim.finished and _finished(client, claim.token):
                _execute(client, "UPDATE {claim} SET finished = TRUE WHERE id = 1")
                claim = _Claim(claim.token, claim.holder, claim.claimed_at, True)
            if claim and not claim.finished and claim.holder != me and not emptied:
                raise _in_progress(pipeline, claim)
            mine = claim.token if claim and claim.holder == me and not claim.finished else None
            if known or (not emptied and _has_rows(client)):
                return FirstLoad(append=False, token=mine)
            claim = _take(client, me, claim, emptied)
            if claim.holder != me:  # another first load took it in between
                raise _in_progress(pipeline, claim)
            return FirstLoad(append=True, token=claim.token)
    except FirstLoadInProgressError:
        raise
    except Exception as exc:
        if lock_holder(exc) is not None:
            raise  # a DuckDB file held by another process: the caller may wait and ask again
        logger.warning("could not claim the first load (%s); merging instead", exc)
        return FirstLoad()


def finished(token: str) -> Any:
    """The row that finishes the claim `token`, for `FINISHED_TABLE`: yielded at the end of a
    complete scan, it is loaded with the run's last part."""
    row = {"token": token, "finished_at": datetime.now(UTC)}
    return dlt.mark.with_table_name([row], FINISHED_TABLE)


def add_table(resource: DltResource) -> DltResource:
    """Make `FINISHED_TABLE` a table of `resource`."""
    return add_table_variant(resource, FINISHED_TABLE, "append", _FINISHED_COLUMNS)


_FINISHED_COLUMNS: TTableSchemaColumns = {
    "token": {"data_type": "text", "nullable": False, "description": "The claim finished."},
    "finished_at": {
        "data_type": "timestamp",
        "description": "When the scan of the first load that held it completed.",
    },
}


def _can_claim(pipeline: dlt.Pipeline) -> bool:
    destination = pipeline.destination
    return (
        destination is not None
        and issubclass(destination.client_class, WithSqlClient)
        # its SQL client reads files through an in-memory database: a claim would not last
        and destination.destination_type != "dlt.destinations.filesystem"
    )


def _holder(pipeline: dlt.Pipeline) -> str:
    """Who a claim belongs to: one pipeline's working folder on one host."""
    folder = os.path.abspath(pipeline.pipelines_dir)
    return f"pipeline {pipeline.pipeline_name!r} in {folder} on host {socket.gethostname()}"


def _execute(client: SqlClientBase[Any], sql: str, *args: Any) -> Any:
    claim = client.make_qualified_table_name(CLAIM_TABLE)
    return client.execute_sql(sql.format(claim=claim), *args)


def _read_claim(client: SqlClientBase[Any]) -> _Claim | None:
    try:
        rows = _execute(
            client, "SELECT token, holder, claimed_at, finished FROM {claim} WHERE id = 1"
        )
    except DatabaseUndefinedRelation:
        return None
    return _Claim(*rows[0]) if rows else None


def _finished(client: SqlClientBase[Any], token: str) -> bool:
    """Whether the holder's last part, with the row that finishes `token`, is fully loaded."""
    rows = client.make_qualified_table_name(FINISHED_TABLE)
    loads = client.make_qualified_table_name("_dlt_loads")
    try:
        return bool(
            client.execute_sql(
                f"SELECT 1 FROM {rows} AS f JOIN {loads} AS l "
                "ON l.load_id = f._dlt_load_id WHERE f.token = %s",
                token,
            )
        )
    except DatabaseUndefinedRelation:
        return False


def _has_rows(client: SqlClientBase[Any]) -> bool:
    try:
        return bool(
            client.execute_sql(f"SELECT 1 FROM {client.make_qualified_table_name(TABLE)} LIMIT 1")
        )
    except DatabaseUndefinedRelation:
        return False


def _take(client: SqlClientBase[Any], me: str, claim: _Claim | None, emptied: bool) -> _Claim:
    """The claim after trying to take it: a new one where there was none (the destination
    lets one of two racing inserts through), this pipeline's own as it was, or a finished one
    (or any, for a full refresh) replaced; then read back."""
    if claim is None:
        if not client.has_dataset():
            try:
                client.create_dataset()
            except Exception:
                if not client.has_dataset():  # not another run creating it at the same time
                    raise
        _execute(
            client,
            "CREATE TABLE IF NOT EXISTS {claim} (id INTEGER PRIMARY KEY, token VARCHAR, "
            "holder VARCHAR, claimed_at VARCHAR, finished BOOLEAN)",
        )
        _execute(
            client,
            "INSERT INTO {claim} VALUES (1, %s, %s, %s, FALSE) ON CONFLICT DO NOTHING",
            *_new(me),
        )
    elif claim.holder != me or claim.finished:
        # Only the claim that was read is replaced: of two racing runs, one replaces it.
        _execute(
            client,
            "UPDATE {claim} SET token = %s, holder = %s, claimed_at = %s, finished = FALSE "
            "WHERE id = 1 AND token = %s",
            *_new(me),
            claim.token,
        )
    taken = _read_claim(client)
    assert taken is not None
    return taken


def _new(me: str) -> tuple[str, str, str]:
    return uuid.uuid4().hex, me, datetime.now(UTC).isoformat(timespec="seconds")


def _in_progress(pipeline: dlt.Pipeline, claim: _Claim) -> FirstLoadInProgressError:
    return FirstLoadInProgressError(
        f"another first load into dataset {pipeline.dataset_name!r} is in progress "
        f"({claim.holder}, since {claim.claimed_at}); run again once it has finished "
        "(a first load that was stopped finishes when its pipeline runs again; "
        "`run --full-refresh` starts over)"
    )
