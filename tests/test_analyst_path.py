"""An analyst's first steps work as written: what the docs tell them to install carries what the
notebook and `.df()` import, and the emulator's banner gives a `run` command that loads it.

The install check reads pyproject.toml's own requirements (the editable install's metadata may
be older) and follows every other requirement through the installed packages' metadata, so it
sees what a fresh `pip install -e '.[notebooks]'` brings. Expected rows come from a twin of the
emulator (same seed, size and public URL), never from the connector.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cli_process import serving
from mirror import assert_services_mirror, assert_user_conversations_mirror, reading
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOTEBOOK = ROOT / "notebooks" / "explore_user_conversations.ipynb"
CONSOLE_SCRIPT = Path(sys.executable).parent / "twilio-conversations"
EMULATOR_SCRIPT = Path(sys.executable).parent / "twilio-emulator"


def section(path: Path, heading: str) -> str:
    """The text under `heading` down to the next heading of the same or a higher level."""
    text = path.read_text()
    start = text.index(heading + "\n")
    same_or_higher = re.compile(rf"^#{{1,{len(heading.split()[0])}}} ", re.M)
    ends = [m.start() for m in same_or_higher.finditer(text) if m.start() > start]
    return text[start : min(ends, default=len(text))]


ANALYST_SECTIONS = {
    "README.md": section(ROOT / "README.md", "## Exploring the data"),
    "docs/exploring.md": section(ROOT / "docs" / "exploring.md", "### The notebook"),
}


def closure(requirements: Iterable[str]) -> set[str]:
    """Every distribution these requirements install, by their installed metadata."""
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(name)
        for text in metadata.requires(name) or []:
            dependency = Requirement(text)
            extras = ("", *requirement.extras)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(dependency)
    return found


def notebook_imports() -> set[str]:
    """Top-level modules the notebook's code cells import (IPython magics left out)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    modules: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names)


def distributions_of(modules: Iterable[str]) -> set[str]:
    providers = metadata.packages_distributions()
    return {canonicalize_name(providers[module][0]) for module in modules}


def test_the_notebooks_extra_carries_what_the_notebook_and_df_import() -> None:
    base = closure(PYPROJECT["dependencies"])
    with_extra = closure(
        [*PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"]["notebooks"]]
    )
    needed = distributions_of(notebook_imports()) | {"pandas", "numpy"}  # .df() needs both
    needed |= {"ipykernel", "nbclient"}  # a kernel to run it, and what executes it headless
    assert needed <= with_extra, sorted(needed - with_extra)
    assert {"matplotlib", "pandas", "numpy"} <= needed
    # The plain install stays without pandas: DuckDB would import it on every scheduled run.
    assert "pandas" not in base and "matplotlib" not in base


@pytest.mark.parametrize("doc", list(ANALYST_SECTIONS))
def test_every_install_command_names_the_notebooks_extra(doc: str) -> None:
    text = ANALYST_SECTIONS[doc]
    installs = [line for line in text.splitlines() if "pip install" in line and "-e" in line]
    assert installs, f"{doc} no longer says how to install for the notebook"
    for line in installs:
        assert "-e '.[notebooks]'" in line and "-c constraints.txt" in line, line
    if ".df()" in text:  # the extra is named before the first `.df()` the section shows
        assert text.index(".[notebooks]") < text.index(".df()"), doc


# -- The emulator's banner --------------------------------------------------------------------


def test_the_banner_command_loads_the_emulator(start_emulator: Any, tmp_path: Path) -> None:
    from twilio_emulator import DataSpec, EmulatorConfig

    with serving(EMULATOR_SCRIPT, "--port", "0", "--services", "2", "--users", "6") as (url, lines):
        (command,) = [
            line.removeprefix("Load it: ") for line in lines if line.startswith("Load it: ")
        ]
        assert command.endswith(f"twilio-conversations run --base-url {url}"), command
        done = subprocess.run(
            ["bash", "-c", command.replace("twilio-conversations", str(CONSOLE_SCRIPT))],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert "rows written" in done.stdout, done.stdout

    truth = start_emulator(
        EmulatorConfig(data=DataSpec(seed=7, services=2, users=6), public_url=url)
    )
    pipeline = reading(tmp_path / "twilio_conversations.duckdb", tmp_path / "checks")
    assert_user_conversations_mirror(pipeline, truth.all_user_conversations())
    assert_services_mirror(pipeline, truth.services())
