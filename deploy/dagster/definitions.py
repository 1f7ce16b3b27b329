"""Dagster definitions: the twilio_conversations pipeline as dlt assets, every 30 minutes, and
the analyst views over them (`user_conversation_summary`, `service_summary`,
`stale_conversations`) as assets downstream of the tables.

Install: `pip install -c constraints.txt ".[dagster,postgres]"`, then `dagster dev -f
deploy/dagster/definitions.py` (or point a code location at this module). Configuration and
secrets are dlt's, read when a run starts: environment variables (TWILIO_API_KEY,
TWILIO_API_SECRET, DESTINATION__POSTGRES__CREDENTIALS, SOURCES__TWILIO_CONVERSATIONS__...) or
`.dlt/` in the working directory of the code location.

dagster-dlt drops the pipeline's local state before each run and dlt restores it from the
destination, so use a warehouse destination. tests/deploy/test_orchestrators.py loads these
definitions and materializes the assets against the emulator.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at runtime.
import os
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dlt import DagsterDltResource, dlt_assets
from twilio_conversations import twilio_conversations
from twilio_conversations.credentials import TwilioCredentials
from twilio_conversations.runner import make_pipeline, preferred_loader_file_format
from twilio_conversations.views import VIEWS, create_views

#: Any dlt destination name; its credentials come from dlt's configuration (see above).
DESTINATION = os.environ.get("TWILIO_CONVERSATIONS_DESTINATION", "postgres")
SCHEDULE = "*/30 * * * *"

PIPELINE = make_pipeline(DESTINATION, progress="log")


def _spec_source() -> Any:
    """The source as dagster-dlt needs it to name the assets when the code location loads.

    Calling the source resolves its credentials, and the real ones may exist only on the run
    workers, so this copy gets a well-formed placeholder. It makes no request: each run builds
    a fresh source from the real configuration (see `twilio_conversations_assets`).
    """
    placeholder = TwilioCredentials()
    placeholder.account_sid = "AC" + "0" * 32
    placeholder.auth_token = "asset-specs-only"
    return twilio_conversations(credentials=placeholder)


@dlt_assets(
    dlt_source=_spec_source(),
    dlt_pipeline=PIPELINE,
    name="twilio_conversations",
    group_name="twilio",
)
def twilio_conversations_assets(
    context: AssetExecutionContext, dlt: DagsterDltResource
) -> Iterator[Any]:
    # A fresh source per run: configuration resolves now, and the run's counters start at 0.
    # Materializing a subset of the assets runs only those resources (each lists the services
    # itself, so any subset is correct; `user_conversations` loads the `users` table too).
    # One run at a time (the job's concurrency key) on workers that may keep nothing: the same
    # holder of the first-load claim for every run, so a retry finishes a first load that died.
    yield from dlt.run(
        context=context,
        dlt_source=twilio_conversations(first_load_holder="dagster:twilio_conversations"),
        loader_file_format=preferred_loader_file_format(PIPELINE),
    )


@dg.multi_asset(
    specs=[
        # skippable: on a destination without SQL views (filesystem) nothing is materialized.
        dg.AssetSpec(
            view, deps=twilio_conversations_assets.keys, group_name="twilio", skippable=True
        )
        for view in VIEWS
    ],
    name="twilio_conversations_views",
)
def twilio_conversations_views() -> Iterator[dg.MaterializeResult]:
    # dlt creates tables only; the same call the CLI makes after each load (re)creates the views.
    for view in create_views(PIPELINE):
        yield dg.MaterializeResult(asset_key=view)


twilio_conversations_job = dg.define_asset_job(
    "twilio_conversations_job",
    selection=dg.AssetSelection.assets(twilio_conversations_assets, twilio_conversations_views),
    # One run at a time: two runs of one pipeline would race on its state.
    tags={"dagster/concurrency_key": "twilio_conversations"},
)

defs = dg.Definitions(
    assets=[twilio_conversations_assets, twilio_conversations_views],
    jobs=[twilio_conversations_job],
    schedules=[
        dg.ScheduleDefinition(
            job=twilio_conversations_job,
            cron_schedule=SCHEDULE,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    ],
    resources={"dlt": DagsterDltResource()},
)
