"""The Airflow DAG and the Dagster definitions import, build their tasks and run for real.

Each orchestrator runs in a child interpreter: by default the one running the tests, or the one
named by AIRFLOW_PYTHON / DAGSTER_PYTHON (a separate virtualenv with the orchestrator and this
project installed), since Airflow reads its configuration and sets up logging when imported.
The tests skip, saying so, when the orchestrator is not installed there. The emulator serves in
this process; the runs load into a DuckDB file that the test then reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_DAG = REPO / "deploy" / "airflow" / "twilio_conversations_dag.py"
DAGSTER_DEFINITIONS = REPO / "deploy" / "dagster" / "definitions.py"
RESULT_MARK = "RESULT:"


def run_script(python: str, script: str, env: dict[str, str], cwd: Path) -> Any:
    """Run `script` in `python`; it prints one `RESULT:<json>` line, returned parsed."""
    done = subprocess.run(
        [python, "-c", textwrap.dedent(script)],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert done.returncode == 0 and results, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(results[-1][len(RESULT_MARK) :])


def emulator_env(emu: Any, database: Path) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": emu.account_sid,
        "TWILIO_AUTH_TOKEN": emu.auth_token,
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        "TWILIO_CONVERSATIONS_DESTINATION": "duckdb",
        "DESTINATION__DUCKDB__CREDENTIALS": str(database),
    }


def view_truth(emu: Any) -> dict[str, int]:
    """What the three views must count, from the emulator's data."""
    rows = emu.all_user_conversations()
    return {
        "user_summary_rows": sum(len(emu.users(s["sid"])) for s in emu.services()),
        "user_summary_unread": sum(r["unread_messages_count"] or 0 for r in rows),
        "service_summary_rows": len(emu.services()),
        "stale_rows": sum(
            r["conversation_state"] in ("inactive", "closed")
            and (r["unread_messages_count"] or 0) > 0
            for r in rows
        ),
    }


def view_counts(python: str, database: Path) -> dict[str, int]:
    """The views in the DuckDB file, read by `python` (see `loaded_count`)."""
    script = f"""
        import duckdb, json
        with duckdb.connect({str(database)!r}, read_only=True) as con:
            one = lambda sql: con.execute(sql).fetchone()[0]
            print("RESULT:" + json.dumps({{
                "user_summary_rows": one("select count(*) from twilio.user_conversation_summary"),
                "user_summary_unread": int(
                    one("select sum(total_unread) from twilio.user_conversation_summary")
                ),
                "service_summary_rows": one("select count(*) from twilio.service_summary"),
                "stale_rows": one("select count(*) from twilio.stale_conversations"),
            }}))
    """
    counts: dict[str, int] = run_script(python, script, {}, database.parent)
    return counts


def loaded_count(python: str, database: Path) -> int:
    """Rows in the DuckDB file, read by `python`: its DuckDB wrote the file, and DuckDB reads
    files of its own storage version or older only."""
    script = f"""
        import duckdb, json
        with duckdb.connect({str(database)!r}, read_only=True) as con:
            (count,) = con.execute("select count(*) from twilio.user_conversations").fetchone()
        print("RESULT:" + json.dumps(count))
    """
    count: int = run_script(python, script, {}, database.parent)
    return count


# -- Airflow -----------------------------------------------------------------------------------

AIRFLOW_BUILD = """
    import json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder={dags!r})
    dag = bag.dags.get("twilio_conversations")
    print("RESULT:" + json.dumps({{
        "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
        "dag_ids": sorted(bag.dags),
        "tasks": [t.task_id for t in dag.tasks] if dag else [],
        "upstream": {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}} if dag else {{}},
        "max_active_runs": dag.max_active_runs if dag else None,
        "catchup": dag.catchup if dag else None,
        "schedule": str(getattr(dag, "schedule", None) or getattr(dag, "schedule_interval", "")),
    }}))
"""

