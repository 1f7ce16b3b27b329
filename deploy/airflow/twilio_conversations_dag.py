"""Airflow DAG: the twilio_conversations pipeline every 30 minutes, loaded in parts by the
connector's `load_in_parts`, then a task that (re)creates the analyst views
(`twilio_conversations.views.create_views`).

Install on the scheduler and workers the connector's wheel (`make dist` builds it) with Airflow,
`pip install -c constraints.txt "twilio_conversations-0.1.0-py3-none-any.whl[airflow,postgres]"`,
then copy this file into the DAGs folder. Configuration and secrets
are dlt's: environment variables on the workers (TWILIO_API_KEY, TWILIO_API_SECRET,
DESTINATION__POSTGRES__CREDENTIALS, SOURCES__TWILIO_CONVERSATIONS__...) or a `.dlt/` folder in
the workers' working directory.

Workers keep nothing between runs: each task works in a fresh folder, removed afterwards, and
`load_in_parts` restores the pipeline state (the connector's change fingerprints) from the
destination. Use a warehouse destination, not a DuckDB file local to one worker. A long run is
loaded in parts (`users_per_load`): a task that dies late keeps the parts it loaded, and its
retry goes on from there. tests/deploy/test_orchestrators.py builds this DAG and runs it
against the emulator. Several Twilio accounts, one task each:
twilio_conversations_accounts_dag.py.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import pendulum

try:  # Airflow 3
    from airflow.sdk import TaskGroup, dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task  # type: ignore[no-redef]
    from airflow.utils.task_group import TaskGroup  # type: ignore[no-redef]

#: Any dlt destination name; its credentials come from dlt's configuration (see above).
DESTINATION = os.environ.get("TWILIO_CONVERSATIONS_DESTINATION", "postgres")
SCHEDULE = "*/30 * * * *"


@dag(
    dag_id="twilio_conversations",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,  # every run reads every user's current list: there is nothing to backfill
    max_active_runs=1,  # two runs of one pipeline would race on its state
    default_args={
        "owner": "data",
        # A failed run is safe to repeat: the parts it loaded stay, with their state, and the
        # retry reads the API again for the rest. The connector already retries each request.
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["dlt", "twilio"],
)
def twilio_conversations_dag() -> None:
    with TaskGroup("twilio_conversations"):

        @task(task_id="twilio_conversations")
        def load() -> dict[str, int]:
            from twilio_conversations import load_in_parts
            from twilio_conversations.runner import make_pipeline

            with tempfile.TemporaryDirectory() as folder:
                pipeline = make_pipeline(DESTINATION, progress="log", pipelines_dir=folder)
                # One task at a time (max_active_runs=1), each in a fresh folder: the same
                # holder of the first-load claim for all of them, so a retry finishes a first
                # load that died.
                loaded = load_in_parts(pipeline, first_load_holder="airflow:twilio_conversations")
            return dict(loaded.row_counts)

        # dlt creates tables only: this is the call the CLI makes after each load. A task of its
        # own, so a view that cannot be created fails it with the data already loaded, and a
        # retry is cheap.
        @task(task_id="create_views")
        def refresh_views() -> list[str]:
            from twilio_conversations.runner import make_pipeline
            from twilio_conversations.views import create_views

            with tempfile.TemporaryDirectory() as folder:
                pipeline = make_pipeline(DESTINATION, progress=None, pipelines_dir=folder)
                pipeline.sync_destination()  # the schema, from the destination
                return create_views(pipeline)

        load() >> refresh_views()


twilio_conversations_dag()
