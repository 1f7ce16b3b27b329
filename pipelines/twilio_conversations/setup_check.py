"""`twilio-conversations check`: is the setup ready for a run? Loads nothing, writes nothing.

What a run needs, each checked once, one line each (`ok`, `FAILED`, `warn`, `skipped`):

* settings: resolved exactly as a run resolves them (dlt injection from `.dlt/config.toml`,
  `.dlt/secrets.toml`, the environment, `TWILIO_*`), by making the source itself, so the typo
  check (`config_check.check_settings`), the SID, page size, window and PII checks and the
  credentials' own checks run as in a run; the accounts of a multi-account setup as the runner
  plans them (`accounts.plan_accounts`);
* origin and region: `base_url`, which Twilio region and edge its host names, and that it
  answers; credentials: accepted by that first request;
* services: the configured `service_sids`, each found (`discovery.Catalog.services`, the run's
  own listing and error), or the first page of `/v1/Services`: "N", or "N+" when the list has
  more pages (Twilio's lists carry no totals, so none is made up);
* users: for each of the first `MAX_SERVICES` services reached, one page of its users
  (`PageSize` `USERS_PAGE_SIZE`), or each configured user (`user_sids`, up to `MAX_USER_REFS`)
  resolved as the run resolves it (`GET .../Users/{ref}`);
* destination and dataset: reachable and writable, writing nothing. DuckDB: the file's folder
  is writable, an existing file opens read-only and no other process holds it (naming the one
  that does); PostgreSQL: a connection and read-only privilege queries; other SQL destinations:
  a connection and whether the dataset exists; filesystem: the bucket or folder exists and can
  be listed (a local one: is writable).

Every request goes through the run's `TwilioClient` (retries, origin pinning, its
unreachable-server and rejected-credentials errors): a handful, counted on the last line.
A failed check carries the run's own one-line error and exit code, worded by the CLI's
`_explain` from the exception a run would raise: exit 0 every check ok, 1 a check failed at run
time (API down, credentials rejected, destination unreachable or held), 2 configuration (missing
credentials, a malformed SID, a configured service not found, an unknown destination). The
dlt pipelines it makes (for the settings' pipeline scope and the destination's client) live in a
throwaway folder removed afterwards: nothing reaches the user's pipelines dir, and no DuckDB
file is created.

The CLI's handler:

    report = check_setup(args.destination, args.dataset, args.base_url, source_kwargs=...)
    print(report.text())
    for message in report.errors:
        print(f"error: {message}", file=sys.stderr)
    return report.exit_code
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import dlt
from dlt.common.configuration.container import Container
from dlt.common.configuration.inject import get_fun_last_config, set_fun_last_config
from dlt.common.destination import TDestinationReferenceArg
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.common.pipeline import PipelineContext
from dlt.common.runtime.collector import NULL_COLLECTOR

from . import twilio_conversations
from .accounts import plan_accounts
from .client import RequestStats, RetryPolicy, TwilioClient, is_loopback
from .credentials import TwilioCredentials
from .discovery import (
    Catalog,
    user_path,
    validate_page_size,
    validate_service_sids,
    validate_user_refs,
)
from .errors import (
    AuthenticationError,
    ConfigurationError,
    DestinationLockedError,
    NotFoundError,
    TwilioAPIError,
    TwilioConnectionError,
    TwilioConnectorError,
    UnsafeUrlError,
)
from .file_lock import lock_holder, probe
from .loading import (
    keep_loaded_packages_setting,
    lock_timeout_setting,
    users_per_load_setting,
)
from .report import RunReport
from .runner import DATASET_NAME, PIPELINE_NAME, make_pipeline
from .settings import SERVICES_KEY, SERVICES_PATH, USERS_KEY, USERS_PATH

__all__ = [
    "MAX_ACCOUNTS",
    "MAX_SERVICES",
    "MAX_USER_REFS",
    "USERS_PAGE_SIZE",
    "Check",
    "CheckReport",
    "check_setup",
    "region_of",
]

#: Services whose users are looked at (one request each): enough to show the credentials reach
#: users, few enough to stay a handful of requests on an account with many services.
MAX_SERVICES = 5
#: Records asked for on a service's first page of users: the check counts them, no more.
USERS_PAGE_SIZE = 20
#: Configured users resolved (one request per user and service checked until found).
MAX_USER_REFS = 10
#: Accounts of a multi-account setup whose API side is checked (`--account` picks others).
MAX_ACCOUNTS = 5

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OK, FAILED, WARN, SKIPPED = "ok", "FAILED", "warn", "skipped"
_API_CHECKS = ("origin", "credentials", "services", "users")

Record = dict[str, Any]
T = TypeVar("T")

_log = logging.getLogger("twilio_conversations")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked and how it went.

    Attributes:
        status: `ok`, `FAILED`, `warn` (the run would go on, but something configured is not
            there) or `skipped` (an earlier failure left nothing to check it with).
        what: The thing checked: settings, accounts, origin, credentials, services, users,
            destination, dataset.
        detail: What was found; for a failure, the run's one-line error (after the service or
            user it concerns, if any).
        exit_code: For a failure, the run's exit code for that error (1 or 2); else 0.
        error: For a failure, the line `run` prints after `error: ` for it (with several
            accounts, after `account NAME: `, as `run` does).
    """

    status: str
    what: str
    detail: str
    exit_code: int = EXIT_OK
    error: str | None = None

    def line(self) -> str:
        return f"{self.status:<7}  {self.what:<11}  {self.detail}"


