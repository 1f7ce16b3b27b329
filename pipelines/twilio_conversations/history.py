"""History mode: every version of each user conversation, with validity ranges, in
`user_conversations_history` (dlt `scd2`), a table of the `user_conversations` resource."""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

import dlt
from dlt.common.schema.typing import TScd2StrategyDict

from . import current
from .columns import USER_CONVERSATIONS_COLUMNS
from .settings import DELETED_COLUMN

HISTORY_TABLE = "user_conversations_history"  # history mode's scd2 table
_log = logging.getLogger("twilio_conversations")


# History: dlt `scd2` keyed by row hash. Only partitions (users) sent in this load may be retired,
# and a tombstone counts as "sent" without being inserted, so a user who left every conversation
# has all current versions closed. The placeholders are dlt's qualified table names.
_HISTORY_SCOPE = (
    "EXISTS (SELECT 1 FROM {staging_table} AS s WHERE s.chat_service_sid = "
    "{table}.chat_service_sid AND s.user_sid = {table}.user_sid)"
)
_HISTORY: TScd2StrategyDict = {
    "disposition": "merge",
    "strategy": "scd2",
    "source_filter": f"{DELETED_COLUMN} = FALSE",
    "destination_scope": _HISTORY_SCOPE,
}


# The history table as a variant of `user_conversations`: the same rows, its own disposition,
# and none of the resource's keys (a variant starts from them): versions are told apart by their
# row hash, and `destination_scope` says which ones a load may retire.
_HISTORY_HINTS = dlt.mark.make_hints(
    table_name=HISTORY_TABLE,
    write_disposition=_HISTORY,
    columns=copy.deepcopy(USER_CONVERSATIONS_COLUMNS),  # dlt writes into the hints it is given
    primary_key=(),
    merge_key=(),
)


def keeps_history(configured: bool | None) -> bool:
    """Whether this run writes history: as configured, and where it is not configured, whenever
    the dataset has it already. History is the dataset's, not a run's: a run without the flag
    that skipped it would leave the versions of memberships it ended open for ever. Turned off
    on purpose (`history = false`) where the dataset has it, a warning says so every run."""
    has_history = not current.first_time(HISTORY_TABLE)
    if configured is False and has_history:
        _log.warning(
            "history = false: %s is no longer kept current (its versions stay as the last run "
            "with history left them); unset `history` to keep it",
            HISTORY_TABLE,
        )
    return has_history if configured is None else configured


def history_versions(item: Any) -> Any:
    """`item`, a table of user conversations (changed rows or tombstones), as rows of the history
    table (`_dlt_valid_from` / `_dlt_valid_to`, null = current); None for anything else (the
    bookkeeping rows, a turn)."""
    pyarrow = sys.modules.get("pyarrow")  # imported once a table was built
    if pyarrow is None or not isinstance(item, pyarrow.Table):
        return None
    from .records import with_row_hash

    return dlt.mark.with_hints(with_row_hash(item), _HISTORY_HINTS, create_table_variant=True)
