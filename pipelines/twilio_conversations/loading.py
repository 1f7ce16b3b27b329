"""Loading a run in parts, with DuckDB's memory budget: `load_in_parts`, the public call that the
CLI's runner, the Airflow and Dagster recipes and any dlt user make alike.

`pipeline.run(twilio_conversations())` loads the same rows as one load package. `load_in_parts`
loads a long run as several, one every `users_per_load` users, so a run that dies late keeps
what its parts loaded; and into DuckDB it loads each part in a small memory budget.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.pipeline import LoadInfo
from dlt.common.typing import TRefreshMode
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.sources import DltSource

from .errors import ConfigurationError, causes
from .file_lock import DEFAULT_LOCK_TIMEOUT, FileAccess
from .history import HISTORY_TABLE
from .memory import release_free_memory
from .parts import Parts
from .views import drop_views

logger = logging.getLogger(__name__)

SOURCE_SECTION = "twilio_conversations"  # [sources.twilio_conversations]
# Users per load package: a crash loses at most one part's writes, and each part costs one
# normalize and load (docs/performance.md, "Figures behind the code's choices").
DEFAULT_USERS_PER_LOAD = 10_000
# Loaded packages kept in the pipeline's folder after a run (dlt keeps every one: a scheduled
# job's disk would grow with each run). The newest few are kept to look into.
DEFAULT_KEEP_LOADED_PACKAGES = 3
# DuckDB settings for a first load (or a full refresh), which appends the bulk of the rows
# (`user_conversations`) and merges one row per user. With DuckDB's defaults (a buffer pool of
# most of the RAM, a thread per core) nothing forces its buffers out during a big INSERT; in a
# small budget it writes each finished row group to the file and moves on, and one thread keeps
# row groups in flight from multiplying with the cores. Figures: docs/performance.md, "Memory of
# a big first load". A configured `destination.duckdb.credentials.global_config` is used instead
# of either budget.
FIRST_LOAD_DUCKDB_CONFIG: Mapping[str, Any] = {"memory_limit": "64MB", "threads": 1}
# The same for a merging load (a later run, history mode): with DuckDB's defaults its buffer pool
# keeps what the merge read of the million-row tables, hundreds of MB for a part that changed a
# hundred rows. A merge needs memory in proportion to the rows it replaces, so a big one runs
# out of this budget and is finished with the defaults (`_load`); DuckDB fails it within a
# second or so. One thread, as for a first load: each thread holds buffers of its own while
# the merge runs. Figures: docs/performance.md, "Memory of a big first load".
MERGE_DUCKDB_CONFIG: Mapping[str, Any] = {"memory_limit": "128MB", "threads": 1}
DLT_LOAD_WORKERS = 20  # `pipeline.load`'s default


@dataclass
class Loaded:
    """What `load_in_parts` loaded."""

    load_infos: list[LoadInfo] = field(default_factory=list)  # one per part
    row_counts: Counter[str] = field(default_factory=Counter)  # rows normalized, per table
    recovered_packages: int = 0  # left by a run that died, loaded first
    waited_for_lock: str | None = None  # the process that held the DuckDB file, if it waited

    @property
    def load_ids(self) -> list[str]:
        return [load_id for info in self.load_infos for load_id in info.loads_ids]


def load_in_parts(
    pipeline: dlt.Pipeline,
    *,
    users_per_load: int | None = None,
    refresh: TRefreshMode | None = None,
    lock_timeout: float | None = None,
    resources: Sequence[str] | None = None,
    keep_loaded_packages: int | None = None,
    **source_kwargs: Any,
) -> Loaded:
    """Load `twilio_conversations(**source_kwargs)` into `pipeline` in parts.

    The run is the same as `pipeline.run(twilio_conversations(...))`, but loaded as one load
    package every `users_per_load` users (default `[sources.twilio_conversations]
    users_per_load`, else 10,000; 0: one package), so a run that dies late keeps what its parts
    loaded and the next run goes on from there. As dlt's `run` does, the state is restored from
    the destination first; packages a dead run left are loaded before the API is read (dlt's
    `run` would load them and stop). Into DuckDB each part is loaded in a small memory budget,
    waiting up to `lock_timeout` seconds for a file another process holds. `refresh`: dlt's,
    for the first part ("drop_sources" for a full refresh, which drops the analyst views
    first). `resources`: only these (dlt's `with_resources`). `keep_loaded_packages`: how many
    loaded packages stay in the pipeline's folder afterwards (default
    `[sources.twilio_conversations] keep_loaded_packages`, else 3; 0: none).
    """
    keep = keep_loaded_packages_setting(keep_loaded_packages)
    access = FileAccess(duckdb_path(pipeline), lock_timeout_setting(lock_timeout))
    parts = Parts(users_per_load_setting(users_per_load), wait=access.call)
    source = _twilio_conversations(parts=parts, **source_kwargs)
    if resources is not None:
        source = source.with_resources(*resources)
    _restore_state(pipeline, access)
    recovered = _finish_pending_packages(pipeline, access)
    if refresh == "drop_sources":
        access.call(lambda: drop_views(pipeline))  # PostgreSQL keeps tables views depend on
    loaded = _load_parts(pipeline, source, parts, access, refresh=refresh)
    prune_loaded_packages(pipeline, keep)
    loaded.recovered_packages = recovered
    loaded.waited_for_lock = access.waited_for
    return loaded


def _twilio_conversations(**kwargs: Any) -> DltSource:
    from . import twilio_conversations  # the package imports this module

    source: DltSource = twilio_conversations(**kwargs)
    return source


def _load_parts(
    pipeline: dlt.Pipeline,
    source: DltSource,
    parts: Parts,
    access: FileAccess,
    *,
    refresh: TRefreshMode | None = None,
) -> Loaded:
    """Extract, normalize and load `source`, made with `parts`, one part at a time until its scan
    is complete. `access` waits for a DuckDB file another process holds."""
    loaded = Loaded()
    file_format = preferred_loader_file_format(pipeline)
    # Without the scan's resource (a source narrowed to `services`) the run is one part.
    scanned = "user_conversations" in source.selected_resources
    try:
        while True:
            pipeline.extract(source, refresh=refresh, loader_file_format=file_format)
            refresh = None  # the refresh is the first part's only
            release_free_memory()
            normalize_info = pipeline.normalize()
            release_free_memory()
            counts = normalize_info.row_counts if normalize_info else {}
            if pipeline.list_normalized_load_packages():  # not where the part held nothing
                appends = _appends(pipeline, counts)
                budget = FIRST_LOAD_DUCKDB_CONFIG if appends else MERGE_DUCKDB_CONFIG
                loaded.load_infos.append(access.call(functools.partial(_load, pipeline, budget)))
            loaded.row_counts.update(counts)
            if parts.complete or not scanned:
                return loaded
    finally:
        parts.close()


def _appends(pipeline: dlt.Pipeline, counts: Mapping[str, int]) -> bool:
    """Whether this part appends the user conversations (a first load, `first_load.py`): dlt
    keeps the resource's write disposition in the schema. History's scd2 merge takes every row
    it is sent, so a part that writes history merges all the same."""
    table = pipeline.default_schema.tables.get("user_conversations", {})
    return table.get("write_disposition") == "append" and HISTORY_TABLE not in counts


def _restore_state(pipeline: dlt.Pipeline, access: FileAccess) -> None:
    """As dlt's `run` does first: the state comes back from the destination when the local copy
    is missing or older."""
    if pipeline.config.restore_from_destination and not pipeline.dev_mode:
        access.call(pipeline.sync_destination)


def _finish_pending_packages(pipeline: dlt.Pipeline, access: FileAccess) -> int:
    """Normalize and load what a crashed run left behind; return how many packages that was.

    Loaded in the merge budget: a leftover is most often a part of a later run, merging into
    tables that may hold a million users' rows, and the budget bounds a first load's append as
    well; one too big for it is finished with the defaults, as any load (`_load`).
    """
    if not pipeline.has_pending_data:
        return 0
    pending = len(pipeline.list_extracted_load_packages()) + len(
        pipeline.list_normalized_load_packages()
    )
    if pipeline.list_extracted_load_packages():
        pipeline.normalize()
    access.call(lambda: _load(pipeline, MERGE_DUCKDB_CONFIG))
    return pending


def preferred_loader_file_format(pipeline: dlt.Pipeline) -> Any:
    """Parquet where the destination takes it, else its own default.

    Our arrow tables reach parquet without a per-row pass, several times faster than the
    default insert_values into DuckDB and PostgreSQL (through the ADBC driver of the `postgres`
    extra); figures in docs/performance.md, "Figures behind the code's choices".
    """
    capabilities = pipeline.destination.capabilities()
    if "parquet" in capabilities.supported_loader_file_formats:
        return "parquet"
    return None


def users_per_load_setting(given: int | None) -> int | None:
    """`users_per_load` as given, else from `[sources.twilio_conversations]`, else the default;
    0 loads the whole run in one package."""
    return _count_setting("users_per_load", given, DEFAULT_USERS_PER_LOAD) or None


def keep_loaded_packages_setting(given: int | None) -> int:
    """`keep_loaded_packages` as given, else from `[sources.twilio_conversations]`, else the
    default."""
    return _count_setting("keep_loaded_packages", given, DEFAULT_KEEP_LOADED_PACKAGES)


def _count_setting(name: str, given: int | None, default: int) -> int:
    """A whole number of 0 or more: as given, else from `[sources.twilio_conversations]`, else
    `default`."""
    if given is None:
        given = dlt.config.get(f"sources.{SOURCE_SECTION}.{name}", int)
    if given is None:
        return default
    if not isinstance(given, int) or isinstance(given, bool) or given < 0:
        raise ConfigurationError(f"{name} must be a whole number, 0 or more; got {given!r}")
    return given


def prune_loaded_packages(pipeline: dlt.Pipeline, keep: int) -> int:
    """Delete all but the newest `keep` loaded packages from the pipeline's folder; the number
    deleted. What they loaded stays in the destination, and dlt's trace and state do not need
    them."""
    loaded = sorted(pipeline.list_completed_load_packages())  # load ids sort by time
    old = loaded[: max(0, len(loaded) - keep)]
    for load_id in old:
        shutil.rmtree(pipeline.get_load_package_info(load_id).package_path, ignore_errors=True)
    return len(old)


def lock_timeout_setting(given: float | None) -> float:
    """`lock_timeout` as given, else from `[sources.twilio_conversations]`, else the default."""
    if given is None:
        given = dlt.config.get(f"sources.{SOURCE_SECTION}.lock_timeout", float)
    if given is None:
        return DEFAULT_LOCK_TIMEOUT
    if given < 0:
        raise ConfigurationError(f"lock_timeout must be 0 or more seconds, got {given}")
    return float(given)


def _duckdb_credentials(pipeline: dlt.Pipeline) -> Any:
    """The resolved credentials of a DuckDB pipeline (dlt's `DuckDbCredentials`), or None
    (another destination, or a configuration that does not resolve: the run reports what is
    wrong with it)."""
    if not isinstance(pipeline.destination, dlt.destinations.duckdb):
        return None
    try:
        return pipeline.destination_client().config.credentials
    except ConfigurationException:
        return None


def duckdb_path(pipeline: dlt.Pipeline) -> str | None:
    """The local DuckDB file the pipeline loads into, or None (another destination, memory)."""
    database = getattr(_duckdb_credentials(pipeline), "database", None)
    if not isinstance(database, str) or database in ("", ":memory:"):
        return None
    return database


def _load(pipeline: dlt.Pipeline, budget: Mapping[str, Any]) -> LoadInfo:
    """`pipeline.load()`; into DuckDB, with the database opened once for the whole load and the
    `budget` of DuckDB settings (`_duckdb_for_the_load`).

    Should DuckDB run out of memory all the same (the merge of a first load's users does from
    about 80,000 users, a later run's merge of more than some 25,000 rows), the load package is
    finished with the configured settings.
    """
    with _duckdb_for_the_load(pipeline, budget) as workers:
        try:
            return pipeline.load(workers=workers)
        except PipelineStepFailed as exc:
            if not _out_of_memory(exc):
                raise
            logger.warning("DuckDB ran out of its memory budget; loading with its defaults")
    # the package is normalized and partly loaded: loading it again finishes it (completed jobs
    # stay)
    return pipeline.load()


def _out_of_memory(exc: BaseException) -> bool:
    """Whether DuckDB's "Out of Memory Error" is behind `exc` (dlt keeps a failed job's
    message, not the exception, so look at the messages too)."""
    return any("Out of Memory Error" in str(cause) for cause in causes(exc))


@contextmanager
def _duckdb_for_the_load(pipeline: dlt.Pipeline, budget: Mapping[str, Any]) -> Iterator[int]:
    """For one load into the pipeline's DuckDB file: the file opened here, once, for all of the
    load's jobs, and the `budget` of settings with one job at a time (the load workers it
    yields); afterwards the file is closed and the destination's credentials are as they were.

    Left to dlt, each load job opens the file and closes it again (a first load has eight jobs,
    each open and close some 25 ms; docs/performance.md, "Figures behind the code's choices"),
    and between two jobs another process can take the file. A `global_config` the user configured
    replaces the budget. Nothing changes where the destination is not DuckDB or its credentials
    do not resolve (the run reports why), are an object or an open connection (the caller's to
    configure), or name `statements` (DuckDB would run them again for every job).
    """
    resolved = _duckdb_credentials(pipeline)
    given = pipeline.destination.config_params.get("credentials")
    if (
        resolved is None
        or not (given is None or isinstance(given, str | Mapping))
        or resolved.statements
        or resolved.read_only
    ):
        yield DLT_LOAD_WORKERS
        return
    import duckdb

    configured = resolved.global_config
    connection = duckdb.connect(resolved.database)
    given_destination = pipeline.destination
    try:
        # A factory of the pipeline's own, with the connection as its credentials, for this load
        # only: `pipeline.load(credentials=...)` would keep them for every later call (the
        # views, the next part). The credentials are of the resolved ones' class: dlt exports
        # `DuckDbCredentials` only from `dlt.destinations.impl`.
        credentials = type(resolved)(
            connection,
            extensions=resolved.extensions,
            global_config=configured if configured is not None else dict(budget),
            pragmas=resolved.pragmas,
            local_config=resolved.local_config,
            session_timezone=resolved.session_timezone,
        )
        params = given_destination.config_params | given_destination.caps_params
        pipeline.destination = type(given_destination)(**params | {"credentials": credentials})
        # One load job at a time in the budget: each concurrent INSERT keeps its own row
        # groups in flight.
        yield 1 if configured is None else DLT_LOAD_WORKERS
    finally:
        pipeline.destination = given_destination
        connection.close()  # DuckDB checkpoints the load into the file here
