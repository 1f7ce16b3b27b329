"""Name mistyped settings under `[sources.twilio_conversations]` instead of ignoring them.

dlt looks up only the keys a source asks for, so `service_sid = [...]` (for `service_sids`) or
`SOURCES__TWILIO_CONVERSATIONS__PAGESIZE` is silently ignored, and a mistyped filter makes the
run read the whole account. `check_settings` lists the keys really present in this source's
sections of every in-memory config provider (`.dlt/config.toml`, `.dlt/secrets.toml`, the
global dlt dir's files, registered document providers) and in `SOURCES__<SECTION>__*`
environment variables, and reports each unknown one with the closest valid key. An unknown key
whose closest valid key would widen the run fails it (`ConfigurationError`); so does a mistyped
PII setting (the source counts `pii` and `pii_hash_key` among the widening keys: ignoring them
would store raw personal data), and a `SOURCES__<SECTION>__PII__<TABLE>__<COLUMN>` variable,
which dlt never reads (a table setting is one JSON variable). Any other unknown key is one
warning line. Values are never read into a message: they may be secrets.

Checked sections (dlt's lookup paths for a source's arguments): `sources.<section>`, its
subsection `<source name>` (`sources.twilio_conversations.twilio_conversations`), `credentials`
in either, and the same under a pipeline-scoped `<pipeline_name>.sources.<section>` for the
active pipeline and the CLI's pipelines. Vault providers (Google, AWS, Airflow) are not read:
listing their keys would mean network calls.

dlt's public configuration API looks values up by key (`dlt.config.get`) and has no call that
lists the keys a provider holds, so the document providers of `dlt.config.config_providers` are
read through the class dlt documents for custom providers (`BaseDocProvider`, its `get_value`
and `get_value_location`; https://dlthub.com/docs/api_reference/common/configuration/providers/doc).
Environment variables are read from `os.environ`. `doc_where`, `pipeline_names` and `shown` are
shared with `effective_config.py`, which prints the values these providers hold.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import dlt

# No public call lists a provider's keys (module doc); these are the classes dlt's API reference
# documents for providers, and the context that names the pipeline dlt's lookups use.
from dlt.common.configuration.container import Container
from dlt.common.configuration.providers.doc import BaseDocProvider
from dlt.common.configuration.providers.toml import GLOBAL_ORIGIN_PREFIX
from dlt.common.configuration.providers.vault import VaultDocProvider
from dlt.common.configuration.specs import ConfigSectionContext

from .credentials import TwilioCredentials
from .errors import ConfigurationError

logger = logging.getLogger("twilio_conversations")

SOURCES = "sources"
SOURCE_SECTION = "twilio_conversations"  # the module name: dlt's section for the source
SOURCE_NAME = "twilio_conversations"  # the source's name: dlt's subsection for its arguments
CREDENTIALS = "credentials"
# Pipelines the CLI runs (runner.PIPELINE_NAME, runner.DEMO_PIPELINE_NAME): their pipeline-scoped
# sections are checked even when another pipeline is active. The active one is always checked.
PIPELINE_NAMES = ("twilio_conversations", "twilio_conversations_demo")
# Sections dlt itself reads under a source's section while extracting it (pipe iterator, buffered
# writers, schema normalizers); not ours to judge, so accepted as they are.
DLT_SUBSECTIONS = ("extract", "data_writer", "schema")
MAX_KEY_SHOWN = 80
_NESTED = "<source name subsection>"


@dataclass(frozen=True)
class Unknown:
    """One key no setting has, where it was found, and the valid key it most resembles."""

    key: str
    where: str
    suggestion: str | None = None
    suggestion_env: str | None = None
    widening: bool = False

    def describe(self) -> str:
        return f"unknown setting `{shown(self.key)}` in {self.where}"

    def hint(self) -> str:
        if self.suggestion is None:
            return ""
        env = f" ({self.suggestion_env})" if self.suggestion_env else ""
        return f"did you mean `{self.suggestion}`{env}?"


def check_settings(known: Collection[str], widening: Collection[str], warn: bool = True) -> None:
    """Report keys of this source's config sections that no setting has.

    Args:
        known: Every key `[sources.<section>]` may hold (the source's arguments and the
            runner's settings); `credentials` is a table with `TwilioCredentials`'s fields.
        widening: Keys whose absence makes the run read more data than configured.
        warn: Whether to log the other unknown keys (False: only raise, as the multi-account
            runner does before any account runs; each account's source then warns).

    Raises:
        ConfigurationError: One line naming every unknown key whose closest valid key is in
            `widening`. Other unknown keys are logged as one warning line each; nothing else
            (an unreadable provider, say) ever fails the run.
    """
    try:
        unknown = find_unknown_settings(known, widening)
    except Exception:  # a provider's oddity must never fail a run the settings allow
        logger.debug("could not check settings for unknown keys", exc_info=True)
        return
    if not warn:
        unknown = [item for item in unknown if item.widening]
    for item in unknown:
        if not item.widening:
            hint = item.hint()
            if hint:
                logger.warning("%s; %s", item.describe(), hint)
            else:
                logger.warning("%s; no setting has a similar name", item.describe())
    wide = [item for item in unknown if item.widening]
    if len(wide) == 1:
        raise ConfigurationError(
            f"{wide[0].describe()}; {wide[0].hint()} Not started: ignoring it would widen the "
            "run to more data than configured"
        )
    if wide:
        listed = "; ".join(f"{item.describe()} ({item.hint()})" for item in wide)
        raise ConfigurationError(
            f"{len(wide)} unknown settings would widen the run to more data than configured, so "
            f"it was not started: {listed}"
        )


def find_unknown_settings(known: Collection[str], widening: Collection[str]) -> list[Unknown]:
    """Every unknown key in this source's sections of the config providers dlt uses now."""
    section, name = _source_section()
    rules = _Rules(tuple(known), frozenset(widening), name)
    roots = [(SOURCES, section)] + ([(SOURCES, name)] if name != section else [])
    pipelines = pipeline_names()
    found = list(_environ_unknowns(rules, [r[1] for r in roots]))
    for provider in dlt.config.config_providers:
        try:
            if isinstance(provider, BaseDocProvider) and not isinstance(provider, VaultDocProvider):
                for pipeline in (None, *pipelines):
                    for root in roots:
                        found.extend(_doc_unknowns(provider, rules, pipeline, root))
        except Exception:  # skip a provider we cannot read; the others are still checked
            logger.debug("could not list keys of config provider %s", provider.name, exc_info=True)
    return found


@dataclass(frozen=True)
class _Rules:
    """What a table of this source may hold, and how to name the closest valid key."""

    known: tuple[str, ...]
    widening: frozenset[str]
    source_name: str  # the subsection dlt looks in first: `sources.<section>.<source name>`

    def table_keys(self, nested: bool) -> tuple[str, ...]:
        extra = () if nested else (self.source_name,)
        return (*self.known, *extra, *DLT_SUBSECTIONS)

    def credential_keys(self) -> tuple[str, ...]:
        return tuple(TwilioCredentials.get_resolvable_fields())

    def subsection(self, key: str, nested: bool) -> str | None:
        """`credentials`, `_NESTED` for the source-name table, a dlt subsection, or None for a
        plain key."""
        if key == CREDENTIALS and key in self.known:
            return CREDENTIALS
        if not nested and key == self.source_name:
            return _NESTED
        return key if key in DLT_SUBSECTIONS else None

    def closest(self, key: str, in_credentials: bool, nested: bool) -> str | None:
        if in_credentials:
            candidates = {_norm(k): k for k in self.credential_keys()}
        else:
            # a credential field written outside its table: point at `credentials.<field>`
            candidates = {_norm(k): f"{CREDENTIALS}.{k}" for k in self.credential_keys()}
            candidates.update({_norm(k): k for k in self.table_keys(nested)})
        wanted = _norm(key)
        if wanted in candidates:
            return candidates[wanted]
        match = difflib.get_close_matches(wanted, list(candidates), n=1, cutoff=0.6)
        return candidates[match[0]] if match else None

    def unknown(
        self, key: str, where: str, in_credentials: bool, nested: bool, env_prefix: str = ""
    ) -> Unknown:
        suggestion = self.closest(key, in_credentials, nested)
        env = None
        if suggestion is not None and env_prefix:
            env = env_prefix + suggestion.replace(".", "__").upper()
        return Unknown(
            key,
            where,
            suggestion,
            env,
            widening=not in_credentials and suggestion in self.widening,
        )


def _doc_unknowns(
    provider: BaseDocProvider,
    rules: _Rules,
    pipeline: str | None,
    root: tuple[str, str],
) -> Iterator[Unknown]:
    table, _ = provider.get_value(root[1], object, pipeline or "", root[0])
    if not isinstance(table, Mapping):
        return
    yield from _table_unknowns(provider, rules, pipeline, (*root,), table, nested=False)


def _table_unknowns(
    provider: BaseDocProvider,
    rules: _Rules,
    pipeline: str | None,
    path: tuple[str, ...],
    table: Mapping[object, object],
    nested: bool,
) -> Iterator[Unknown]:
    for raw_key, value in table.items():
        key = str(raw_key)
        sub = rules.subsection(key, nested)
        if sub == CREDENTIALS:
            if isinstance(value, Mapping):
                fields = rules.credential_keys()
                for field in value:
                    if str(field) not in fields:
                        where = doc_where(provider, str(field), pipeline, (*path, key))
                        yield rules.unknown(str(field), where, in_credentials=True, nested=nested)
        elif sub == _NESTED:
            if isinstance(value, Mapping):
                yield from _table_unknowns(
                    provider, rules, pipeline, (*path, key), value, nested=True
                )
        elif sub is None and key not in rules.known:
            where = doc_where(provider, key, pipeline, path)
            yield rules.unknown(key, where, in_credentials=False, nested=nested)


def doc_where(
    provider: BaseDocProvider, key: str, pipeline: str | None, path: tuple[str, ...]
) -> str:
    """`.dlt/config.toml [sources.twilio_conversations]`: the file the key came from, and its
    table (dlt's origins for toml files; else the provider's first location, or its name)."""
    origin = ""
    try:
        origin = provider.get_value_location(key, pipeline or "", *path)
    except Exception:
        origin = ""
    table = ".".join((pipeline, *path) if pipeline else path)
    return f"{_file_label(provider, origin)} [{shown(table)}]"


def _file_label(provider: BaseDocProvider, origin: str) -> str:
    """A path a user recognises: relative to the working dir, or with `~` for the home dir.

    dlt's toml providers name a value's file as `config.toml` (project settings dir) or
    `global:config.toml` (global dlt dir); their present locations list the project file first
    and the global one last, so that is how the name maps back to a path.
    """
    if not origin:
        return provider.name
    is_global = origin.startswith(GLOBAL_ORIGIN_PREFIX)
    base = origin.removeprefix(GLOBAL_ORIGIN_PREFIX)
    matching = [p for p in provider.present_locations if os.path.basename(p) == base]
    if not matching:  # a location of another provider (a path), or a name like `google_colab`
        return _pretty_path(origin) if os.sep in origin else origin
    return _pretty_path(matching[-1] if is_global else matching[0])


def _pretty_path(path: str) -> str:
    full = os.path.abspath(path)
    cwd = os.getcwd()
    if full.startswith(cwd + os.sep):
        return os.path.relpath(full, cwd)
    home = os.path.expanduser("~")
    if home not in ("", "~", os.sep) and full.startswith(home + os.sep):
        return "~" + full[len(home) :]
    return full


def _environ_unknowns(rules: _Rules, sections: Sequence[str]) -> Iterator[Unknown]:
    """Unknown `SOURCES__<SECTION>__*` (and `<PIPELINE>__SOURCES__<SECTION>__*`) variables.

    dlt reads `SOURCES__<SECTION>__<KEY>` with the key upper-cased, so a name that differs in
    any way, letter case included, is never read; the prefix is matched case-insensitively so
    that `sources__twilio_conversations__page_size` is named too.
    """
    wanted = {s.upper() for s in sections}
    for env_name in list(os.environ):
        parts = env_name.split("__")
        upper = [p.upper() for p in parts]
        if len(parts) >= 3 and upper[0] == SOURCES.upper() and upper[1] in wanted:
            rest, prefix = parts[2:], parts[:2]
        elif len(parts) >= 4 and upper[1] == SOURCES.upper() and upper[2] in wanted:
            rest, prefix = parts[3:], parts[:3]
        else:
            continue
        item = _environ_unknown(rules, env_name, "__".join(prefix).upper() + "__", rest)
        if item is not None:
            yield item


def _environ_unknown(rules: _Rules, env_name: str, prefix: str, rest: list[str]) -> Unknown | None:
    where = f"environment variable {shown(env_name)}"
    nested = False
    if len(rest) > 1 and rest[0] == rules.source_name.upper():
        nested, prefix, rest = True, prefix + rest[0] + "__", rest[1:]
    key = rest[0]
    sub = rules.subsection(key.lower(), nested) if key == key.upper() else None
    if sub == CREDENTIALS and len(rest) > 1:
        field = "__".join(rest[1:])
        if field in {k.upper() for k in rules.credential_keys()}:
            return None
        return rules.unknown(field, where, True, nested, prefix + CREDENTIALS.upper() + "__")
    if sub in DLT_SUBSECTIONS and len(rest) > 1:
        return None
    if len(rest) == 1 and key in {k.upper() for k in rules.known}:
        return None
    if len(rest) > 1 and key.lower() in rules.widening and key == key.upper():
        # `..__PII__USERS__IDENTITY`: a table setting dlt reads as one variable (JSON), never
        # by its parts, so the parts would be ignored
        return Unknown("__".join(rest), where, key.lower(), prefix + key, widening=True)
    return rules.unknown("__".join(rest), where, False, nested, prefix)


def _source_section() -> tuple[str, str]:
    """(section, source name) of this source: dlt's section is the module's name."""
    return SOURCE_SECTION, SOURCE_NAME


def pipeline_names() -> tuple[str, ...]:
    """The active pipeline's name (dlt's pipeline-scoped lookups use it), then the CLI's."""
    names: list[str] = []
    try:
        # Not dlt.current.pipeline(): where no pipeline is active, it makes one (and its folder);
        # dlt has no public call for the active pipeline's name.
        active = Container()[ConfigSectionContext].pipeline_name
    except Exception:
        active = None
    if active:
        names.append(active)
    names.extend(n for n in PIPELINE_NAMES if n not in names)
    return tuple(names)


def _norm(key: str) -> str:
    """Keys compared as users mistype them: letter case, `_` and `-` do not count."""
    return key.lower().replace("_", "").replace("-", "")


def shown(text: str) -> str:
    """A key or name fit for one log line: escaped control characters, bounded length."""
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= MAX_KEY_SHOWN else shown[: MAX_KEY_SHOWN - 1] + "…"
