"""Airflow DAG for several Twilio accounts: one mapped task per account, in parallel.

With `[[sources.twilio_conversations.accounts]]` or `subaccounts = true` configured (README,
"Several accounts"), `list_accounts` names the accounts (discovery asks Accounts.json) and
`load_account` is mapped over the names with Airflow's dynamic task mapping: each account is its
own task, its own pipeline (`twilio_conversations__<name>`) and dataset (`twilio_<name>`), run by
the connector's runner (the same code as `twilio-conversations run --account NAME`), including
the analyst views in the account's dataset. Only names cross XCom, never credentials: each task
resolves its account's credentials from dlt's configuration on the worker (discovery lists the
accounts again there, one request per page of accounts).

A failed account fails its own task (retried on its own); the other accounts' tasks still load.
`max_active_tis_per_dag` bounds how many accounts load at once; each account has its own Twilio
concurrency limit, but they share the workers and the destination. Install and configure as for
twilio_conversations_dag.py (a warehouse destination: workers keep no local state, dlt restores
each account's state from its dataset). tests/deploy/test_orchestrators.py runs it against the
emulator serving a parent and subaccounts.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task  # type: ignore[no-redef]

#: Any dlt destination name; its credentials come from dlt's configuration.
DESTINATION = os.environ.get("TWILIO_CONVERSATIONS_DESTINATION", "postgres")
SCHEDULE = "*/30 * * * *"
#: Accounts loading at once.
PARALLEL_ACCOUNTS = int(os.environ.get("TWILIO_CONVERSATIONS_PARALLEL_ACCOUNTS", "4"))


@dag(
    dag_id="twilio_conversations_accounts",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs of one account's pipeline would race on its state
    default_args={
        "owner": "data",
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["dlt", "twilio"],
)
def twilio_conversations_accounts_dag() -> None:
    @task
    def list_accounts() -> list[str]:
        from twilio_conversations.accounts import plan_accounts

        plan = plan_accounts()
        if plan is None:
            raise ValueError(
                "no accounts configured: set [[sources.twilio_conversations.accounts]] or "
                "subaccounts = true (or use twilio_conversations_dag.py for one account)"
            )
        return plan.names()

    @task(max_active_tis_per_dag=PARALLEL_ACCOUNTS)
    def load_account(name: str) -> dict[str, Any]:
        from twilio_conversations.runner import run_account

        return run_account(name, DESTINATION)

    load_account.expand(name=list_accounts())


twilio_conversations_accounts_dag()
