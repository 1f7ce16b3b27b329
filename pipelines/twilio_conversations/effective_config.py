"""The configuration a run would use, value by value, with where each value came from.

`effective_settings()` lists the Twilio credentials, every key of `[sources.twilio_conversations]`
(`SETTING_KEYS`) and the destination's credentials; `format_settings()` makes them a table. Values
are looked up as dlt looks them up: the providers of `dlt.config.config_providers` in their order
(environment variables, then `secrets.toml`, then `config.toml`, each file the project's
`.dlt/` before the global dlt dir's), the first provider holding a value winning; in a provider,
the most specific section first (`sources.twilio_conversations.twilio_conversations`,
`sources.twilio_conversations`, `sources`, the top level; `credentials` innermost for a credential);
and the pipeline-scoped sections (`<pipeline>.sources...`) of all providers before any other.
The source's arguments (its spec) are resolved that way; the runner's own settings
(`users_per_load`, `lock_timeout`, `accounts`, ...) are read with `dlt.config.get` from
`sources.twilio_conversations` alone. A credential dlt leaves empty comes from Twilio's variable
(`TWILIO_AUTH_TOKEN`, ...; `credentials.py`).

Secrets are printed as `***`: every field dlt's spec marks secret (auth token, API secret,
`pii_hash_key`, a destination's password), a destination credential its spec does not know and
its `query`, a destination's credentials string unless it is a URL (then its password and query
values), and the accounts list (printed by names). Vault providers (Google, AWS, Airflow) are
not read, as in `config_check.py`: a value only a vault holds shows as its default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dlt
from dlt.common.configuration import is_secret_hint
from dlt.common.configuration.providers import EnvironProvider
from dlt.common.configuration.providers.doc import BaseDocProvider
from dlt.common.configuration.providers.provider import ConfigProvider
from dlt.common.configuration.providers.vault import VaultDocProvider
from dlt.common.configuration.specs import BaseConfiguration, CredentialsConfiguration
from dlt.common.destination import Destination
from dlt.common.typing import AnyType, TSecretValue, get_all_types_of_class_in_union

from . import SETTING_KEYS, twilio_conversations
from .accounts import (
    ACCOUNTS_BASE_URL_KEY,
    ACCOUNTS_KEY,
    DEFAULT_ACCOUNTS_BASE_URL,
    SUBACCOUNTS_KEY,
)
from .config_check import (
    CREDENTIALS,
    SOURCE_NAME,
    SOURCE_SECTION,
    SOURCES,
    doc_where,
    pipeline_names,
    shown,
)
from .credentials import TWILIO_ENV_FALLBACKS, TwilioCredentials
from .file_lock import DEFAULT_LOCK_TIMEOUT
from .loading import DEFAULT_KEEP_LOADED_PACKAGES, DEFAULT_USERS_PER_LOAD

MASK = "***"
NOT_SET = "(not set)"
DEFAULT = "default"
DESTINATION = "destination"
SOURCE_SECTIONS = (SOURCES, SOURCE_SECTION, SOURCE_NAME)
# Read by the runner and `load_in_parts` (`dlt.config.get`), not by the source: their defaults.
RUNNER_DEFAULTS: Mapping[str, Any] = {
    "lock_timeout": DEFAULT_LOCK_TIMEOUT,
    "users_per_load": DEFAULT_USERS_PER_LOAD,
    "keep_loaded_packages": DEFAULT_KEEP_LOADED_PACKAGES,
    ACCOUNTS_KEY: None,
    SUBACCOUNTS_KEY: False,
    ACCOUNTS_BASE_URL_KEY: DEFAULT_ACCOUNTS_BASE_URL,
}
URL_QUERY = "query"  # a connection URL's parameters (`sslpassword`, ...): masked as in a URL
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Setting:
    """One setting: its key (under `[sources.twilio_conversations]`, or `destination.<name>...`),
    its value as printed (secrets masked) and where that value came from."""

    name: str
    shown: str
    origin: str


@dataclass(frozen=True)
class _Found:
    value: Any
    origin: str


def effective_settings(
    *, destination: str | None = None, pipeline_name: str | None = None
) -> list[Setting]:
    """The credentials, the source's settings and the destination credentials a run would use.

    Args:
        destination: The destination whose credentials to show (the CLI's `--destination`); by
            default every destination with credentials configured.
        pipeline_name: The pipeline whose scoped sections count; by default the active one, else
            the CLI's (`twilio_conversations`).
    """
    pipeline = pipeline_name or pipeline_names()[0]
    return [
        *_twilio_credentials(pipeline),
        *_source_settings(pipeline),
        *_destination_credentials(destination, pipeline),
    ]


def format_settings(settings: Sequence[Setting]) -> str:
    """An aligned table, one line a setting, grouped: credentials, source settings, destination."""
    groups = {
        "Twilio credentials": [s for s in settings if s.name.startswith(f"{CREDENTIALS}.")],
        f"Source settings [{SOURCES}.{SOURCE_SECTION}]": [
            s for s in settings if not s.name.startswith((f"{CREDENTIALS}.", f"{DESTINATION}."))
        ],
        "Destination": [s for s in settings if s.name.startswith(f"{DESTINATION}.")],
    }
    name_width = max((len(s.name) for s in settings), default=0)
    value_width = min(max((len(s.shown) for s in settings), default=0), 48)
    lines: list[str] = []
    for title, rows in groups.items():
        if rows:
            lines.append(title)
            lines.extend(
                f"  {s.name:<{name_width}}  {s.shown:<{value_width}}  {s.origin}" for s in rows
            )
    return "\n".join(lines)


def _twilio_credentials(pipeline: str) -> Iterator[Setting]:
    paths = _paths(SOURCE_SECTIONS, CREDENTIALS)
    for field, hint in TwilioCredentials.get_resolvable_fields().items():
        found = _lookup(field, hint, paths, pipeline)
        env = TWILIO_ENV_FALLBACKS.get(field)
        if (found is None or not found.value) and env and os.environ.get(env, "").strip():
            found = _Found(os.environ[env].strip(), f"env {env}")  # as `on_resolved` does
        yield _setting(f"{CREDENTIALS}.{field}", found, None, is_secret_hint(hint))


def _source_settings(pipeline: str) -> Iterator[Setting]:
    spec = twilio_conversations.ref.SPEC
    fields = spec.get_resolvable_fields()
    defaults = spec()
    for key in SETTING_KEYS:
        if key == CREDENTIALS:
            continue
        if key in fields:
            found = _lookup(key, fields[key], _paths(SOURCE_SECTIONS), pipeline)
            yield _setting(key, found, getattr(defaults, key, None), is_secret_hint(fields[key]))
        else:  # `dlt.config.get("sources.twilio_conversations.<key>")`: that section, no scope
            found = _lookup(key, AnyType, [(SOURCES, SOURCE_SECTION)], None)
            if key == ACCOUNTS_KEY and found is not None:
                yield Setting(key, _accounts_shown(found.value), found.origin)
            else:
                yield _setting(key, found, RUNNER_DEFAULTS.get(key), False)


def _destination_credentials(destination: str | None, pipeline: str) -> Iterator[Setting]:
    configured = _configured_destinations(pipeline)
    for name in [destination] if destination else list(configured):
        prefix = f"{DESTINATION}.{name}.{CREDENTIALS}"
        native = _lookup(CREDENTIALS, TSecretValue, _paths((DESTINATION, name)), pipeline)
        if native is not None and not isinstance(native.value, Mapping):
            yield Setting(prefix, _credentials_shown(native.value), native.origin)
        public = _spec_fields(name)
        paths = _paths((DESTINATION, name), CREDENTIALS)
        any_field = False
        for field in dict.fromkeys([*public, *sorted(configured.get(name, ()))]):
            secret = not public.get(field) or field == URL_QUERY
            found = _lookup(field, TSecretValue if secret else AnyType, paths, pipeline)
            if found is not None:
                any_field = True
                yield _setting(f"{prefix}.{field}", found, None, secret)
        if destination and native is None and not any_field:
            yield Setting(prefix, NOT_SET, DEFAULT)


def _paths(sections: tuple[str, ...], inner: str | None = None) -> list[tuple[str, ...]]:
    """dlt's lookup paths for a key of `sections`, most specific first: the last section dropped
    until none is left; `inner` (an embedded config's section, `credentials`) stays innermost."""
    tail = (inner,) if inner else ()
    return [(*sections[:n], *tail) for n in range(len(sections), -1, -1)]


def _lookup(
    key: str, hint: Any, paths: Sequence[tuple[str, ...]], pipeline: str | None
) -> _Found | None:
    """The value dlt would take for `key` and where it is: pipeline-scoped sections of every
    provider first, then the providers in order, in each the most specific path first."""
    for scope in (pipeline, None) if pipeline else (None,):
        for provider in dlt.config.config_providers:
            if provider.is_empty or isinstance(provider, VaultDocProvider):
                continue
            if scope and not provider.supports_sections:
                continue
            for path in paths:
                value, full_key = provider.get_value(key, hint, scope, *path)
                if value is not None:
                    origin = _origin(provider, key, scope, path, full_key)
                    if is_secret_hint(hint) and not provider.supports_secrets:
                        origin += " (refused: a secret here fails the run)"
                    return _Found(value, origin)
    return None


def _origin(
    provider: ConfigProvider, key: str, scope: str | None, path: tuple[str, ...], full_key: str
) -> str:
    if isinstance(provider, EnvironProvider):
        return f"env {full_key}"
    if isinstance(provider, BaseDocProvider):
        return doc_where(provider, key, scope, path)
    return provider.name


def _setting(name: str, found: _Found | None, default: Any, secret: bool) -> Setting:
    if found is None:
        return Setting(name, _display(default, secret), DEFAULT)
    return Setting(name, _display(found.value, secret), found.origin)


def _display(value: Any, secret: bool) -> str:
    if value is None:
        return NOT_SET
    if secret:
        return MASK
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):  # a password in a URL is masked wherever the URL is
        return shown((_url_masked(value) if "@" in value else None) or value)
    if isinstance(value, (Mapping, list, tuple)):
        return shown(json.dumps(value, default=str))
    return shown(str(value))


def _accounts_shown(value: Any) -> str:
    """The accounts list by its names alone: its tables hold secrets."""
    if isinstance(value, str):  # an environment variable: JSON
        try:
            value = json.loads(value)
        except ValueError:
            return MASK
    if isinstance(value, str) or not isinstance(value, Sequence):
        return MASK
    names = [
        str(a.get("name") or a.get("account_sid") or "?") if isinstance(a, Mapping) else "?"
        for a in value
    ]
    return shown(f"{len(names)} account{'s' if len(names) != 1 else ''}: {', '.join(names)}")


def _credentials_shown(value: Any) -> str:
    """A credentials string as a URL without its password and query values, else masked."""
    return (_url_masked(value) if isinstance(value, str) else None) or MASK


def _url_masked(text: str) -> str | None:
    """`scheme://user:***@host/path?key=***`; None where `text` is no URL. Where an `@` follows
    the host (a password holding `/`, `?` or `#`, or an `@` in the query), all is masked."""
    match = _URL.match(text)
    if not match:
        return None
    scheme, rest = match.groups()
    end = min([i for i in map(rest.find, "/?#") if i >= 0], default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        return f"{scheme}://{MASK}"
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        host = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"  # a lone user may be a token
    path, _, query = tail.partition("#")[0].partition("?")
    params = [
        (f"{p.partition('=')[0]}={MASK}" if "=" in p else MASK) for p in query.split("&") if p
    ]
    return f"{scheme}://{host}{path}" + (f"?{'&'.join(params)}" if params else "")


def _spec_fields(destination: str) -> dict[str, bool]:
    """The destination's credential fields, True for those its dlt spec does not mark secret."""
    try:
        factory = Destination.from_reference(destination)
        hint = factory.spec.get_resolvable_fields()[CREDENTIALS] if factory else None
    except Exception:  # a destination dlt does not know: every credential is masked
        hint = None
    specs: list[Any] = [*get_all_types_of_class_in_union(hint, CredentialsConfiguration)] or [hint]
    public: dict[str, bool] = {}
    for spec in specs:
        if isinstance(spec, type) and issubclass(spec, BaseConfiguration):
            for field, field_hint in spec.get_resolvable_fields().items():
                public[field] = public.get(field, True) and not is_secret_hint(field_hint)
    return public


def _configured_destinations(pipeline: str) -> dict[str, set[str]]:
    """Destinations with credentials under `destination.<name>` (or the pipeline's scope of it)
    in any provider, each with the credential fields written out one by one."""
    found: dict[str, set[str]] = {}
    for env_name in os.environ:
        parts = env_name.split("__")
        if parts[:1] == [pipeline.upper()]:
            parts = parts[1:]
        is_credential = len(parts) >= 3 and parts[0] == "DESTINATION" and parts[2] == "CREDENTIALS"
        if is_credential and env_name == env_name.upper():  # dlt reads upper-case names only
            fields = found.setdefault(parts[1].lower(), set())
            if len(parts) > 3:
                fields.add("__".join(parts[3:]).lower())
    for provider in dlt.config.config_providers:
        if isinstance(provider, BaseDocProvider) and not isinstance(provider, VaultDocProvider):
            for scope in (pipeline, None):
                table, _ = provider.get_value(DESTINATION, AnyType, scope or "")
                for name, config in table.items() if isinstance(table, Mapping) else ():
                    credentials = config.get(CREDENTIALS) if isinstance(config, Mapping) else None
                    if credentials is not None:
                        fields = found.setdefault(str(name), set())
                        if isinstance(credentials, Mapping):
                            fields.update(str(field) for field in credentials)
    return found