@dataclass
class CheckReport:
    """The checks, in order, and what they cost in API requests."""

    checks: list[Check] = field(default_factory=list)
    requests: int = 0  # responses received from the Twilio API
    retries: int = 0
    #: A multi-account setup whose accounts were discovered: the discovery's pages are not in
    #: `requests` (accounts.py counts them nowhere).
    discovery_requests_uncounted: bool = False

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAILED]

    @property
    def exit_code(self) -> int:
        """0 when no check failed, else the highest of the failures' codes (2 before 1)."""
        return max((check.exit_code for check in self.failed), default=EXIT_OK)

    @property
    def errors(self) -> list[str]:
        """The failures' one-line errors, as `run` words them (without `error: `), each once."""
        return list(dict.fromkeys(check.error or check.detail for check in self.failed))

    @property
    def lines(self) -> list[str]:
        return [check.line() for check in self.checks] + [self.summary()]

    def text(self) -> str:
        return "\n".join(self.lines)

    def summary(self) -> str:
        failed = len(self.failed)
        verdict = (
            f"{failed} of {len(self.checks)} checks FAILED"
            if failed
            else f"all {sum(c.status == OK for c in self.checks)} checks ok"
        )
        warned = sum(check.status == WARN for check in self.checks)
        if warned:
            verdict += f", {warned} warning(s)"
        extra = " plus the accounts listing's pages" if self.discovery_requests_uncounted else ""
        return (
            f"check: {verdict} · {self.requests} API request(s) answered{extra} "
            f"({self.retries} retries) · nothing loaded, nothing written"
        )


