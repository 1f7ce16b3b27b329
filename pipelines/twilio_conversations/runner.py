"""Build and run the pipeline the way a scheduled job does; shared by the CLI and the example."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.destination import TDestinationReferenceArg
from dlt.common.pipeline import LoadInfo, get_dlt_pipelines_dir
from dlt.common.runtime.collector import NULL_COLLECTOR
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.pipeline.progress import TCollectorArg

from . import HISTORY_TABLE, fingerprints, first_load, twilio_conversations
from .accounts import Account, AccountsPlan, plan_accounts
from .errors import ConfigurationError, RunInProgressError, ViewsNotRefreshedError, causes
from .file_lock import DEFAULT_LOCK_TIMEOUT, FileAccess, lock_holder
from .fingerprints import read_fingerprints
from .memory import release_free_memory
from .report import RunReport
from .views import create_views, drop_views

logger = logging.getLogger(__name__)

PIPELINE_NAME = "twilio_conversations"
SOURCE_SECTION = "twilio_conversations"  # [sources.twilio_conversations]
# Users per load package: a crash loses at most one part's writes, and each part costs one
# normalize and load (docs/performance.md, "Bookkeeping at scale").
DEFAULT_USERS_PER_LOAD = 10_000
DUCKDB_FILE = "twilio_conversations.duckdb"
# The demo is a pipeline of its own, with its own state and its own file, named as dlt names a
# pipeline's DuckDB file (so `dlt.attach(DEMO_PIPELINE_NAME)` finds it): running it, in any
# order with `run`, never reads or writes a real account's data or state.
DEMO_PIPELINE_NAME = "twilio_conversations_demo"
DEMO_DUCKDB_FILE = f"{DEMO_PIPELINE_NAME}.duckdb"
# Not "twilio_conversations": DuckDB names the catalog after the file (twilio_conversations.duckdb)
# and a schema of the same name (DuckDB 1.5 and 2.0 alike) makes every
# `twilio_conversations.<table>` reference ambiguous (a Binder Error in dlt's own queries and in
# analysts' SQL).
DATASET_NAME = "twilio"
TABLES = ("services", "users", "user_conversations")
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
# second or so. Figures: docs/performance.md, "1,000,000 users".
MERGE_DUCKDB_CONFIG: Mapping[str, Any] = {"memory_limit": "128MB"}


@dataclass
class RunOutcome:
    """What one run did: dlt's load info plus the connector's own counters."""

    load_info: LoadInfo | None
    report: RunReport
    rows_written: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    destination: str = ""
    dataset: str = DATASET_NAME
    views: list[str] = field(default_factory=list)
    load_ids: list[str] = field(default_factory=list)  # one per part of the run
    recovered_packages: int = 0
    waited_for_lock: str | None = None  # the process that held the DuckDB file, if we waited


def make_pipeline(
    destination: TDestinationReferenceArg = "duckdb",
    dataset_name: str = DATASET_NAME,
    progress: TCollectorArg = "log",
    pipelines_dir: str | None = None,
    pipeline_name: str = PIPELINE_NAME,
) -> dlt.Pipeline:
    """The pipeline with pinned names: renaming pipeline or dataset would reset its state.

    Where another process may run the same pipeline, make it inside `exclusive()`."""
    options: dict[str, Any] = {"pipelines_dir": pipelines_dir} if pipelines_dir else {}
    pipeline: dlt.Pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=_duckdb_in_working_dir(destination),
        dataset_name=dataset_name,
        progress=progress,
        **options,
    )
    return pipeline


def make_demo_pipeline(
    progress: TCollectorArg = "log", pipelines_dir: str | None = None
) -> dlt.Pipeline:
    """The demo's pipeline: always ./twilio_conversations_demo.duckdb, whatever destination the
    real pipeline is configured with (DESTINATION__DUCKDB__CREDENTIALS is not read)."""
    return make_pipeline(
        dlt.destinations.duckdb(os.path.abspath(DEMO_DUCKDB_FILE)),
        DATASET_NAME,
        progress,
        pipelines_dir,
        DEMO_PIPELINE_NAME,
    )


def _duckdb_in_working_dir(destination: TDestinationReferenceArg) -> TDestinationReferenceArg:
    """Plain "duckdb" means ./twilio_conversations.duckdb in the current directory.

    dlt would otherwise put the file in the directory of the pipeline's *first* run (it keeps
    that in the pipeline's local state), so a run from elsewhere would write to a file the user
    is not looking at. Credentials configured the dlt way (DESTINATION__DUCKDB__CREDENTIALS,
    config.toml) still win.
    """
    if destination != "duckdb":
        return destination
    for provider in (dlt.secrets, dlt.config):
        if provider.get("destination.duckdb.credentials") is not None:
            return destination
    return dlt.destinations.duckdb(os.path.abspath(DUCKDB_FILE))


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


def run(
    pipeline: dlt.Pipeline,
    *,
    full_refresh: bool = False,
    source_kwargs: Mapping[str, Any] | None = None,
    lock_timeout: float | None = None,
    users_per_load: int | None = None,
) -> RunOutcome:
    """Run one extract-normalize-load cycle and collect what it did.

    One run at a time per pipeline (a lock file beside its working dir): a second run started
    while one is going fails at once with one line. Load packages left by a crashed run are
    finished first, then the API is read as usual, so a re-run after a failure neither loses,
    duplicates nor misses anything. (dlt's own `run` would load the leftovers and skip the
    extract.) The steps are dlt's own (`sync_destination`, `extract`, `normalize`, `load`), run
    one by one so that only those that open the destination wait for a DuckDB file another
    process holds (`lock_timeout` seconds; see `file_lock.py`). A long run is loaded in parts
    of `users_per_load` users, each its own load package (`_Parts` in __init__.py), so a crash
    keeps what the parts before it loaded.
    """
    report = RunReport(users_per_load=_users_per_load(users_per_load))
    started = time.perf_counter()
    source = twilio_conversations(run_report=report, **dict(source_kwargs or {}))
    file_format = preferred_loader_file_format(pipeline)
    access = FileAccess(_duckdb_path(pipeline), _lock_timeout(lock_timeout))
    with exclusive(pipeline.pipeline_name, pipeline.pipelines_dir):
        if pipeline.config.restore_from_destination and not pipeline.dev_mode:
            # As dlt's `run` does first: the state comes back from the destination when the
            # local copy is missing or older.
            access.call(pipeline.sync_destination)
        recovered = _finish_pending_packages(pipeline, access)
        if full_refresh:
            access.call(lambda: drop_views(pipeline))  # PostgreSQL keeps tables views depend on
        # Decided and read here, where a DuckDB file held by another process is waited for, so
        # the extract does not open the destination.
        known = not full_refresh and _has_fingerprints(pipeline, source.name)
        holder = (source_kwargs or {}).get("first_load_holder") or dlt.config.get(
            f"sources.{SOURCE_SECTION}.first_load_holder", str
        )
        decision = access.call(
            lambda: first_load.decide(pipeline, known=known, emptied=full_refresh, holder=holder)
        )
        report.first_load = decision
        if known:
            report.fingerprints_read = access.call(lambda: read_fingerprints(pipeline))
        row_counts: Counter[str] = Counter()
        load_ids: list[str] = []
        parts = 0
        while True:  # one load package per part of the run (`_Parts` in __init__.py)
            pipeline.extract(
                source,
                refresh="drop_sources" if full_refresh and not parts else None,
                loader_file_format=file_format,
            )
            release_free_memory()
            normalize_info = pipeline.normalize()
            release_free_memory()
            counts = normalize_info.row_counts if normalize_info else {}
            # A first load appends, but history's scd2 merge takes every row it is sent.
            appends = decision.append and HISTORY_TABLE not in counts
            budget = FIRST_LOAD_DUCKDB_CONFIG if appends else MERGE_DUCKDB_CONFIG
            load_info = access.call(functools.partial(_load, pipeline, budget))
            row_counts.update(counts)
            load_ids.extend(load_info.loads_ids if load_info else [])
            parts += 1
            if not report.unfinished:
                break
        views = access.call(lambda: _refresh_views(pipeline))
    # History is reported wherever the dataset keeps it, written to or not.
    kept = pipeline.default_schema.data_table_names(seen_data_only=True)
    tables = TABLES + ((HISTORY_TABLE,) if HISTORY_TABLE in kept else ())
    return RunOutcome(
        load_info=load_info,
        report=report,
        load_ids=load_ids,
        rows_written={table: row_counts.get(table, 0) for table in tables},
        elapsed_s=time.perf_counter() - started,
        destination=pipeline.destination.destination_name,
        dataset=pipeline.dataset_name,
        views=views,
        recovered_packages=recovered,
        waited_for_lock=access.waited_for,
    )


@dataclass
class AccountRun:
    """What a multi-account run did for one account: its outcome, or the error it failed with."""

    account: Account
    dataset: str
    outcome: RunOutcome | None = None
    error: Exception | None = None
    pipeline: dlt.Pipeline | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def run_accounts(
    plan: AccountsPlan,
    destination: TDestinationReferenceArg = "duckdb",
    dataset_prefix: str = DATASET_NAME,
    *,
    progress: Callable[[], TCollectorArg] | None = None,
    full_refresh: bool = False,
    source_kwargs: Mapping[str, Any] | None = None,
    lock_timeout: float | None = None,
    users_per_load: int | None = None,
    pipelines_dir: str | None = None,
    foreground: bool = False,
) -> list[AccountRun]:
    """Run each account of `plan` as its own pipeline (`twilio_conversations__<name>`) into its
    own dataset (`<dataset_prefix>_<name>`) of the same destination, one after the other.

    Keys, fingerprints, deletions, state, views and history are therefore per account: a service
    that vanished from account A is tombstoned only in A's dataset, by A's run. One account's
    failure (a rejected token, a 5xx storm, a configured service it cannot see) is kept in its
    `AccountRun` and the next account runs; only Ctrl-C stops them all (`foreground`: at
    once, as the CLI wants, instead of after dlt's current step).
    """
    results: list[AccountRun] = []
    for account in plan.accounts:
        dataset = account.dataset_name(dataset_prefix)
        result = AccountRun(account, dataset)
        results.append(result)
        try:
            with exclusive(account.pipeline_name, pipelines_dir):
                pipeline = result.pipeline = make_pipeline(
                    destination,
                    dataset,
                    progress() if progress else NULL_COLLECTOR,
                    pipelines_dir,
                    account.pipeline_name,
                )
                if foreground:
                    pipeline.config.runtime.intercept_signals = False
                result.outcome = run(
                    pipeline,
                    full_refresh=full_refresh,
                    source_kwargs={**dict(source_kwargs or {}), **account.source_kwargs()},
                    lock_timeout=lock_timeout,
                    users_per_load=users_per_load,
                )
        except Exception as exc:  # this account's; the others still run
            logger.debug("account %s failed", account.name, exc_info=True)
            result.error = exc
    return results


def run_account(name: str, destination: TDestinationReferenceArg = "duckdb") -> dict[str, Any]:
    """Run the configured account `name` alone and return what it loaded (account, dataset,
    rows written per table); its error is raised. One orchestrator task per account calls this
    (deploy/airflow, deploy/dagster): only the name crosses between tasks, never a credential."""
    plan = plan_accounts()
    if plan is None:
        raise ConfigurationError(
            "no accounts configured: set [[sources.twilio_conversations.accounts]] or "
            "subaccounts = true"
        )
    (result,) = run_accounts(plan.select([name]), destination)
    if result.error is not None:
        raise result.error
    assert result.outcome is not None
    return {"account": name, "dataset": result.dataset, **result.outcome.rows_written}


def _users_per_load(given: int | None) -> int | None:
    """`users_per_load` as given, else from `[sources.twilio_conversations]`, else the default;
    0 loads the whole run in one package."""
    if given is None:
        given = dlt.config.get(f"sources.{SOURCE_SECTION}.users_per_load", int)
    if given is None:
        return DEFAULT_USERS_PER_LOAD
    if not isinstance(given, int) or isinstance(given, bool) or given < 0:
        raise ConfigurationError(f"users_per_load must be a whole number, 0 or more; got {given!r}")
    return given or None


def _lock_timeout(given: float | None) -> float:
    """`lock_timeout` as given, else from `[sources.twilio_conversations]`, else the default."""
    if given is None:
        given = dlt.config.get(f"sources.{SOURCE_SECTION}.lock_timeout", float)
    if given is None:
        return DEFAULT_LOCK_TIMEOUT
    if given < 0:
        raise ConfigurationError(f"lock_timeout must be 0 or more seconds, got {given}")
    return float(given)


def _duckdb_credentials(pipeline: dlt.Pipeline) -> DuckDbCredentials | None:
    """The resolved credentials of a DuckDB pipeline, or None (another destination, or a
    configuration that does not resolve: the run reports what is wrong with it)."""
    if not isinstance(pipeline.destination, dlt.destinations.duckdb):
        return None
    try:
        credentials = pipeline.destination_client().config.credentials
    except ConfigurationException:
        return None
    return credentials if isinstance(credentials, DuckDbCredentials) else None


def _duckdb_path(pipeline: dlt.Pipeline) -> str | None:
    """The local DuckDB file the pipeline loads into, or None (another destination, memory)."""
    database = getattr(_duckdb_credentials(pipeline), "database", None)
    if not isinstance(database, str) or database in ("", ":memory:"):
        return None
    return database


# Run locks this thread holds: a run inside `exclusive` does not lock again. (Per thread: two
# threads of one process running one pipeline still meet the lock.)
_held = threading.local()


@contextmanager
def exclusive(
    pipeline_name: str = PIPELINE_NAME, pipelines_dir: str | None = None
) -> Iterator[None]:
    """One run at a time per pipeline: an exclusive, non-blocking lock beside the pipeline's
    working folder, released when the process dies; a second run fails at once with one line.

    `run` takes it; take it yourself before `make_pipeline` where another process may be running
    the same pipeline (the CLI does): dlt wipes the working folder of a pipeline that has no
    state yet as it makes it, which would pull the folder from under another process's first
    run of that pipeline.
    """
    folder = os.path.abspath(pipelines_dir or get_dlt_pipelines_dir())
    path = os.path.join(folder, f".{pipeline_name}.lock")
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgressError(
                f"another run of pipeline {pipeline_name!r} is in progress "
                f"(lock {path}); try again when it has finished"
            ) from None
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(pipeline: dlt.Pipeline, budget: Mapping[str, Any]) -> LoadInfo:
    """`pipeline.load()`; into DuckDB, with the database opened once for the whole load and the
    `budget` of DuckDB settings (`_duckdb_for_the_load`).

    Should DuckDB run out of memory all the same (the merge of a first load's users does from
    about 80,000 users, a later run's merge of more than some 25,000 rows), the load package is
    finished with the configured settings.
    """
    with _duckdb_for_the_load(pipeline, budget):
        try:
            return pipeline.load()
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
def _duckdb_for_the_load(pipeline: dlt.Pipeline, budget: Mapping[str, Any]) -> Iterator[None]:
    """For one load into the pipeline's DuckDB file: the file opened here, once, for all of the
    load's jobs, and the `budget` of settings with one job at a time; afterwards the file is
    closed and the destination's settings are as they were.

    Left to dlt, each load job opens the file and closes it again (a first load has eight jobs,
    each open and close some 25 ms; docs/performance.md, "The file opened once a load"), and
    between two jobs another process can take the file. A `global_config` the user configured
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
        yield
        return
    import duckdb

    destination = pipeline.destination
    saved = dict(destination.config_params), dict(destination.caps_params)
    configured = resolved.global_config
    connection = duckdb.connect(resolved.database)
    try:
        # Where dlt's own run(credentials=...) puts them.
        destination.config_params["credentials"] = DuckDbCredentials(
            connection,
            extensions=resolved.extensions,
            global_config=configured if configured is not None else dict(budget),
            pragmas=resolved.pragmas,
            local_config=resolved.local_config,
            session_timezone=resolved.session_timezone,
        )
        if configured is None:
            # One load job at a time: each concurrent INSERT keeps its own row groups in
            # flight. (`load.parallelism_strategy`, if configured, still wins.)
            destination.caps_params.setdefault("loader_parallelism_strategy", "sequential")
        yield
    finally:
        destination.config_params.clear()
        destination.config_params.update(saved[0])
        destination.caps_params.clear()
        destination.caps_params.update(saved[1])
        connection.close()  # DuckDB checkpoints the load into the file here


def _has_fingerprints(pipeline: dlt.Pipeline, source_name: str) -> bool:
    """Whether this pipeline's state says its fingerprints are loaded (in `_fingerprints`, or in
    the state itself for a pipeline made before that table)."""
    resources = pipeline.state.get("sources", {}).get(source_name, {}).get("resources", {})
    return any(
        resources.get(table, {}).get(fingerprints.MARKER)
        or resources.get(table, {}).get(fingerprints.LEGACY_KEY)
        for table in TABLES
    )


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


def _refresh_views(pipeline: dlt.Pipeline) -> list[str]:
    """(Re)create the analyst views. A view that cannot be created fails the run: the data is
    loaded (the next run finds nothing to load and refreshes them again), but an analyst's
    query would fail or read stale definitions."""
    try:
        return create_views(pipeline)
    except Exception as exc:
        if lock_holder(exc) is not None:
            raise
        raise ViewsNotRefreshedError(
            f"the data is loaded, but the views were not refreshed: {str(exc).splitlines()[0]}"
        ) from exc
