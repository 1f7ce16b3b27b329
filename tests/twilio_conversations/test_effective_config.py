"""`effective_settings` shows the value a run would use for each setting, with where it came from,
and never a secret. Each test writes `.dlt/*.toml` into its own working dir (then dlt reloads its
providers, as in test_config_check.py) and sets environment variables; expected values are the
ones the test wrote, or what dlt itself resolves from them."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dlt.common.configuration import inject_section, resolve_configuration
from dlt.common.configuration.providers import (
    ConfigTomlProvider,
    EnvironProvider,
    SecretsTomlProvider,
)
from dlt.common.configuration.specs import ConfigSectionContext, PluggableRunContext
from dlt.common.configuration.specs.config_providers_context import ConfigProvidersContainer
from twilio_conversations import SETTING_KEYS, twilio_conversations
from twilio_conversations.effective_config import Setting, effective_settings, format_settings
from twilio_conversations.loading import (
    keep_loaded_packages_setting,
    lock_timeout_setting,
    users_per_load_setting,
)

SECTION = "[sources.twilio_conversations]"
CREDENTIALS = "[sources.twilio_conversations.credentials]"
ACCOUNT_SID = "AC" + "1" * 32
OTHER_SID = "AC" + "2" * 32
API_KEY_SID = "SK" + "3" * 32
TOKEN = "tok-7c1d-never-print"
API_SECRET = "apisecret-e41b-never-print"
HASH_KEY = "hashkey-0a9f-never-print"
PG_PASSWORD = "pg-S3cret-never-print"


def by_name(**kwargs: str) -> dict[str, Setting]:
    return {s.name: s for s in effective_settings(**kwargs)}


def test_config_toml_value_names_the_file_and_table(write: Callable[..., None]) -> None:
    write(config=f'{SECTION}\npage_size = 20\nservice_sids = ["IS{"a" * 32}"]\n')
    settings = by_name()
    assert settings["page_size"] == Setting(
        "page_size", "20", ".dlt/config.toml [sources.twilio_conversations]"
    )
    assert settings["service_sids"].shown == f'["IS{"a" * 32}"]'


def test_secrets_toml_value_and_non_secret_sid_shown_in_full(write: Callable[..., None]) -> None:
    write(secrets=f'{CREDENTIALS}\naccount_sid = "{ACCOUNT_SID}"\nauth_token = "{TOKEN}"\n')
    settings = by_name()
    where = ".dlt/secrets.toml [sources.twilio_conversations.credentials]"
    assert settings["credentials.account_sid"] == Setting(
        "credentials.account_sid", ACCOUNT_SID, where
    )
    assert settings["credentials.auth_token"] == Setting("credentials.auth_token", "***", where)


def test_env_var_overrides_toml_and_is_named(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        config=f"{SECTION}\npage_size = 20\nusers_per_load = 500\n",
        secrets=f'{CREDENTIALS}\naccount_sid = "{ACCOUNT_SID}"\n',
    )
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__PAGE_SIZE", "77")
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD", "250")
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__ACCOUNT_SID", OTHER_SID)
    settings = by_name()
    assert settings["page_size"] == Setting(
        "page_size", "77", "env SOURCES__TWILIO_CONVERSATIONS__PAGE_SIZE"
    )
    assert settings["users_per_load"] == Setting(
        "users_per_load", "250", "env SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD"
    )
    assert settings["credentials.account_sid"] == Setting(
        "credentials.account_sid",
        OTHER_SID,
        "env SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__ACCOUNT_SID",
    )


def test_unset_settings_show_the_defaults_a_run_uses(write: Callable[..., None]) -> None:
    write()
    settings = by_name()
    signature = inspect.signature(twilio_conversations).parameters
    for key in ("page_size", "max_workers", "base_url"):
        assert settings[key] == Setting(key, str(signature[key].default), "default")
    assert settings["lock_timeout"].shown == str(lock_timeout_setting(None))
    assert settings["users_per_load"].shown == str(users_per_load_setting(None))
    assert settings["keep_loaded_packages"].shown == str(keep_loaded_packages_setting(None))
    assert settings["service_sids"] == Setting("service_sids", "(not set)", "default")
    assert settings["credentials.auth_token"] == Setting(
        "credentials.auth_token", "(not set)", "default"
    )


def test_runner_settings_agree_with_the_readers_the_run_uses(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config=f"{SECTION}\nlock_timeout = 12.5\nkeep_loaded_packages = 0\n")
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__USERS_PER_LOAD", "321")
    settings = by_name()
    assert settings["lock_timeout"].shown == str(lock_timeout_setting(None)) == "12.5"
    assert settings["keep_loaded_packages"].shown == str(keep_loaded_packages_setting(None))
    assert settings["users_per_load"].shown == str(users_per_load_setting(None))


def test_twilio_env_vars_fill_credentials_dlt_leaves_empty(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(secrets=f'{CREDENTIALS}\napi_key_sid = "{API_KEY_SID}"\n')
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TWILIO_API_KEY", "SK" + "9" * 32)  # dlt's value wins
    settings = by_name()
    assert settings["credentials.account_sid"] == Setting(
        "credentials.account_sid", ACCOUNT_SID, "env TWILIO_ACCOUNT_SID"
    )
    assert settings["credentials.auth_token"] == Setting(
        "credentials.auth_token", "***", "env TWILIO_AUTH_TOKEN"
    )
    assert settings["credentials.api_key_sid"].shown == API_KEY_SID
    assert settings["credentials.api_key_sid"].origin.startswith(".dlt/secrets.toml")
    assert TOKEN not in format_settings(list(settings.values()))


def test_secrets_are_masked_everywhere(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        secrets=f'{SECTION}\npii_hash_key = "{HASH_KEY}"\n'
        f'{CREDENTIALS}\nauth_token = "{TOKEN}"\n'
        "[[sources.twilio_conversations.accounts]]\n"
        f'name = "acme"\naccount_sid = "{OTHER_SID}"\nauth_token = "{TOKEN}-acme"\n'
    )
    monkeypatch.setenv("TWILIO_API_SECRET", API_SECRET)
    settings = effective_settings()
    output = format_settings(settings)
    for secret in (TOKEN, API_SECRET, HASH_KEY):
        assert secret not in output
        assert not any(secret in s.shown or secret in s.origin for s in settings)
    shown = {s.name: s.shown for s in settings}
    assert shown["pii_hash_key"] == shown["credentials.auth_token"] == "***"
    assert shown["credentials.api_key_secret"] == "***"
    assert shown["accounts"] == "1 account: acme"  # names only: the tables hold secrets


def test_secret_in_config_toml_is_masked_and_flagged(write: Callable[..., None]) -> None:
    write(config=f'{CREDENTIALS}\nauth_token = "{TOKEN}"\n')
    (setting,) = [s for s in effective_settings() if s.name == "credentials.auth_token"]
    assert setting.shown == "***"
    assert setting.origin.startswith(".dlt/config.toml") and "refused" in setting.origin


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        (PG_PASSWORD, "postgresql://loader:***@db.example:5432/dwh?sslpassword=***"),
        ("p@ss/w0rd?x#y", "postgresql://***"),  # an `@` after the host: ambiguous
    ],
)
def test_postgres_url_password_masked(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch, password: str, expected: str
) -> None:
    write()
    url = f"postgresql://loader:{password}@db.example:5432/dwh?sslpassword={password}"
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    settings = by_name()
    assert settings["destination.postgres.credentials"] == Setting(
        "destination.postgres.credentials", expected, "env DESTINATION__POSTGRES__CREDENTIALS"
    )
    output = format_settings(list(settings.values()))
    assert password not in output
    assert all(piece not in output for piece in ("ss/w0rd", "w0rd", "x#y"))


def test_postgres_credential_fields_masked_by_dlts_spec(write: Callable[..., None]) -> None:
    table = "[destination.postgres.credentials]"
    write(
        config=f'{table}\nhost = "db.example"\nusername = "loader"\n',
        secrets=f'{table}\npassword = "{PG_PASSWORD}"\n',
    )
    settings = by_name(destination="postgres")
    prefix = "destination.postgres.credentials"
    assert settings[f"{prefix}.host"] == Setting(
        f"{prefix}.host", "db.example", f".dlt/config.toml {table}"
    )
    assert settings[f"{prefix}.password"] == Setting(
        f"{prefix}.password", "***", f".dlt/secrets.toml {table}"
    )
    assert PG_PASSWORD not in format_settings(list(settings.values()))


def test_unknown_destination_credentials_are_all_masked(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    write()
    monkeypatch.setenv("DESTINATION__MY_WAREHOUSE__CREDENTIALS__API_TOKEN", TOKEN)
    settings = by_name()
    assert settings["destination.my_warehouse.credentials.api_token"].shown == "***"
    assert by_name(destination="duckdb")["destination.duckdb.credentials"] == Setting(
        "destination.duckdb.credentials", "(not set)", "default"
    )


def test_lookup_order_agrees_with_dlts_own_resolution(
    write: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipeline-scoped sections before all others, then providers in order, then the most
    specific section: the shown values are the ones dlt resolves for the source's spec."""
    write(
        config="[twilio_conversations.sources.twilio_conversations]\nmax_workers = 4\n"
        "[sources]\nrequest_timeout = 12.5\n"
        f"{SECTION}\npage_size = 20\nrequest_max_attempts = 3\n",
        secrets="[sources.twilio_conversations.twilio_conversations]\npage_size = 30\n",
    )
    monkeypatch.setenv("SOURCES__TWILIO_CONVERSATIONS__MAX_WORKERS", "8")
    monkeypatch.setenv("SOURCES__REQUEST_MAX_ATTEMPTS", "5")
    sections = ("sources", "twilio_conversations", "twilio_conversations")
    context = ConfigSectionContext(pipeline_name="twilio_conversations", sections=sections)
    with inject_section(context):
        resolved = resolve_configuration(
            twilio_conversations.ref.SPEC(), sections=sections, accept_partial=True
        )
    settings = by_name(pipeline_name="twilio_conversations")
    expected = {"max_workers": "4", "page_size": "30", "request_max_attempts": "5"}
    expected["request_timeout"] = "12.5"
    for key, value in expected.items():
        assert settings[key].shown == str(getattr(resolved, key)) == value
    assert settings["max_workers"].origin == (
        ".dlt/config.toml [twilio_conversations.sources.twilio_conversations]"
    )
    assert settings["request_timeout"].origin == ".dlt/config.toml [sources]"
    assert settings["request_max_attempts"].origin == "env SOURCES__REQUEST_MAX_ATTEMPTS"