def check_setup(
    destination: TDestinationReferenceArg = "duckdb",
    dataset: str = DATASET_NAME,
    base_url: str | None = None,
    *,
    source_kwargs: Mapping[str, Any] | None = None,
    account_names: Sequence[str] | None = None,
    lock_timeout: float | None = None,
) -> CheckReport:
    """Check that a run with these arguments could go: settings, origin, region, credentials,
    the services and users the configuration reaches, the destination reachable and writable.

    Args:
        destination: As `run --destination` (a dlt destination name or factory).
        dataset: As `run --dataset` (the prefix of each account's dataset with several).
        base_url: As `run --base-url`; None: the configured one.
        source_kwargs: Source settings given as flags (`service_sids`, `user_sids`,
            `page_size`, ...), as the CLI gives them to `run`; the others come from config.
        account_names: As `run --account` with several accounts configured.
        lock_timeout: As `run --lock-timeout`; None: the configured one.

    Returns:
        The report; nothing is raised for what a run would fail on (each failure is a line
        with the run's error and exit code), only KeyboardInterrupt and the like.
    """
    report = CheckReport()
    kwargs = {k: v for k, v in dict(source_kwargs or {}).items() if v is not None}
    if base_url is not None:
        kwargs["base_url"] = base_url
    with _scratch_folder() as folder:
        targets = _plan(report, dataset, kwargs, account_names)
        _attempt(report, "settings", lambda: _run_settings(lock_timeout), None)
        stats = RequestStats()
        for target in targets[:MAX_ACCOUNTS]:
            _check_api(report, target, folder, stats)
        if len(targets) > MAX_ACCOUNTS:
            names = ", ".join(t.account or "" for t in targets[MAX_ACCOUNTS:])
            report.checks.append(
                Check(SKIPPED, "accounts", f"not checked (first {MAX_ACCOUNTS} only): {names}")
            )
        pipeline_name = targets[0].pipeline_name if targets else PIPELINE_NAME
        datasets = [t.dataset for t in targets] or [dataset]
        _check_destination(report, destination, datasets, pipeline_name, folder, lock_timeout)
        report.requests, report.retries = stats.requests, stats.retries
    return report


# -- what a run would run: one account, or each of several ------------------------------------


@dataclass(frozen=True)
class _Target:
    """One pipeline a run would run: its account (None: the single-account setup)."""

    account: str | None
    pipeline_name: str
    dataset: str
    source_kwargs: dict[str, Any]

    def label(self, detail: str) -> str:
        return f"account {self.account}: {detail}" if self.account else detail


def _plan(
    report: CheckReport,
    dataset: str,
    kwargs: dict[str, Any],
    account_names: Sequence[str] | None,
) -> list[_Target]:
    """The pipelines a run would run, as `cli._run_command` plans them; a failure is a line."""
    try:
        plan = plan_accounts(kwargs.get("base_url"))
        if plan is None:
            if account_names:
                raise ConfigurationError(  # the run's words (cli._run_command)
                    "--account needs several accounts configured: [[sources.twilio_conversations"
                    '.accounts]] or subaccounts = true (README, "Several accounts")'
                )
            return [_Target(None, PIPELINE_NAME, dataset, kwargs)]
        plan = plan.narrowed(account_names, kwargs)
    except Exception as exc:
        report.checks.append(_failure("accounts" if account_names else "settings", exc))
        report.checks.extend(
            Check(SKIPPED, what, f"the {'accounts' if account_names else 'settings'} failed")
            for what in _API_CHECKS
        )
        return []
    report.discovery_requests_uncounted = plan.discovered
    shared = {k: v for k, v in kwargs.items() if k not in ("base_url", "service_sids", "user_sids")}
    how = "listed by the parent account" if plan.discovered else "configured"
    skipped = f"; {len(plan.skipped)} skipped (not active)" if plan.skipped else ""
    report.checks.append(
        Check(OK, "accounts", f"{len(plan.accounts)} {how}: {', '.join(plan.names())}{skipped}")
    )
    return [
        _Target(
            account.name,
            account.pipeline_name,
            account.dataset_name(dataset),
            {**shared, **account.source_kwargs()},
        )
        for account in plan.accounts
    ]


def _run_settings(lock_timeout: float | None) -> None:
    """The runner's own settings, read and checked as `load_in_parts` reads them."""
    keep_loaded_packages_setting(None)
    lock_timeout_setting(lock_timeout)
    users_per_load_setting(None)


# -- the Twilio side ----------------------------------------------------------------------------


