"""Build and run the pipeline the way a scheduled job does; shared by the CLI and the example."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.destination import TDestinationReferenceArg
from dlt.common.pipeline import LoadInfo, get_dlt_pipelines_dir
from dlt.common.runtime.collector import NULL_COLLECTOR
from dlt.pipeline.progress import TCollectorArg

from . import HISTORY_TABLE
from .accounts import Account, AccountsPlan, plan_accounts
from .errors import ConfigurationError, RunInProgressError, ViewsNotRefreshedError
from .file_lock import FileAccess, lock_holder
from .loading import duckdb_path, load_in_parts, lock_timeout_setting
from .report import RunReport
from .views import SOURCE_TABLES, create_views

logger = logging.getLogger(__name__)

PIPELINE_NAME = "twilio_conversations"
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
# The source's resources and the tables each writes: one scan lists the users and their
# conversations, so `user_conversations` writes both (and the history, where kept).
RESOURCES = {
    "services": ("services",),
    "user_conversations": ("users", "user_conversations"),
    "conversations": ("conversations",),
}
DEFAULT_RESOURCES = ("services", "user_conversations")  # `conversations` when asked for


@dataclass
class RunOutcome:
    """What one run did: dlt's load info plus the connector's own counters."""

    load_info: LoadInfo | None
    report: RunReport
    rows_written: dict[str, int] = field(default_factory=dict)  # rows, deletion markers not
    # Deletion markers per table: removed services and users, users whose conversations are all
    # gone (one marker deletes all of that user's rows).
    rows_deleted: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    destination: str = ""
    dataset: str = DATASET_NAME
    views: list[str] = field(default_factory=list)
    # Tables the views read that the dataset does not have yet (a run of some resources only).
    views_wait_for: list[str] = field(default_factory=list)
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


def run(
    pipeline: dlt.Pipeline,
    *,
    full_refresh: bool = False,
    source_kwargs: Mapping[str, Any] | None = None,
    lock_timeout: float | None = None,
    users_per_load: int | None = None,
    resources: Sequence[str] | None = None,
) -> RunOutcome:
    """Run the source as `load_in_parts` loads it, then (re)create the analyst views, and
    collect what the run did for the summary. `resources`: only these (`RESOURCES`); the views
    are refreshed once the dataset holds every table they read.

    One run at a time per pipeline (a lock file beside its working dir): a second run started
    while one is going fails at once with one line. The steps that open the destination wait
    up to `lock_timeout` seconds for a DuckDB file another process holds (`file_lock.py`).
    """
    report = RunReport()
    started = time.perf_counter()
    with exclusive(pipeline.pipeline_name, pipeline.pipelines_dir):
        loaded = load_in_parts(
            pipeline,
            users_per_load=users_per_load,
            refresh="drop_sources" if full_refresh else None,
            lock_timeout=lock_timeout,
            run_report=report,
            resources=resources,
            **dict(source_kwargs or {}),
        )
        access = FileAccess(duckdb_path(pipeline), lock_timeout_setting(lock_timeout))
        missing = [] if resources is None else _missing(pipeline, SOURCE_TABLES)
        views = [] if missing else access.call(lambda: _refresh_views(pipeline))
        kept = pipeline.default_schema.data_table_names(seen_data_only=True)
    # History is reported wherever the dataset keeps it, written to or not.
    tables = tuple(t for name in resources or DEFAULT_RESOURCES for t in RESOURCES[name])
    if HISTORY_TABLE in kept and "user_conversations" in tables:
        tables += (HISTORY_TABLE,)
    return RunOutcome(
        load_info=loaded.load_infos[-1] if loaded.load_infos else None,
        report=report,
        load_ids=loaded.load_ids,
        # dlt counts the deletion markers among the rows it loads
        rows_written={
            table: loaded.row_counts.get(table, 0) - report.rows_deleted[table] for table in tables
        },
        rows_deleted={t: report.rows_deleted[t] for t in tables if report.rows_deleted[t]},
        elapsed_s=time.perf_counter() - started,
        destination=pipeline.destination.destination_name,
        dataset=pipeline.dataset_name,
        views=views,
        views_wait_for=missing,
        recovered_packages=loaded.recovered_packages,
        waited_for_lock=loaded.waited_for_lock or access.waited_for,
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
    resources: Sequence[str] | None = None,
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
                    resources=resources,
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


def _missing(pipeline: dlt.Pipeline, tables: Sequence[str]) -> list[str]:
    have = set(pipeline.default_schema.data_table_names())
    return [table for table in tables if table not in have]


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
