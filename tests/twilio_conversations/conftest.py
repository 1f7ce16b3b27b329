"""Fixtures of the configuration tests: the project's `.dlt/` files written, and dlt's providers
reloaded from them (restored after the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs import PluggableRunContext


@pytest.fixture
def providers() -> Iterator[PluggableRunContext]:
    """The run context whose providers the test may replace; the old ones come back after."""
    context = Container()[PluggableRunContext]
    saved = context.providers
    yield context
    context.providers = saved


@pytest.fixture
def write(isolated_dlt: Path, providers: PluggableRunContext) -> Callable[..., None]:
    """`write(config=..., secrets=...)`: the project's `.dlt/` files, then dlt reloads them."""

    def _write(config: str = "", secrets: str = "") -> None:
        settings = isolated_dlt / ".dlt"
        settings.mkdir(exist_ok=True)
        (settings / "config.toml").write_text(config)
        (settings / "secrets.toml").write_text(secrets)
        providers.reload_providers()

    return _write