def _check_api(report: CheckReport, target: _Target, folder: str, stats: RequestStats) -> None:
    """Settings, origin, credentials, services and users of one target, in that order; each
    check after a failure is `skipped`."""
    checks = report.checks
    later = _API_CHECKS
    # The source is made as a run makes it, with the run's pipeline active (dlt looks settings
    # up in the pipeline's scope too) and the run's pipeline name; its folder is throwaway.
    warned: list[logging.LogRecord] = []
    try:
        make_pipeline(
            None,
            target.dataset,
            NULL_COLLECTOR,
            os.path.join(folder, target.pipeline_name),
            target.pipeline_name,
        )
        set_fun_last_config(twilio_conversations, None)  # type: ignore[arg-type]
        with _warnings_kept(warned):
            twilio_conversations(**target.source_kwargs)
        config = get_fun_last_config(twilio_conversations)
        assert config is not None, "dlt resolved the source's settings"
        resolved: dict[str, Any] = dict(config)
        client, page_size, service_sids, user_refs = _client(resolved, stats)
    except Exception as exc:
        checks.append(_failure("settings", exc, target))
        checks.extend(_skipped(later, "the settings failed", target))
        return
    note = f"; {len(warned)} warning(s) about them above" if warned else ""
    checks.append(Check(OK, "settings", target.label(f"resolved as a run resolves them{note}")))

    # The first request: origin reachable, credentials accepted, services reached.
    catalog = Catalog(client, page_size, service_sids, user_refs, RunReport(requests=stats))
    try:
        if service_sids:
            services, more = catalog.services(), False  # the run's listing, and its error
        else:
            services, more = _first_page(client, SERVICES_PATH, SERVICES_KEY, page_size)
    except (TwilioConnectionError, UnsafeUrlError) as exc:
        checks.append(_failure("origin", exc, target))
        checks.extend(_skipped(later[1:], "the origin failed", target))
        return
    except AuthenticationError as exc:
        checks.append(Check(OK, "origin", target.label(_origin_detail(client.base_url))))
        checks.append(_failure("credentials", exc, target))
        checks.extend(_skipped(later[2:], "the credentials were rejected", target))
        return
    except Exception as exc:
        # A configured service not listed (NotFoundError) came in a listing the credentials got.
        accepted = isinstance(exc, NotFoundError)
        checks.append(Check(OK, "origin", target.label(_origin_detail(client.base_url))))
        checks.append(
            Check(OK, "credentials", target.label(_credentials_detail(resolved["credentials"])))
            if accepted
            else Check(SKIPPED, "credentials", target.label("not confirmed: the listing failed"))
        )
        checks.append(_failure("services", exc, target))
        checks.append(Check(SKIPPED, "users", target.label("the services failed")))
        return
    checks.append(Check(OK, "origin", target.label(_origin_detail(client.base_url))))
    credentials: TwilioCredentials = resolved["credentials"]
    checks.append(Check(OK, "credentials", target.label(_credentials_detail(credentials))))
    reached = services[:MAX_SERVICES]
    checks.append(
        Check(OK, "services", target.label(_services_detail(services, more, service_sids)))
    )
    if user_refs:
        checks.extend(_resolve_users(client, reached, user_refs, target))
    else:
        for service in reached:
            checks.append(_list_users(client, service, min(page_size, USERS_PAGE_SIZE), target))
    if not reached:
        checks.append(Check(SKIPPED, "users", target.label("no service to list them in")))


def _client(
    resolved: Mapping[str, Any], stats: RequestStats
) -> tuple[TwilioClient, int, list[str], list[str]]:
    """The run's client, made from the source's resolved settings (already checked by the source:
    these calls only read them), one request at a time."""
    credentials: TwilioCredentials = resolved["credentials"]
    client = TwilioClient(
        resolved["base_url"],
        credentials.basic_auth_pair(),
        RetryPolicy(
            max_attempts=resolved["request_max_attempts"],
            max_delay=resolved["request_max_retry_delay"],
            timeout=resolved["request_timeout"],
        ),
        stats,
        max_in_flight=1,
    )
    return (
        client,
        validate_page_size(resolved["page_size"]),
        validate_service_sids(resolved["service_sids"]),
        _quietly(lambda: validate_user_refs(resolved["user_sids"])),  # the source warned
    )


