"""Airflow DAG: the twilio_conversations pipeline every 30 minutes, with dlt's PipelineTasksGroup,
then a task that (re)creates the analyst views (`twilio_conversations.views.create_views`).

Install on the scheduler and workers: `pip install -c constraints.txt ".[airflow,postgres]"`
(the connector plus Airflow), then copy this file into the DAGs folder. Configuration and secrets
are dlt's: environment variables on the workers (TWILIO_API_KEY, TWILIO_API_SECRET,
DESTINATION__POSTGRES__CREDENTIALS, SOURCES__TWILIO_CONVERSATIONS__...), a `.dlt/` folder next to
the DAG files (PipelineTasksGroup points dlt's project dir at the DAGs folder), or the Airflow
Variable `dlt_secrets_toml` holding the text of a secrets.toml.

Workers keep nothing between runs: PipelineTasksGroup gives every task a fresh working folder and
wipes it afterwards, so dlt restores the pipeline state (the connector's change fingerprints) from
the destination. Use a warehouse destination, not a DuckDB file local to one worker.
tests/deploy/test_orchestrators.py builds this DAG and runs its task against the emulator.
Several Twilio accounts, one task each: twilio_conversations_accounts_dag.py.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from dlt.helpers.airflow_helper import PipelineTasksGroup

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task  # type: ignore[no-redef]

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
        # A failed run is safe to repeat: its state was never committed to the destination, so
        # the retry detects the same changes again. The connector already retries each request.
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["dlt", "twilio"],
)
def twilio_conversations_dag() -> None:
    from twilio_conversations import twilio_conversations
    from twilio_conversations.runner import make_pipeline, preferred_loader_file_format
    from twilio_conversations.views import create_views

    # The group must exist before the pipeline: it sets the per-task data folder dlt uses.
    tasks = PipelineTasksGroup(
        "twilio_conversations",
        use_data_folder=False,
        wipe_local_data=True,
        log_progress_period=10.0,
    )
    pipeline = make_pipeline(DESTINATION, progress=None)
    # Every task runs in a fresh folder, one at a time (max_active_runs=1): the same holder of
    # the first-load claim for all of them, so a retry finishes a first load that died.
    os.environ.setdefault(
        "SOURCES__TWILIO_CONVERSATIONS__FIRST_LOAD_HOLDER", "airflow:twilio_conversations"
    )
    # One task for the whole source: its resources share one walk of services (decomposing
    # would list them once per resource and split the state they update together).
    # The source is passed uncalled, so its configuration resolves when the task runs, not when
    # the scheduler parses this file.
    load = tasks.add_run(
        pipeline,
        twilio_conversations,
        decompose="none",
        loader_file_format=preferred_loader_file_format(pipeline),
    )

    # dlt creates tables only: this is the call the CLI makes after each load. A task of its own,
    # so a view that cannot be created fails it with the data already loaded, and a retry is cheap.
    @task(task_id="create_views", task_group=tasks)
    def refresh_views() -> list[str]:
        return create_views(pipeline)

    load[-1] >> refresh_views()


twilio_conversations_dag()