def test_global_dlt_dir_file_is_named(
    isolated_dlt: Path,
    providers: PluggableRunContext,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    (home / ".dlt").mkdir()
    (home / ".dlt" / "secrets.toml").write_text(f'{CREDENTIALS}\nauth_token = "{TOKEN}"\n')
    settings, global_dir = os.path.join(".", ".dlt"), str(home / ".dlt")
    providers.providers = ConfigProvidersContainer(
        [
            EnvironProvider(),
            SecretsTomlProvider(settings, global_dir),
            ConfigTomlProvider(settings, global_dir),
        ]
    )
    assert by_name()["credentials.auth_token"] == Setting(
        "credentials.auth_token",
        "***",
        "~/.dlt/secrets.toml [sources.twilio_conversations.credentials]",
    )


def test_every_setting_is_listed_and_the_table_is_grouped(write: Callable[..., None]) -> None:
    write(config=f"{SECTION}\npage_size = 20\n")
    settings = effective_settings()
    names = [s.name for s in settings]
    assert set(SETTING_KEYS) - {"credentials"} <= set(names)
    assert len(names) == len(set(names))
    lines = format_settings(settings).splitlines()
    assert lines[0] == "Twilio credentials"
    assert lines[5] == "Source settings [sources.twilio_conversations]"
    (row,) = [line for line in lines if line.lstrip().startswith("page_size ")]
    assert row.split() == ["page_size", "20", ".dlt/config.toml", SECTION]
    origins = {line.index("default") for line in lines if line.endswith("  default")}
    assert len(origins) == 1  # one column for every origin