def _first_page(
    client: TwilioClient, path: str, key: str, page_size: int
) -> tuple[list[Record], bool]:
    """The records of a list's first page, and whether the list has more pages: one request
    (`iter_pages` would request the next page to find out)."""
    body = client.get(f"{path}?{urlencode({'PageSize': page_size})}")
    records, meta = body.get(key), body.get("meta")
    if not isinstance(records, list) or not isinstance(meta, dict):
        raise TwilioAPIError(
            200, None, f"malformed page: no {key!r} list and 'meta' object", client.base_url + path
        )
    return [r for r in records if isinstance(r, dict)], bool(meta.get("next_page_url"))


def _list_users(client: TwilioClient, service: Record, page_size: int, target: _Target) -> Check:
    sid = str(service.get("sid"))
    try:
        users, more = _first_page(client, USERS_PATH.format(service_sid=sid), USERS_KEY, page_size)
    except Exception as exc:
        return _failure("users", exc, target, prefix=f"{_service_name(service)}: ")
    count = f"{len(users)}+ listed (more pages)" if more else f"{len(users)} listed"
    return Check(OK, "users", target.label(f"{_service_name(service)}: {count}"))


def _resolve_users(
    client: TwilioClient, services: list[Record], refs: list[str], target: _Target
) -> list[Check]:
    """Each configured user looked up as the run looks it up, in the services reached, until
    found (the run looks in every service; one finding is enough to check it)."""
    checks: list[Check] = []
    for ref in refs[:MAX_USER_REFS]:
        found: Record | None = None
        try:
            for service in services:
                try:
                    found = client.get(user_path(str(service.get("sid")), ref))
                except TwilioAPIError as exc:
                    if exc.status == 404:
                        continue  # not a user of this service
                    raise
                found["_service"] = _service_name(service)
                break
        except Exception as exc:
            checks.append(_failure("users", exc, target, prefix=f"user {ref!r}: "))
            continue
        if found is not None:
            sid = found.get("sid")
            detail = f"user {ref!r}: found in {found['_service']}" + (
                f" as {sid}" if sid != ref else ""
            )
            checks.append(Check(OK, "users", target.label(detail)))
        else:
            # A run goes on and says so ("not found ... is in no scanned service").
            where = f"the {len(services)} service(s) checked" if services else "no service"
            checks.append(Check(WARN, "users", target.label(f"user {ref!r}: not in {where}")))
    if len(refs) > MAX_USER_REFS:
        more = len(refs) - MAX_USER_REFS
        checks.append(
            Check(SKIPPED, "users", target.label(f"{more} more configured user(s) not looked up"))
        )
    return checks


def _service_name(service: Record) -> str:
    name = service.get("friendly_name")
    return f"{service.get('sid')} ({name})" if name else str(service.get("sid"))


def _services_detail(services: list[Record], more: bool, configured: list[str]) -> str:
    if configured:
        detail = f"{len(services)} configured, each found"
    elif more:
        detail = f"{len(services)}+ visible (the list has more pages)"
    elif services:
        detail = f"{len(services)} visible (every service these credentials list)"
    else:
        return "0 visible: these credentials list no Conversation Service (a run loads nothing)"
    if len(services) > MAX_SERVICES:
        detail += f"; users looked at in the first {MAX_SERVICES}"
    return detail


def _credentials_detail(credentials: TwilioCredentials) -> str:
    if credentials.api_key_sid:
        account = f" (account {credentials.account_sid})" if credentials.account_sid else ""
        return f"accepted: API key {credentials.api_key_sid}{account}"
    return f"accepted: account {credentials.account_sid} with its auth token"


def _origin_detail(base_url: str) -> str:
    return f"{base_url} answered: {region_of(base_url)}"