AIRFLOW_TEST_RUN = """
    import json
    from airflow.dag_processing.dagbag import DagBag
    dag = DagBag(dag_folder={dags!r}).dags["twilio_conversations"]
    run = dag.test()
    print("RESULT:" + json.dumps({{
        "state": str(run.state),
        "tasks": {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}},
    }}))
"""


@pytest.fixture
def airflow_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(AIRFLOW_DAG, dags)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
    }
    return dags, env


def test_airflow_dag_builds_one_task_for_the_source_then_the_views(
    airflow_python: str, airflow_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    dags, env = airflow_home
    result = run_script(airflow_python, AIRFLOW_BUILD.format(dags=str(dags)), env, tmp_path)
    assert result["import_errors"] == {}
    assert result["dag_ids"] == ["twilio_conversations"]
    # decompose="none": the resources share one walk of services; the views
    # come after the load.
    load, views = "twilio_conversations.twilio_conversations", "twilio_conversations.create_views"
    assert result["tasks"] == [load, views]
    assert result["upstream"] == {load: [], views: [load]}
    assert result["max_active_runs"] == 1
    assert result["catchup"] is False
    assert "*/30 * * * *" in result["schedule"]


@pytest.mark.slow
def test_airflow_dag_run_loads_the_emulator(
    airflow_python: str,
    airflow_home: tuple[Path, dict[str, str]],
    emulator: Any,
    tmp_path: Path,
) -> None:
    dags, env = airflow_home
    migrate = subprocess.run(
        [airflow_python, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    database = tmp_path / "airflow.duckdb"
    env = {**env, **emulator_env(emulator, database)}
    result = run_script(airflow_python, AIRFLOW_TEST_RUN.format(dags=str(dags)), env, tmp_path)
    assert result["state"].endswith("success"), result
    assert list(result["tasks"].values()) == ["success", "success"]
    assert loaded_count(airflow_python, database) == len(emulator.all_user_conversations())
    assert view_counts(airflow_python, database) == view_truth(emulator)


# -- Dagster -----------------------------------------------------------------------------------

DAGSTER_LOAD = """
    import importlib.util, json
    spec = importlib.util.spec_from_file_location("twilio_definitions", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = module.defs.get_repository_def()
    result = {{
        "assets": sorted(k.to_user_string() for k in module.twilio_conversations_assets.keys),
        "views": sorted(k.to_user_string() for k in module.twilio_conversations_views.keys),
        "job_assets": sorted(
            k.to_user_string()
            for k in repo.get_job("twilio_conversations_job").asset_layer.selected_asset_keys
        ),
        "schedules": [(s.name, s.cron_schedule, s.job_name) for s in repo.schedule_defs],
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
    }}
    if {materialize!r}:
        import dagster as dg
        rows = []
        for _ in range(2):
            run = dg.materialize(
                [module.twilio_conversations_assets, module.twilio_conversations_views]
            )
            events = run.get_asset_materialization_events()
            materialized = [e.event_specific_data.materialization for e in events]
            rows.append({{
                m.asset_key.to_user_string(): getattr(m.metadata.get("rows_loaded"), "value", 0)
                for m in materialized
            }})
            result["success"] = result.get("success", True) and run.success
        result["rows_loaded"] = rows
    print("RESULT:" + json.dumps(result))
"""

# One asset per resource: `user_conversations` loads the `users` table from the listings it reads.
DAGSTER_ASSETS = [
    "dlt_twilio_conversations_services",
    "dlt_twilio_conversations_user_conversations",
]
DAGSTER_VIEWS = ["service_summary", "stale_conversations", "user_conversation_summary"]


def test_dagster_definitions_load_without_credentials(dagster_python: str, tmp_path: Path) -> None:
    """The code location loads where no Twilio credentials exist (only run workers have them)."""
    script = DAGSTER_LOAD.format(path=str(DAGSTER_DEFINITIONS), materialize=False)
    result = run_script(dagster_python, script, {}, tmp_path)
    assert result["assets"] == DAGSTER_ASSETS
    assert result["views"] == DAGSTER_VIEWS
    assert result["job_assets"] == sorted(DAGSTER_ASSETS + DAGSTER_VIEWS)
    assert result["schedules"] == [
        ["twilio_conversations_job_schedule", "*/30 * * * *", "twilio_conversations_job"]
    ]
    assert result["jobs"] == ["twilio_conversations_job"]


def test_dagster_materialize_loads_the_emulator_then_nothing(
    dagster_python: str, emulator: Any, tmp_path: Path
) -> None:
    database = tmp_path / "dagster.duckdb"
    script = DAGSTER_LOAD.format(path=str(DAGSTER_DEFINITIONS), materialize=True)
    result = run_script(dagster_python, script, emulator_env(emulator, database), tmp_path)
    assert result["success"]
    truth = emulator.all_user_conversations()
    first, second = result["rows_loaded"]
    assert first["dlt_twilio_conversations_user_conversations"] == len(truth)
    assert set(first) == set(second) == set(DAGSTER_ASSETS + DAGSTER_VIEWS)  # views each run
    # The second run finds nothing changed: nothing written.
    assert {second[asset] for asset in DAGSTER_ASSETS} == {0}
    assert loaded_count(dagster_python, database) == len(truth)
    assert view_counts(dagster_python, database) == view_truth(emulator)


# -- several accounts: one task / op per account -----------------------------------------------

AIRFLOW_ACCOUNTS_DAG = REPO / "deploy" / "airflow" / "twilio_conversations_accounts_dag.py"
DAGSTER_ACCOUNTS = REPO / "deploy" / "dagster" / "accounts.py"


@pytest.fixture
def accounts_emulator(start_emulator: Any) -> Any:
    """A parent and two subaccounts (the second with an API key too), each its own data."""
    return start_emulator(
        seed=13, services=2, users=4, max_conversations=55, subaccounts=2, subaccount_api_keys=True
    )


def account_counts(python: str, database: Path, names: list[str]) -> dict[str, int]:
    """Rows of each account's `user_conversations` in its dataset, read by `python`."""
    script = f"""
        import duckdb, json
        with duckdb.connect({str(database)!r}, read_only=True) as con:
            print("RESULT:" + json.dumps({{
                name: con.execute(f"select count(*) from twilio_{{name}}.user_conversations")
                .fetchone()[0]
                for name in {names!r}
            }}))
    """
    counts: dict[str, int] = run_script(python, script, {}, database.parent)
    return counts


AIRFLOW_ACCOUNTS_RUN = """
    import json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder={dags!r})
    dag = bag.dags["twilio_conversations_accounts"]
    result = {{
        "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
        "tasks": [t.task_id for t in dag.tasks],
        "upstream": {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}},
    }}
    if {run!r}:
        run = dag.test()
        result["state"] = str(run.state)
        result["instances"] = sorted(
            [ti.task_id, ti.map_index, str(ti.state)] for ti in run.get_task_instances()
        )
    print("RESULT:" + json.dumps(result))
"""


@pytest.mark.slow
def test_airflow_accounts_dag_maps_one_task_per_discovered_account(
    airflow_python: str, accounts_emulator: Any, tmp_path: Path
) -> None:
    emu = accounts_emulator
    home = tmp_path / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(AIRFLOW_ACCOUNTS_DAG, dags)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
    }
    built = run_script(
        airflow_python, AIRFLOW_ACCOUNTS_RUN.format(dags=str(dags), run=False), env, tmp_path
    )
    assert built["import_errors"] == {}
    assert built["tasks"] == ["list_accounts", "load_account"]
    assert built["upstream"] == {"list_accounts": [], "load_account": ["list_accounts"]}
    migrate = subprocess.run(
        [airflow_python, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    database = tmp_path / "accounts.duckdb"
    env = {
        **env,
        **emulator_env(emu, database),
        "SOURCES__TWILIO_CONVERSATIONS__SUBACCOUNTS": "true",
        "SOURCES__TWILIO_CONVERSATIONS__ACCOUNTS_BASE_URL": emu.base_url,
    }
    result = run_script(
        airflow_python, AIRFLOW_ACCOUNTS_RUN.format(dags=str(dags), run=True), env, tmp_path
    )
    assert result["state"].endswith("success"), result
    names = sorted(a.sid.lower() for a in emu.accounts)
    assert result["instances"] == [["list_accounts", -1, "success"]] + [
        ["load_account", index, "success"] for index in range(len(names))
    ]
    assert account_counts(airflow_python, database, names) == {
        a.sid.lower(): len(emu.all_user_conversations(account_sid=a.sid)) for a in emu.accounts
    }


DAGSTER_ACCOUNTS_RUN = """
    import importlib.util, json
    spec = importlib.util.spec_from_file_location("twilio_accounts", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = module.defs.get_repository_def()
    result = {{
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": [(s.name, s.cron_schedule, s.job_name) for s in repo.schedule_defs],
    }}
    if {run!r}:
        runs = []
        for _ in range(2):
            run = module.twilio_conversations_accounts_job.execute_in_process(
                raise_on_error=False
            )
            outputs = run.output_for_node("load_account") if run.success else {{}}
            runs.append({{"success": run.success, "outputs": outputs}})
        result["runs"] = runs
    print("RESULT:" + json.dumps(result))
"""


def test_dagster_accounts_job_maps_one_op_per_configured_account(
    dagster_python: str, accounts_emulator: Any, tmp_path: Path
) -> None:
    emu = accounts_emulator
    loaded = run_script(
        dagster_python,
        DAGSTER_ACCOUNTS_RUN.format(path=str(DAGSTER_ACCOUNTS), run=False),
        {},
        tmp_path,
    )
    assert loaded["jobs"] == ["twilio_conversations_accounts_job"]
    assert loaded["schedules"] == [
        [
            "twilio_conversations_accounts_job_schedule",
            "*/30 * * * *",
            "twilio_conversations_accounts_job",
        ]
    ]
    parent, sub1, sub2 = emu.accounts
    accounts = [
        {"name": "main", "account_sid": parent.sid, "auth_token": parent.auth_token},
        {"name": "east", "account_sid": sub1.sid, "auth_token": sub1.auth_token},
        {"name": "west", "api_key_sid": sub2.api_key_sid, "api_key_secret": sub2.api_key_secret},
    ]
    database = tmp_path / "dagster-accounts.duckdb"
    env = {
        "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": emu.base_url,
        "SOURCES__TWILIO_CONVERSATIONS__ACCOUNTS": json.dumps(accounts),
        "TWILIO_CONVERSATIONS_DESTINATION": "duckdb",
        "DESTINATION__DUCKDB__CREDENTIALS": str(database),
    }
    script = DAGSTER_ACCOUNTS_RUN.format(path=str(DAGSTER_ACCOUNTS), run=True)
    first, second = run_script(dagster_python, script, env, tmp_path)["runs"]
    truth = {
        name: len(emu.all_user_conversations(account_sid=account.sid))
        for name, account in (("main", parent), ("east", sub1), ("west", sub2))
    }
    assert first["success"] and second["success"]
    assert {k: v["user_conversations"] for k, v in first["outputs"].items()} == truth
    assert {v["dataset"] for v in first["outputs"].values()} == {f"twilio_{n}" for n in truth}
    # a second run finds nothing changed in any account
    assert {
        k: sum(v[t] for t in ("services", "users", "user_conversations"))
        for k, v in second["outputs"].items()
    } == dict.fromkeys(truth, 0)
    assert account_counts(dagster_python, database, sorted(truth)) == truth
