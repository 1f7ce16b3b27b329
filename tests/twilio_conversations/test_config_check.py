"""Mistyped settings are named, not ignored: unknown keys of `[sources.twilio_conversations]` in
`.dlt/config.toml`, `.dlt/secrets.toml`, the global dlt dir and `SOURCES__TWILIO_CONVERSATIONS__*`
variables. One that would widen the run fails it before any request; others warn once each.

dlt reads the toml files when its providers are created (once per run context), so the unit
tests write `.dlt/*.toml` into the test's working dir and then reload the providers
(`PluggableRunContext.reload_providers()`, what dlt's own CLI does after writing config),
restoring the previous ones afterwards. The scenario tests run the console script in a fresh
folder against the emulator, as a user or a scheduler does."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
import pytest
from cli_process import emulator_env
from dlt.common.configuration.providers import (
    ConfigTomlProvider,
    EnvironProvider,
    SecretsTomlProvider,
)
from dlt.common.configuration.providers.doc import BaseDocProvider
from dlt.common.configuration.specs import PluggableRunContext
from dlt.common.configuration.specs.config_providers_context import ConfigProvidersContainer
from twilio_conversations import SETTING_KEYS, WIDENING_KEYS, twilio_conversations
from twilio_conversations.config_check import check_settings
from twilio_conversations.credentials import TwilioCredentials
from twilio_conversations.errors import ConfigurationError

REPO = Path(__file__).parents[2]
SERVICE = "IS" + "ab" * 16
SECRET = "tok-9f3e-do-not-print"
SECTION = "[sources.twilio_conversations]"


# -- unit tests: check_settings against dlt's real providers -----------------------------------


@pytest.fixture
def check(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Run the check as the source does; returns the warning lines it logged."""

    def _check() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="twilio_conversations"):
            check_settings(SETTING_KEYS, WIDENING_KEYS)
        return [r.getMessage() for r in caplog.records if r.name == "twilio_conversations"]

    return _check


