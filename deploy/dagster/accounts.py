"""Dagster job for several Twilio accounts: one op per account, in parallel.

With `[[sources.twilio_conversations.accounts]]` or `subaccounts = true` configured (README,
"Several accounts"), `list_accounts` names the accounts (discovery asks Accounts.json) and emits
one dynamic output per name; `load_account` is mapped over them, so each account is its own
step, its own pipeline (`twilio_conversations__<name>`) and dataset (`twilio_<name>`), run by
the connector's runner (the same code as `twilio-conversations run --account NAME`), including
the analyst views in the account's dataset. Only names pass between steps, never credentials.
Dagster's default multiprocess executor runs the steps in parallel (`max_concurrent` below); a
failed account fails its own step while the others still load.

Install the wheel `make dist` builds: `pip install -c constraints.txt
"dist/twilio_conversations-0.1.0-py3-none-any.whl[dagster,postgres]"`, then
`dagster dev -f deploy/dagster/accounts.py`. Runs overlap unless the instance limits the job's
concurrency key: put deploy/dagster/dagster.yaml in DAGSTER_HOME (or merge it into your
instance's) and keep the daemon running. Configuration and secrets are dlt's, read when a step
runs. tests/deploy/test_orchestrators.py runs the job against the emulator serving a parent
and subaccounts.
"""

import os
from collections.abc import Iterator
from typing import Any

import dagster as dg

#: Any dlt destination name; its credentials come from dlt's configuration.
DESTINATION = os.environ.get("TWILIO_CONVERSATIONS_DESTINATION", "postgres")
SCHEDULE = "*/30 * * * *"
PARALLEL_ACCOUNTS = int(os.environ.get("TWILIO_CONVERSATIONS_PARALLEL_ACCOUNTS", "4"))


@dg.op(out=dg.DynamicOut(str))
def list_accounts() -> Iterator[dg.DynamicOutput[str]]:
    from twilio_conversations.accounts import plan_accounts

    plan = plan_accounts()
    if plan is None:
        raise dg.Failure(
            "no accounts configured: set [[sources.twilio_conversations.accounts]] or "
            "subaccounts = true (or use definitions.py for one account)"
        )
    for name in plan.names():  # names are [a-z0-9_]: valid mapping keys
        yield dg.DynamicOutput(name, mapping_key=name)


@dg.op
def load_account(context: dg.OpExecutionContext, name: str) -> dict[str, Any]:
    from twilio_conversations.runner import run_account

    loaded = run_account(name, DESTINATION)
    context.log.info(f"account {name}: {loaded}")
    return loaded


@dg.job(
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": PARALLEL_ACCOUNTS}),
    # One run at a time: two runs of one account's pipeline would race on its state. Enforced by
    # the instance's limit for this key (dagster.yaml beside this file).
    tags={"dagster/concurrency_key": "twilio_conversations_accounts"},
)
def twilio_conversations_accounts_job() -> None:
    list_accounts().map(load_account)


defs = dg.Definitions(
    jobs=[twilio_conversations_accounts_job],
    schedules=[
        dg.ScheduleDefinition(
            job=twilio_conversations_accounts_job,
            cron_schedule=SCHEDULE,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    ],
)
