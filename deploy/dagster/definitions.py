"""Dagster definitions: the twilio_conversations pipeline as assets, loaded in parts by the
connector's `load_in_parts` every 30 minutes, and the analyst views over them
(`user_conversation_summary`, `service_summary`, `stale_conversations`) as assets downstream of
the tables.

Install the wheel `make dist` builds: `pip install -c constraints.txt
"dist/twilio_conversations-0.1.0-py3-none-any.whl[dagster,postgres]"`, then `dagster dev -f
deploy/dagster/definitions.py` (or point a code location at this module). Runs overlap unless
the instance limits the job's concurrency key: put deploy/dagster/dagster.yaml in DAGSTER_HOME
(or merge it into your instance's) and keep the daemon running. Configuration and secrets are
dlt's, read when a run starts: environment variables (TWILIO_API_KEY, TWILIO_API_SECRET,
DESTINATION__POSTGRES__CREDENTIALS, SOURCES__TWILIO_CONVERSATIONS__...) or `.dlt/` in the
working directory of the code location.

`load_in_parts` restores the pipeline state from the destination when the worker's copy is
missing or older, so use a warehouse destination. A long run is loaded in parts
(`users_per_load`): a run that dies late keeps the parts it loaded. tests/deploy/
test_orchestrators.py loads these definitions and materializes the assets against the emulator.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at runtime.
import os
from collections.abc import Iterator

import dagster as dg
from twilio_conversations import load_in_parts
from twilio_conversations.runner import make_pipeline
from twilio_conversations.views import VIEWS, create_views

#: Any dlt destination name; its credentials come from dlt's configuration (see above).
DESTINATION = os.environ.get("TWILIO_CONVERSATIONS_DESTINATION", "postgres")
SCHEDULE = "*/30 * * * *"

PIPELINE = make_pipeline(DESTINATION, progress="log")
# One asset per resource (`user_conversations` loads the `users` table too), named as
# dagster-dlt names them.
ASSETS = {
    resource: dg.AssetKey(f"dlt_twilio_conversations_{resource}")
    for resource in ("services", "user_conversations")
}


@dg.multi_asset(
    specs=[dg.AssetSpec(key, group_name="twilio") for key in ASSETS.values()],
    name="twilio_conversations",
    can_subset=True,
)
def twilio_conversations_assets(
    context: dg.AssetExecutionContext,
) -> Iterator[dg.MaterializeResult]:
    # The source is made inside, per run: configuration resolves now, on the run worker.
    # Materializing a subset of the assets runs only those resources (each lists the services
    # itself, so any subset is correct).
    selected = [name for name, key in ASSETS.items() if key in context.selected_asset_keys]
    # One run at a time (the job's concurrency key) on workers that may keep nothing: the same
    # holder of the first-load claim for every run, so a retry finishes a first load that died.
    loaded = load_in_parts(
        PIPELINE, resources=selected, first_load_holder="dagster:twilio_conversations"
    )
    for name in selected:
        yield dg.MaterializeResult(
            asset_key=ASSETS[name], metadata={"rows_loaded": loaded.row_counts.get(name, 0)}
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
    # One run at a time: two runs of one pipeline would race on its state. Enforced by the
    # instance's limit for this key (dagster.yaml beside this file).
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
)
