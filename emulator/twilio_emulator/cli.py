"""Command line: ``twilio-emulator`` (or ``python -m twilio_emulator``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from contextlib import suppress
from types import FrameType
from typing import Any

from .accounts import V2010
from .config import (
    ACCOUNT_STATUSES,
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    MAX_SUBACCOUNTS,
    PAGE_SIZE_POLICIES,
    DataSpec,
    EmulatorConfig,
)
from .faults import DEFAULT_MIX, FaultKind
from .server import Emulator
from .store import Store


def _rate(value: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return rate


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return number


def _seconds_or_none(value: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    return _non_negative(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every emulator flag to ``parser``."""
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    net.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to bind, 0 = any free port (default: %(default)s)",
    )
    net.add_argument(
        "--public-url",
        default=None,
        help="base of every *_url in responses (default: the Host the client connected to)",
    )
    auth = parser.add_argument_group("credentials (HTTP Basic)")
    auth.add_argument(
        "--account-sid", default=DEMO_ACCOUNT_SID, help="Account SID (default: %(default)s)"
    )
    auth.add_argument(
        "--auth-token", default=DEMO_AUTH_TOKEN, help="Auth Token (default: the demo token)"
    )
    auth.add_argument("--api-key-sid", default=None, help="also accept this API Key SID (SK...)")
    auth.add_argument("--api-key-secret", default=None, help="secret of --api-key-sid")
    accounts = parser.add_argument_group(
        "subaccounts (several accounts, each with its own credentials and data; off by default)"
    )
    accounts.add_argument(
        "--subaccounts",
        type=_non_negative,
        default=0,
        metavar="N",
        help=f"also serve N subaccounts of the account above (at most {MAX_SUBACCOUNTS}), each "
        "with its own SID, auth token and data; the parent's credentials list them all at "
        f"GET {V2010}/Accounts.json (default: %(default)s)",
    )
    accounts.add_argument(
        "--subaccount-api-keys",
        action="store_true",
        help="give every subaccount an API key (SK...) and secret of its own",
    )
    accounts.add_argument(
        "--subaccount-statuses",
        default="",
        metavar="STATUS[,STATUS...]",
        help="statuses of the first subaccounts, from: "
        + ", ".join(ACCOUNT_STATUSES)
        + "; suspended and closed ones are listed but their credentials are refused "
        "(default: all active)",
    )
    data = parser.add_argument_group("generated data (deterministic for a seed)")
    data.add_argument("--seed", type=int, default=7, help="data seed (default: %(default)s)")
    data.add_argument(
        "--services",
        type=int,
        default=3,
        help="number of services; the first is the default service (default: %(default)s)",
    )
    data.add_argument(
        "--users", type=_non_negative, default=40, help="users per service (default: %(default)s)"
    )
    data.add_argument(
        "--max-conversations",
        type=_non_negative,
        default=120,
        help="most conversations of one user in the mixed distribution "
        "(0, 1-10, 11-50, >50) (default: %(default)s)",
    )
    data.add_argument(
        "--conversations-per-user",
        type=_non_negative,
        default=None,
        help="give every user exactly N conversations instead of the mix (benchmarks)",
    )
    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument(
        "--page-size-policy",
        choices=PAGE_SIZE_POLICIES,
        default="clamp",
        help="PageSize above the spec maximum (50; 100 for services): clamp it, reject it "
        "(strict, 400/20007) or honour it up to 1000 (lenient) (default: %(default)s)",
    )
    behaviour.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay added to every request, in ms (default: %(default)s)",
    )
    behaviour.add_argument(
        "--fault-rate",
        type=_rate,
        default=0.0,
        help="share of requests (0..1) that fail with a random fault kind (default: %(default)s)",
    )
    behaviour.add_argument(
        "--fault-kinds",
        default=",".join(DEFAULT_MIX),
        help="comma-separated fault kinds used by --fault-rate, from: "
        + ", ".join(k.value for k in FaultKind)
        + " (default: %(default)s)",
    )
    behaviour.add_argument(
        "--fault-seed", type=int, default=None, help="seed of the fault sequence (default: --seed)"
    )
    behaviour.add_argument(
        "--retry-after",
        type=_non_negative,
        default=1,
        help="Retry-After seconds of the 429-retry-after fault (default: %(default)s)",
    )
    behaviour.add_argument(
        "--slow-ms",
        type=float,
        default=2000.0,
        help="extra delay of the 'slow' fault, in ms (default: %(default)s)",
    )
    limit = parser.add_argument_group(
        "account concurrency limit (Twilio's 429 / 20429; off by default)"
    )
    limit.add_argument(
        "--account-concurrency",
        type=_positive,
        default=None,
        metavar="N",
        help="requests the account may have in flight at once (latency included); beyond it "
        "429 / 20429 at once (default: no limit)",
    )
    limit.add_argument(
        "--other-traffic",
        type=_non_negative,
        default=0,
        metavar="N",
        help="of those, slots held permanently by the account's other traffic (its production "
        "app), also counted in Twilio-Concurrent-Requests (default: %(default)s)",
    )
    limit.add_argument(
        "--limit-retry-after",
        type=_seconds_or_none,
        default=None,
        metavar="SECONDS|none",
        help="Retry-After seconds of the account limit's 429, or 'none' to send no Retry-After, "
        "as Twilio does not promise it (default: none)",
    )
    behaviour.add_argument(
        "-v", "--verbose", action="store_true", help="log one line per request (DEBUG)"
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """An :class:`EmulatorConfig` from parsed flags."""
    kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    for kind in kinds:
        FaultKind(kind)  # raises ValueError on an unknown kind
    return EmulatorConfig(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        api_key_sid=args.api_key_sid,
        api_key_secret=args.api_key_secret,
        data=DataSpec(
            seed=args.seed,
            services=args.services,
            users=args.users,
            max_conversations=args.max_conversations,
            conversations_per_user=args.conversations_per_user,
        ),
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        fault_kinds=kinds,
        fault_seed=args.fault_seed,
        retry_after_s=args.retry_after,
        slow_ms=args.slow_ms,
        page_size_policy=args.page_size_policy,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        account_concurrency=args.account_concurrency,
        other_traffic=args.other_traffic,
        limit_retry_after_s=args.limit_retry_after,
        subaccounts=args.subaccounts,
        subaccount_api_keys=args.subaccount_api_keys,
        subaccount_statuses=tuple(
            status.strip() for status in args.subaccount_statuses.split(",") if status.strip()
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Generate the data, serve until Ctrl-C, return an exit code."""
    if getattr(args, "verbose", False):
        logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("twilio_emulator").setLevel(logging.DEBUG)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    store = Store.generate(config.data, config.account_sid)
    rows = store.membership_count()
    emulator = Emulator(config, store)  # generates the subaccounts' data, if any
    elapsed = time.perf_counter() - started
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # Stop cleanly on SIGTERM (service managers, containers) and on SIGINT even when the
        # parent left SIGINT ignored (a background job of a non-interactive shell, some test
        # runners' workers): Python keeps an inherited "ignore", and the emulator would then
        # never stop (seen in CI).
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _interrupt)
    # From before the server answers until it is stopped, Ctrl-C and SIGTERM stop it cleanly:
    # a client that has seen the first line may send them at once.
    try:
        try:
            emulator.start()
        except OSError as err:
            print(f"error: cannot listen on {config.host}:{config.port}: {err}", file=sys.stderr)
            return 1
        print(f"Twilio Conversations emulator listening on {emulator.base_url}", flush=True)
        for line in _credential_lines(config, emulator.base_url):
            print(line, flush=True)
        for line in _account_lines(emulator):
            print(line, flush=True)
        print(
            f"Data: seed {config.data.seed}, {len(store.services)} service(s) "
            f"(default {store.default_service_sid}), {rows} user-conversation rows, "
            f"generated in {elapsed:.2f} s. Ctrl-C to stop.",
            flush=True,
        )
        if config.account_concurrency is not None or config.other_traffic:
            print(_limit_line(config), flush=True)
        emulator.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        emulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if emulator.stats.snapshot().total:
        with suppress(OSError, ValueError):  # stdout may be gone by now
            print(_stats_line(emulator), flush=True)
    return 0


def _credential_lines(config: EmulatorConfig, base_url: str) -> list[str]:
    """What a client needs to connect: the demo token is printed (it opens nothing real), a
    token or key secret given on the command line is not repeated into logs."""
    demo = config.auth_token == DEMO_AUTH_TOKEN
    token = config.auth_token if demo else "as given by --auth-token"
    lines = [f"Credentials: account SID {config.account_sid}, auth token {token}"]
    if config.api_key_sid:
        lines.append(
            f"Also accepted: API key SID {config.api_key_sid}, secret as given by --api-key-secret"
        )
    shown_token = config.auth_token if demo else "<your --auth-token>"
    lines.append(
        f"Load it: TWILIO_ACCOUNT_SID={config.account_sid} TWILIO_AUTH_TOKEN={shown_token} "
        f"twilio-conversations run --base-url {base_url}"
    )
    return lines


def _account_lines(emulator: Emulator) -> list[str]:
    """One line per subaccount (none without subaccounts). Their secrets derive from the
    parent's token: shown with the demo token, otherwise left to Accounts.json (as Twilio does,
    the parent's credentials read every subaccount's auth token there)."""
    subaccounts = emulator.accounts[1:]
    if not subaccounts:
        return []
    demo = emulator.config.auth_token == DEMO_AUTH_TOKEN
    lines = []
    for account in subaccounts:
        token = account.auth_token if demo else f"in {V2010}/Accounts.json"
        key = ""
        if account.api_key_sid:
            secret = account.api_key_secret if demo else "not shown"
            key = f", API key SID {account.api_key_sid}, secret {secret}"
        store = account.store
        lines.append(
            f"Subaccount {account.plan.index}: account SID {account.sid}, auth token {token}{key}; "
            f"{account.status}; data seed {account.plan.data.seed}, {len(store.services)} "
            f"service(s), {store.membership_count()} user-conversation rows"
        )
    lines.append(
        f"Accounts: GET {emulator.base_url}{V2010}/Accounts.json with the parent's credentials "
        f"lists all {len(emulator.accounts)} (v2010 paging: follow next_page_uri); each "
        "account's Conversations data opens only with its own credentials"
    )
    return lines


def _limit_line(config: EmulatorConfig) -> str:
    limit = config.account_concurrency
    retry = config.limit_retry_after_s
    return (
        ("Account limit: none" if limit is None else f"Account limit: {limit} concurrent requests")
        + f", {config.other_traffic} held by other traffic"
        + ("" if limit is None else f", 429 Retry-After: {'none' if retry is None else retry}")
        + "."
    )


def _stats_line(emulator: Emulator) -> str:
    snap = emulator.stats.snapshot()
    return (
        f"Served {snap.total} requests; account limit 429s: {snap.account_limit_429s}; "
        f"peak in flight for the account: {snap.peak_in_flight}; "
        f"injected faults: {sum(snap.by_fault.values())}."
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _version_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"twilio-emulator {version('twilio-emulator')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "twilio-emulator (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``twilio-emulator`` and ``python -m twilio_emulator``."""
    parser = argparse.ArgumentParser(
        prog="twilio-emulator",
        description="Serve a local emulator of Twilio's Conversations API (v1) over HTTP.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    add_arguments(parser)
    return run(parser.parse_args(argv))
