"""The orchestrators' interpreters for the recipe tests: AIRFLOW_PYTHON / DAGSTER_PYTHON (the
venvs `make orchestrator-venvs` makes, with the connector's wheel), else this interpreter; a test
skips, saying so, where the orchestrator is not installed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def interpreter(variable: str, module: str, install_hint: str) -> str:
    python = os.environ.get(variable) or sys.executable
    probe = subprocess.run(
        [
            python,
            "-c",
            f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)",
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"{module} not installed for {python} ({install_hint}; or set {variable})")
    return python


@pytest.fixture
def airflow_python() -> str:
    return interpreter("AIRFLOW_PYTHON", "airflow", "make orchestrator-venvs")


@pytest.fixture
def dagster_python() -> str:
    return interpreter("DAGSTER_PYTHON", "dagster", "make orchestrator-venvs")