def failure(check: Callable[[], list[str]]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        check()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_config_toml_typo_of_a_filter_fails_naming_the_key(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(config=f'{SECTION}\nservice_sid = ["{SERVICE}"]\n')
    message = failure(check)
    assert message.startswith(
        f"unknown setting `service_sid` in .dlt/config.toml {SECTION}; did you mean `service_sids`?"
    )
    assert SERVICE not in message  # values are never shown


def test_secrets_toml_typos_name_the_file(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(
        secrets=f"{SECTION}\nlookback_dys = 30\n[sources.twilio_conversations.credentials]\n"
        f'account_sid = "AC{"1" * 32}"\nauth_tokn = "{SECRET}"\n'
    )
    message = failure(check)
    assert message.startswith(
        f"unknown setting `lookback_dys` in .dlt/secrets.toml {SECTION}; "
        "did you mean `lookback_days`?"
    )
    write(
        secrets=f'[sources.twilio_conversations.credentials]\nauth_tokn = "{SECRET}"\n'
        'account_sid = "AC' + "1" * 32 + '"\n'
    )
    assert check() == [
        "unknown setting `auth_tokn` in .dlt/secrets.toml "
        "[sources.twilio_conversations.credentials]; did you mean `auth_token`?"
    ]


def test_env_var_typo_warns_with_the_key_it_resembles(
    write: Callable[..., None], check: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    write()
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__PAGESIZE", "10")
    assert check() == [
        "unknown setting `PAGESIZE` in environment variable "
        "SOURCES__TWILIO_CONVERSATIONS__PAGESIZE; did you mean `page_size` "
        "(SOURCES__TWILIO_CONVERSATIONS__PAGE_SIZE)?"
    ]


def test_env_var_typo_of_a_filter_fails(
    write: Callable[..., None], check: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    write()
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__USER_SID", "alice")
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__AUTH_TOKN", SECRET)
    message = failure(check)
    assert "`USER_SID` in environment variable SOURCES__TWILIO_CONVERSATIONS__USER_SID" in message
    assert "did you mean `user_sids` (SOURCES__TWILIO_CONVERSATIONS__USER_SIDS)?" in message
    assert "alice" not in message and "AUTH_TOKN" not in message  # credentials never widen


def test_lower_case_env_var_is_named_because_dlt_never_reads_it(
    write: Callable[..., None], check: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    write()
    monkeypatch.setenv("sources__twilio_conversations__page_size", "10")
    (line,) = check()
    assert "sources__twilio_conversations__page_size" in line
    assert "(SOURCES__TWILIO_CONVERSATIONS__PAGE_SIZE)" in line


def test_nested_source_subsection_is_checked_the_same_way(
    write: Callable[..., None], check: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = "[sources.twilio_conversations.twilio_conversations]"
    write(config=f'{nested}\npage_size = 20\nstart_dat = "2024-01-01"\n')
    assert failure(check).startswith(
        f"unknown setting `start_dat` in .dlt/config.toml {nested}; did you mean `start_date`?"
    )
    write(config=f"{nested}\npage_size = 20\nmax_worker = 3\n")
    assert check() == [
        f"unknown setting `max_worker` in .dlt/config.toml {nested}; did you mean `max_workers`?"
    ]
    write()
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__TWILIO_CONVERSATIONS__END_DATES", "x")
    assert "did you mean `end_date`" in failure(check)


def test_credentials_key_typo_warns_with_suggestion(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(
        secrets="[sources.twilio_conversations.credentials]\n"
        f'api_key_sid = "SK{"2" * 32}"\napi_key_secrt = "{SECRET}"\n'
    )
    assert check() == [
        "unknown setting `api_key_secrt` in .dlt/secrets.toml "
        "[sources.twilio_conversations.credentials]; did you mean `api_key_secret`?"
    ]


def test_credential_outside_its_table_points_at_it(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(secrets=f'{SECTION}\nauth_token = "{SECRET}"\n')
    assert check() == [
        f"unknown setting `auth_token` in .dlt/secrets.toml {SECTION}; "
        "did you mean `credentials.auth_token`?"
    ]


def test_valid_settings_produce_nothing(
    write: Callable[..., None],
    check: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    every_key = "\n".join(f"{key} = 1" for key in SETTING_KEYS if key != "credentials")
    write(
        # the repository's own config, every setting, the nested and dlt's own subsections
        config=(REPO / ".dlt" / "config.toml").read_text()
        + "\n[sources.twilio_conversations.twilio_conversations]\n"
        + every_key
        + "\n[sources.twilio_conversations.extract]\nworkers = 2\n"
        # other sections are not ours, typos there included
        + "\n[sources.other_source]\nservice_sid = 1\n[destination.duckdb]\ncredentialz = 1\n",
        secrets=(REPO / ".dlt" / "example.secrets.toml").read_text()
        + "\n[sources.twilio_conversations.twilio_conversations.credentials]\n"
        'api_key_sid = "x"\napi_key_secret = "y"\n',
    )
    for key in SETTING_KEYS:
        monkeypatch.setenv(f"SOURCES__TWILIO_CONVERSATIONS__{key.upper()}", "1")
        monkeypatch.setenv(
            f"SOURCES__TWILIO_CONVERSATIONS__TWILIO_CONVERSATIONS__{key.upper()}", "1"
        )
    for field in ("ACCOUNT_SID", "AUTH_TOKEN", "API_KEY_SID", "API_KEY_SECRET"):
        monkeypatch.setenv(f"SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__{field}", "1")
    monkeypatch.setenv("SOURCES__OTHER__PAGESIZE", "1")
    assert check() == []
    assert caplog.records == []


def test_key_with_no_close_match_warns_without_suggestion(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(config=f"{SECTION}\ncolour_scheme = 1\n")
    assert check() == [
        f"unknown setting `colour_scheme` in .dlt/config.toml {SECTION}; "
        "no setting has a similar name"
    ]


def test_every_widening_typo_is_named_in_one_line(
    write: Callable[..., None], check: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        config=f'{SECTION}\nservice_sid = ["{SERVICE}"]\nstartdate = "2024-01-01"\npage_sizee = 5\n'
    )
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__LOOKBACK_DAY", "3")
    message = failure(check)
    assert message.startswith("3 unknown settings would widen the run")
    for wanted in ("`service_sids`", "`start_date`", "`lookback_days`"):
        assert wanted in message
    assert "page_size" not in message


def test_pipeline_scoped_sections_are_checked(
    write: Callable[..., None], check: Callable[[], list[str]], isolated_dlt: Path
) -> None:
    write(config='[twilio_conversations_demo.sources.twilio_conversations]\nuser_sid = ["a"]\n')
    assert failure(check).startswith(
        "unknown setting `user_sid` in .dlt/config.toml "
        "[twilio_conversations_demo.sources.twilio_conversations]; did you mean `user_sids`?"
    )
    # any pipeline's own section, when the source is created while that pipeline is active
    write(config='[my_pipe.sources.twilio_conversations]\nend_dat = "2024-01-01"\n')
    assert check() == []  # not active: dlt would not read it either
    pipeline = dlt.pipeline(pipeline_name="my_pipe", pipelines_dir=str(isolated_dlt / "pipes"))
    credentials = TwilioCredentials()
    credentials.account_sid, credentials.auth_token = "AC" + "1" * 32, SECRET
    try:
        with pytest.raises(ConfigurationError, match=r"my_pipe\.sources.*mean `end_date`"):
            twilio_conversations(credentials=credentials)
    finally:
        pipeline.deactivate()  # later tests in this process must not run under it


def test_global_dlt_dir_files_are_named(
    isolated_dlt: Path,
    providers: PluggableRunContext,
    check: Callable[[], list[str]],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dlt merges `~/.dlt/*.toml` (the global dir; /var/dlt for root) under the project's files.

    The global dir is dlt's process-wide one, so this test builds the providers dlt builds, with
    a global dir of its own in a stand-in home directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    (home / ".dlt").mkdir()
    (home / ".dlt" / "config.toml").write_text(f"{SECTION}\npage_sise = 3\n")
    (isolated_dlt / ".dlt").mkdir()
    (isolated_dlt / ".dlt" / "config.toml").write_text(f"{SECTION}\nmax_worker = 3\n")
    settings, global_dir = os.path.join(".", ".dlt"), str(home / ".dlt")
    providers.providers = ConfigProvidersContainer(
        [
            EnvironProvider(),
            SecretsTomlProvider(settings, global_dir),
            ConfigTomlProvider(settings, global_dir),
        ]
    )
    assert sorted(check()) == [
        f"unknown setting `max_worker` in .dlt/config.toml {SECTION}; did you mean `max_workers`?",
        f"unknown setting `page_sise` in ~/.dlt/config.toml {SECTION}; did you mean `page_size`?",
    ]


class _BrokenProvider(BaseDocProvider):
    def __init__(self) -> None:
        super().__init__({"sources": {"twilio_conversations": "not a table"}})

    @property
    def name(self) -> str:
        return "broken"

    @property
    def supports_secrets(self) -> bool:
        return False

    def get_value_location(self, key: str, pipeline_name: str | None, *sections: str) -> str:
        raise RuntimeError("no locations here")


class _RaisingProvider(_BrokenProvider):
    def get_value(self, key: str, hint: Any, pipeline_name: str | None, *sections: str) -> Any:
        raise RuntimeError("provider exploded")


def test_odd_providers_never_fail_the_run_and_others_are_still_checked(
    write: Callable[..., None], check: Callable[[], list[str]], providers: PluggableRunContext
) -> None:
    write(config=f"{SECTION}\npage_sizee = 5\n")
    providers.providers.providers[:0] = [_RaisingProvider(), _BrokenProvider()]
    assert check() == [
        f"unknown setting `page_sizee` in .dlt/config.toml {SECTION}; did you mean `page_size`?"
    ]


def test_a_key_with_control_characters_stays_on_one_line(
    write: Callable[..., None], check: Callable[[], list[str]]
) -> None:
    write(config=f'{SECTION}\n"page\\nsize" = 5\n')
    (line,) = check()
    assert "\n" not in line and "`page\\nsize`" in line


# -- scenarios: the console script in a fresh folder, against the emulator ---------------------


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "twilio-conversations"
    found = str(script) if script.exists() else shutil.which("twilio-conversations")
    return [found] if found else [sys.executable, "-m", "twilio_conversations.cli"]


def run_cli(emu: Any, folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    return subprocess.run(
        [*console_script(), "run", "--progress", "none", "--base-url", emu.base_url],
        cwd=folder,
        env=emulator_env(emu, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def project(folder: Path, config: str) -> Path:
    (folder / ".dlt").mkdir(parents=True)
    (folder / ".dlt" / "config.toml").write_text(config)
    return folder


@pytest.fixture
def small(start_emulator: Any) -> Any:
    return start_emulator(seed=5, services=2, users=3, max_conversations=4)


def our_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("WARNING twilio_conv")]


def test_cli_mistyped_service_sids_exits_2_before_any_request(small: Any, tmp_path: Path) -> None:
    folder = project(tmp_path / "fresh", f'{SECTION}\nservice_sid = ["{SERVICE}"]\n')
    small.stats.reset()
    result = run_cli(small, folder)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unknown setting `service_sid` in .dlt/config.toml")
    assert "did you mean `service_sids`?" in lines[0]
    assert SERVICE not in result.stderr + result.stdout
    assert small.stats.snapshot().total == 0
    assert not (folder / "twilio_conversations.duckdb").exists()


def test_cli_mistyped_page_size_warns_once_and_runs(small: Any, tmp_path: Path) -> None:
    folder = project(tmp_path / "fresh", f"{SECTION}\npage_sizee = 10\n")
    result = run_cli(small, folder)
    assert result.returncode == 0, result.stderr
    assert our_warnings(result.stderr) == [
        "WARNING twilio_conversations: unknown setting `page_sizee` in .dlt/config.toml "
        f"{SECTION}; did you mean `page_size`?"
    ], result.stderr
    assert "services       2 scanned" in result.stdout


def test_cli_mistyped_env_var_warns_once_and_runs(small: Any, tmp_path: Path) -> None:
    result = run_cli(small, tmp_path / "fresh", SOURCES__TWILIO_CONVERSATIONS__PAGESIZE="10")
    assert result.returncode == 0, result.stderr
    lines = our_warnings(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "SOURCES__TWILIO_CONVERSATIONS__PAGESIZE; did you mean `page_size`" in lines[0]


def test_cli_mistyped_env_filter_exits_2_before_any_request(small: Any, tmp_path: Path) -> None:
    small.stats.reset()
    result = run_cli(
        small, tmp_path / "fresh", SOURCES__TWILIO_CONVERSATIONS__SERVICE_SID=f'["{SERVICE}"]'
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown setting `SERVICE_SID`"), lines
    assert "`service_sids` (SOURCES__TWILIO_CONVERSATIONS__SERVICE_SIDS)" in lines[0]
    assert small.stats.snapshot().total == 0


def test_the_shipped_config_states_the_defaults_the_code_uses() -> None:
    """`.dlt/config.toml` documents each setting with its value: a default changed in the code
    and not there (or the other way round) would make the file the README points to wrong, and
    every run from this folder would use the file's value, not the documented default."""
    import inspect
    import tomllib

    from twilio_conversations import twilio_conversations
    from twilio_conversations.file_lock import DEFAULT_LOCK_TIMEOUT
    from twilio_conversations.loading import DEFAULT_KEEP_LOADED_PACKAGES, DEFAULT_USERS_PER_LOAD

    with open(REPO / ".dlt" / "config.toml", "rb") as f:
        shipped = tomllib.load(f)["sources"]["twilio_conversations"]
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(twilio_conversations).parameters.items()
    }
    defaults["lock_timeout"] = DEFAULT_LOCK_TIMEOUT
    defaults["users_per_load"] = DEFAULT_USERS_PER_LOAD
    defaults["keep_loaded_packages"] = DEFAULT_KEEP_LOADED_PACKAGES
    for key, value in shipped.items():
        expected = defaults[key]
        if expected is None:
            expected = []  # an unset list setting: the file says `[]`
        assert value == expected, (
            f".dlt/config.toml {key} = {value!r}, the code's default {expected!r}"
        )