def region_of(base_url: str) -> str:
    """Which Twilio region (and edge) a `base_url` names, or what else it is.

    Twilio's regional hosts are `<product>.<edge>.<region>.twilio.com`
    (`conversations.dublin.ie1.twilio.com`); `<product>.twilio.com` is US1 through the default
    edge. API keys are region-bound: a key made in one region is rejected in another.
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "twilio.com" or host.endswith(".twilio.com"):
        labels = host.removesuffix("twilio.com").strip(".").split(".")
        product = labels[0] if labels and labels[0] else ""
        not_conversations = (
            f"; {host} is not the Conversations API's host"
            if product and product != "conversations"
            else ""
        )
        if len(labels) == 3:
            return f"Twilio region {labels[2]} through edge {labels[1]}{not_conversations}"
        if len(labels) == 2:
            return f"Twilio region {labels[1]}{not_conversations}"
        return f"Twilio region us1 (the default){not_conversations}"
    if is_loopback(host):
        return "loopback, not Twilio (the emulator or a tunnel)"
    return "not a Twilio host (a proxy or a gateway in front of Twilio?)"


# -- the destination ----------------------------------------------------------------------------


def _check_destination(
    report: CheckReport,
    destination: TDestinationReferenceArg,
    datasets: list[str],
    pipeline_name: str,
    folder: str,
    lock_timeout: float | None,
) -> None:
    """The destination as the run makes it (`make_pipeline`), in a throwaway pipelines folder."""
    checks = report.checks
    try:
        pipeline = make_pipeline(
            destination,
            datasets[0],
            NULL_COLLECTOR,
            os.path.join(folder, "destination"),
            pipeline_name,
        )
        if isinstance(pipeline.destination, dlt.destinations.duckdb):
            checks.extend(_check_duckdb(pipeline, datasets, lock_timeout))
        elif isinstance(pipeline.destination, dlt.destinations.postgres):
            _check_postgres(pipeline, datasets, checks)
        elif isinstance(pipeline.destination, dlt.destinations.filesystem):
            checks.extend(_check_filesystem(pipeline))
        else:
            checks.extend(_check_other(pipeline, datasets))
    except Exception as exc:
        checks.append(_failure("destination", exc))


class _NotWritable(TwilioConnectorError):
    """The destination cannot be written (a folder missing or read-only, a privilege lacking)."""


def _check_duckdb(
    pipeline: dlt.Pipeline, datasets: list[str], lock_timeout: float | None
) -> list[Check]:
    """The file's folder writable; an existing file opens read-only, holds the datasets, and no
    other process holds it (the run would wait for it). Nothing is created."""
    credentials: Any = pipeline.destination_client().config.credentials
    database = getattr(credentials, "database", None)
    if not isinstance(database, str) or database in ("", ":memory:"):
        return [Check(OK, "destination", "duckdb in memory: nothing to check")]
    path = os.path.abspath(database)
    shown, parent = _shown_path(path), os.path.dirname(path)
    if not os.path.isdir(parent):
        raise _NotWritable(f"duckdb {shown}: its folder {_shown_path(parent)} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):  # DuckDB writes its .wal beside the file
        raise _NotWritable(f"duckdb {shown}: its folder {_shown_path(parent)} is not writable")
    if not os.path.exists(path):
        return [
            Check(OK, "destination", f"duckdb {shown}: not created yet; its folder is writable"),
            *(
                Check(OK, "dataset", f"{d}: not created yet (the first run creates it)")
                for d in datasets
            ),
        ]
    if not os.access(path, os.R_OK | os.W_OK):
        raise _NotWritable(f"duckdb {shown}: the file is not writable by this user")
    timeout = lock_timeout_setting(lock_timeout)
    import duckdb

    try:  # a process writing to it (a run, a notebook's or a shell's connection) fails this
        connection = duckdb.connect(path, read_only=True)
    except Exception as exc:
        raise _held(exc, shown, timeout) from exc
    try:
        tables = dict(
            connection.execute(
                "select table_schema, count(*) from information_schema.tables "
                f"where table_schema in ({', '.join('?' for _ in datasets)}) group by 1",
                datasets,
            ).fetchall()
        )
    finally:
        connection.close()
    if not os.path.exists(f"{path}.wal"):
        # A reader also holds the file for the run's writing: the run's own probe (it opens and
        # closes the file for writing, which writes nothing unless a .wal is there to replay).
        try:
            probe(path)
        except Exception as exc:
            raise _held(exc, shown, timeout) from exc
    return [
        Check(OK, "destination", f"duckdb {shown}: opens, no other process holds it"),
        *(_dataset_tables(d, tables.get(d, 0)) for d in datasets),
    ]


def _held(exc: Exception, shown: str, timeout: float) -> Exception:
    holder = lock_holder(exc)
    if holder is None:
        return exc
    return DestinationLockedError(
        f"{shown} is held open by {holder}: a run now waits up to {timeout:.0f} s (lock_timeout)"
        " for it to close, then fails; close it (a notebook kernel, a duckdb shell)"
    )


def _dataset_tables(dataset: str, tables: int) -> Check:
    if tables:
        return Check(OK, "dataset", f"{dataset}: {tables} table(s) and view(s)")
    return Check(OK, "dataset", f"{dataset}: not created yet (the first run creates it)")


def _check_postgres(pipeline: dlt.Pipeline, datasets: list[str], checks: list[Check]) -> None:
    """Connected, and the privileges a run needs, by read-only queries: CREATE on the database
    (a dataset or its staging schema to create), CREATE on an existing dataset's schema, and
    INSERT, UPDATE and DELETE on its tables. One line for the connection, one per dataset."""
    with pipeline.sql_client() as client:
        credentials: Any = getattr(client, "credentials", None)
        where = f"{credentials.host}:{credentials.port}/{credentials.database}"
        rows = client.execute_sql(
            "select current_user, has_database_privilege(current_user, current_database(), "
            "'CREATE')"
        )
        assert rows is not None
        user, create_schemas = rows[0]
        checks.append(
            Check(
                OK,
                "destination",
                f"postgres {where}: connected as {user}"
                + ("; may create schemas" if create_schemas else ""),
            )
        )
        for dataset in datasets:
            try:
                checks.append(_postgres_dataset(client, dataset, user, bool(create_schemas)))
            except Exception as exc:
                checks.append(_failure("dataset", exc))


_SCHEMA_PRIVILEGES = """
select has_schema_privilege(current_user, n.oid, 'CREATE'),
       (select count(*) from pg_class c where c.relnamespace = n.oid and c.relkind in ('r', 'p')),
       (select count(*) from pg_class c where c.relnamespace = n.oid and c.relkind in ('r', 'p')
          and not (has_table_privilege(current_user, c.oid, 'INSERT')
                   and has_table_privilege(current_user, c.oid, 'UPDATE')
                   and has_table_privilege(current_user, c.oid, 'DELETE')))
