"""The two distributions as a user installs them: `make dist` builds the connector's wheel and the
emulator's; the connector's goes alone into a clean venv, the emulator's into another, and the
README's dlt snippet in the first loads the emulator served from the second. Versions come from
the two pyproject.toml files, rows from a twin of the emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cli_process import serving
from mirror import (
    assert_services_mirror,
    assert_user_conversations_mirror,
    assert_users_mirror,
    reading,
    truth_users,
)

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EMULATOR = tomllib.loads((ROOT / "emulator" / "pyproject.toml").read_text())["project"]
# The README's first Python block: plain dlt, credentials and base URL from the environment.
SNIPPET = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]

pytestmark = pytest.mark.slow


def wheel_name(project: dict[str, Any]) -> str:
    return f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"


def files_of(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def entry_points(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        return archive.read(name).decode()


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def clean_venv(path: Path, *install: str | Path) -> Path:
    """A venv holding only what `install` names (and what it depends on), at the tested pins."""
    made = run(sys.executable, "-m", "venv", path)
    assert made.returncode == 0, made.stderr
    python = path / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = run(*pip, "-c", ROOT / "constraints.txt", *install)
    assert done.returncode == 0, done.stderr
    return path / "bin"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    done = run("make", "--no-print-directory", "dist", f"DIST={dist}", cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return dist


def test_make_dist_builds_the_connector_without_the_emulator_and_the_emulator_alone(
    wheels: Path,
) -> None:
    connector, emulator = wheels / wheel_name(CONNECTOR), wheels / wheel_name(EMULATOR)
    assert sorted(p.name for p in wheels.glob("*.whl")) == sorted([connector.name, emulator.name])

    packages = {name.split("/")[0] for name in files_of(connector)}
    assert packages == {
        "twilio_conversations",
        connector.name.removesuffix("-py3-none-any.whl") + ".dist-info",
    }
    assert {"twilio_conversations/cli.py", "twilio_conversations/py.typed"} <= {
        *files_of(connector)
    }
    assert "twilio-conversations = twilio_conversations.cli:console_main" in entry_points(connector)

    assert {name.split("/")[0] for name in files_of(emulator)} == {
        "twilio_emulator",
        emulator.name.removesuffix("-py3-none-any.whl") + ".dist-info",
    }
    assert "twilio-emulator = twilio_emulator.cli:main" in entry_points(emulator)


def test_the_connector_wheel_alone_loads_the_emulator_served_from_its_own_venv(
    wheels: Path, tmp_path: Path, isolated_dlt: Path, start_emulator: Any
) -> None:
    connector_bin = clean_venv(tmp_path / "connector", wheels / wheel_name(CONNECTOR))
    emulator_bin = clean_venv(tmp_path / "emulator", wheels / wheel_name(EMULATOR))

    # Each venv holds its own distribution only.
    missing = run(connector_bin / "python", "-c", "import twilio_emulator")
    assert "ModuleNotFoundError" in missing.stderr, missing.stderr
    assert not (connector_bin / "twilio-emulator").exists()
    assert run(emulator_bin / "python", "-c", "import dlt").returncode == 1

    # Each command says the version its pyproject.toml gives.
    ours = run(connector_bin / "twilio-conversations", "--version")
    assert ours.stdout.startswith(f"twilio-conversations {CONNECTOR['version']} (dlt "), ours
    theirs = run(emulator_bin / "twilio-emulator", "--version")
    assert theirs.stdout.strip() == f"twilio-emulator {EMULATOR['version']}", theirs

    # The demo needs the emulator: without it, one line and exit 2, and nothing written.
    demo = run(connector_bin / "twilio-conversations", "demo", cwd=isolated_dlt)
    assert demo.returncode == 2, demo
    assert demo.stderr.splitlines() == [
        "error: the demo needs the emulator, which is not installed: install the "
        "twilio-emulator wheel beside this one (in a clone of the project, `make demo` does)"
    ], demo.stderr
    assert not list(isolated_dlt.glob("*.duckdb"))

    emulator = [emulator_bin / "twilio-emulator", "--port", "0", "--services", "2", "--users", "8"]
    with serving(*emulator) as (url, lines):
        # The credentials as the banner gives them.
        [credentials] = [re.findall(r"(TWILIO_\w+)=(\S+)", x) for x in lines if "Load it" in x]
        env = {
            **os.environ,
            **dict(credentials),
            "SOURCES__TWILIO_CONVERSATIONS__BASE_URL": url,
        }
        loaded = run(connector_bin / "python", "-c", SNIPPET, cwd=isolated_dlt, env=env)
        assert loaded.returncode == 0, loaded.stderr

    from twilio_emulator import DataSpec, EmulatorConfig

    twin = start_emulator(
        EmulatorConfig(data=DataSpec(seed=7, services=2, users=8), public_url=url)
    )
    pipeline = reading(isolated_dlt / "my_twilio.duckdb", tmp_path / "checks")
    assert_user_conversations_mirror(pipeline, twin.all_user_conversations())
    assert_services_mirror(pipeline, twin.services())
    assert_users_mirror(pipeline, truth_users(twin))


def test_every_install_line_names_the_wheels_of_this_version() -> None:
    """The docs and recipes name the wheels `make dist` builds now, not those of a past version."""
    texts = [ROOT / "README.md", ROOT / "emulator" / "README.md", *ROOT.glob("docs/*.md")]
    texts += [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    named = {
        (path.relative_to(ROOT).as_posix(), match.group(0))
        for path in texts
        for match in re.finditer(
            r"twilio_(?:conversations|emulator)-[^\s`\"'\[]+\.whl", path.read_text()
        )
    }
    assert {path for path, _ in named} >= {
        "README.md",
        "deploy/airflow/twilio_conversations_dag.py",
    }
    current = {wheel_name(CONNECTOR), wheel_name(EMULATOR)}
    assert {wheel for _, wheel in named if wheel.rsplit("/", 1)[-1] not in current} == set()