from pg_namespace n where n.nspname = %s
"""


def _postgres_dataset(client: Any, dataset: str, user: str, create_schemas: bool) -> Check:
    rows = client.execute_sql(_SCHEMA_PRIVILEGES, dataset)
    staging = client.execute_sql(_SCHEMA_PRIVILEGES, f"{dataset}_staging")
    if not rows:
        if not create_schemas:
            raise _NotWritable(
                f"postgres: {user} may not create schemas in this database (CREATE privilege): "
                f"a run could not create the dataset {dataset}"
            )
        return Check(OK, "dataset", f"{dataset}: not created yet; {user} may create it")
    create_tables, tables, unwritable = rows[0]
    if not create_tables:
        raise _NotWritable(f"postgres: {user} may not create tables in schema {dataset}")
    if unwritable:
        raise _NotWritable(
            f"postgres: {user} may not insert, update and delete in {unwritable} of the "
            f"{tables} table(s) of schema {dataset}"
        )
    if not staging and not create_schemas:
        raise _NotWritable(
            f"postgres: {user} may not create schemas in this database (CREATE privilege): a "
            f"merging run could not create {dataset}_staging"
        )
    return Check(OK, "dataset", f"{dataset}: {tables} table(s); {user} may create and write tables")


def _check_filesystem(pipeline: dlt.Pipeline) -> list[Check]:
    """The bucket or folder exists and can be listed; a local folder is writable (or its
    nearest existing parent, where the run would create it)."""
    client: Any = pipeline.destination_client()
    bucket = str(client.bucket_path)
    url = str(client.config.bucket_url)
    if client.is_local_filesystem:
        existing = os.path.abspath(bucket)
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise _NotWritable(f"filesystem {url}: {_shown_path(existing)} is not writable")
        state = "exists" if existing == os.path.abspath(bucket) else "not created yet"
        return [Check(OK, "destination", f"filesystem {url}: {state}; writable")]
    if not client.fs_client.exists(bucket):
        raise _NotWritable(f"filesystem {url}: the bucket or path does not exist")
    listed = client.fs_client.ls(bucket, detail=False)
    return [Check(OK, "destination", f"filesystem {url}: exists, lists ({len(listed)} entries)")]


def _check_other(pipeline: dlt.Pipeline, datasets: list[str]) -> list[Check]:
    """Another destination: its configuration resolves; a SQL one is connected to and asked
    whether the dataset exists. Write privileges are not looked at."""
    name = pipeline.destination.destination_name
    try:
        client = pipeline.sql_client()
    except SqlClientNotAvailable:
        pipeline.destination_client()  # the configuration resolves, or the run's error
        return [Check(SKIPPED, "destination", f"{name}: configured; reachability not checked")]
    with client:
        exists = client.has_dataset()
    state = "exists" if exists else "not created yet"
    return [
        Check(OK, "destination", f"{name}: connected; write privileges not checked"),
        Check(OK, "dataset", f"{datasets[0]}: {state}"),
    ]


# -- helpers ------------------------------------------------------------------------------------


def _failure(
    what: str, exc: BaseException, target: _Target | None = None, prefix: str = ""
) -> Check:
    """A failed check: the run's exit code and one-line error for `exc` (`cli._explain`)."""
    from .cli import _explain  # the CLI imports this module

    code, message = _explain(exc)
    if target is None:
        return Check(FAILED, what, prefix + message, code, message)
    return Check(FAILED, what, target.label(prefix + message), code, target.label(message))


def _skipped(whats: Sequence[str], why: str, target: _Target) -> list[Check]:
    return [Check(SKIPPED, what, target.label(why)) for what in whats]


def _attempt(
    report: CheckReport, what: str, step: Callable[[], object], target: _Target | None
) -> None:
    try:
        step()
    except Exception as exc:
        report.checks.append(_failure(what, exc, target))


def _quietly(step: Callable[[], T]) -> T:
    """`step()` without its warnings on the connector's logger (said once already)."""
    saved = _log.disabled
    _log.disabled = True
    try:
        return step()
    finally:
        _log.disabled = saved


class _Kept(logging.Handler):
    def __init__(self, kept: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record)


@contextmanager
def _warnings_kept(kept: list[logging.LogRecord]) -> Iterator[None]:
    """The connector's warnings (unknown settings, ...) go where they always go, and are also
    counted for the settings line."""
    handler = _Kept(kept)
    _log.addHandler(handler)
    try:
        yield
    finally:
        _log.removeHandler(handler)


@contextmanager
def _scratch_folder() -> Iterator[str]:
    """A pipelines folder of our own, removed afterwards, and the pipeline that was active
    before (if any) active again."""
    context = Container()[PipelineContext]
    previous = context.pipeline() if context.is_active() else None
    folder = tempfile.mkdtemp(prefix="twilio-conversations-check-")
    try:
        yield folder
    finally:
        if previous is not None:
            context.activate(previous)
        elif context.is_active():
            context.deactivate()
        shutil.rmtree(folder, ignore_errors=True)


def _shown_path(path: str) -> str:
    """A path as a user recognises it: relative to the working dir when inside it."""
    full = os.path.abspath(path)
    cwd = os.getcwd()
    if full == cwd:
        return "."
    if full.startswith(cwd + os.sep):
        return "./" + os.path.relpath(full, cwd)
    return full
