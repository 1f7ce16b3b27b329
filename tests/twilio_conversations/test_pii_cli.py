"""The PII policy as an operator sets it: `.dlt/config.toml` + `.dlt/secrets.toml`, or environment
variables, in a real CLI process against the emulator. A typo or a missing key is one line and
exit 2, before any request."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cli_process import cli, emulator_env
from leaks import leaks_in_destination, leaks_in_files
from mirror import truth_users

KEY = "cli-pii-key-fedcba9876543210"
SECTION = "[sources.twilio_conversations]"


def digest(value: str) -> str:
    return "hmac-sha256:" + hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def identities(path: Path) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("select sid, identity from twilio.users").fetchall()
    return {str(sid): str(identity) for sid, identity in rows}


def write_dlt(folder: Path, config: str = "", secrets: str = "") -> None:
    (folder / ".dlt").mkdir(exist_ok=True)
    (folder / ".dlt" / "config.toml").write_text(config)
    (folder / ".dlt" / "secrets.toml").write_text(secrets)


@pytest.fixture
def small(start_emulator: Any) -> Any:
    return start_emulator(seed=3, services=1, users=6, max_conversations=10)


def test_policy_in_config_toml_and_key_in_secrets_toml_hash_identities(
    small: Any, tmp_path: Path
) -> None:
    write_dlt(
        tmp_path,
        config=f'{SECTION}\nbase_url = "{small.base_url}"\n'
        '[sources.twilio_conversations.pii]\nusers.identity = "hash"\n'
        'users.friendly_name = "drop"\n'  # some are the identity, title-cased
        'user_conversations.created_by = "hash"\n',  # creators' identities
        secrets=f'{SECTION}\npii_hash_key = "{KEY}"\n',
    )
    env = emulator_env(small, RUNTIME__LOG_LEVEL="DEBUG")
    result = cli("run", "--progress", "log", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    expected = {u["sid"]: digest(u["identity"]) for u in truth_users(small)}
    database = tmp_path / "twilio_conversations.duckdb"
    assert identities(database) == expected
    # No identity, and not the key, in the output, any file (the secrets file aside) or cell.
    raw = {u["identity"] for u in truth_users(small)}
    output = result.stdout + result.stderr
    assert "DEBUG" in output
    assert [v for v in raw | {KEY} if v in output] == []
    everything = leaks_in_files(tmp_path, raw | {KEY})
    assert everything == [f".dlt/secrets.toml: {KEY!r}"]
    assert leaks_in_destination(database, raw | {KEY}) == []


def test_policy_and_key_as_environment_variables(small: Any, tmp_path: Path) -> None:
    env = emulator_env(
        small,
        SOURCES__TWILIO_CONVERSATIONS__BASE_URL=small.base_url,
        SOURCES__TWILIO_CONVERSATIONS__PII=json.dumps({"users": {"identity": "hash"}}),
        SOURCES__TWILIO_CONVERSATIONS__PII_HASH_KEY=KEY,
    )
    result = cli("run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    expected = {u["sid"]: digest(u["identity"]) for u in truth_users(small)}
    assert identities(tmp_path / "twilio_conversations.duckdb") == expected


@pytest.mark.parametrize(
    ("config", "secrets", "env", "line"),
    [
        (  # a mistyped column
            '[sources.twilio_conversations.pii]\nusers.identiy = "hash"\n',
            f'{SECTION}\npii_hash_key = "{KEY}"\n',
            {},
            "error: pii: unknown column `users.identiy` (did you mean `users.identity`?)",
        ),
        (  # a mistyped policy
            '[sources.twilio_conversations.pii]\nusers.identity = "hashed"\n',
            "",
            {},
            "error: pii: users.identity = `hashed` is not a policy (did you mean `hash`?)",
        ),
        (  # hash without a key
            '[sources.twilio_conversations.pii]\nusers.identity = "hash"\n',
            "",
            {},
            'error: pii: users.identity = "hash" needs a key: set pii_hash_key under',
        ),
        (  # the key in config.toml, which holds no secrets: dlt refuses it there
            f'{SECTION}\npii_hash_key = "{KEY}"\n'
            '[sources.twilio_conversations.pii]\nusers.identity = "hash"\n',
            "",
            {},
            "error: Provider `config.toml` cannot hold secret values but key "
            "`sources.twilio_conversations.pii_hash_key` with secret value is present",
        ),
        (  # a mistyped `pii` table
            '[sources.twilio_conversations.ppi]\nusers.identity = "drop"\n',
            "",
            {},
            "error: unknown setting `ppi` in .dlt/config.toml [sources.twilio_conversations]; "
            "did you mean `pii`?",
        ),
        (  # a nested environment variable dlt would not read
            "",
            "",
            {"SOURCES__TWILIO_CONVERSATIONS__PII__USERS__IDENTITY": "drop"},
            "error: unknown setting `PII__USERS__IDENTITY` in environment variable "
            "SOURCES__TWILIO_CONVERSATIONS__PII__USERS__IDENTITY; did you mean `pii` "
            "(SOURCES__TWILIO_CONVERSATIONS__PII)?",
        ),
    ],
    ids=["column", "policy", "no-key", "key-in-config", "table-typo", "nested-env"],
)
def test_a_policy_typo_or_a_missing_key_is_one_line_exit_2_and_no_request(
    small: Any, tmp_path: Path, config: str, secrets: str, env: dict[str, str], line: str
) -> None:
    write_dlt(tmp_path, config=config, secrets=secrets)
    environment = emulator_env(small, SOURCES__TWILIO_CONVERSATIONS__BASE_URL=small.base_url)
    result = cli("run", cwd=tmp_path, env={**environment, **env})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(line), lines
    if "config.toml` cannot hold secret" not in line:
        assert KEY not in result.stdout + result.stderr
    assert small.stats.snapshot().total == 0
    assert not (tmp_path / "twilio_conversations.duckdb").exists()


REPO = Path(__file__).resolve().parents[2]


def uncommented(path: Path, start: str) -> str:
    """The commented example of `path` from the line `# <start>` on, uncommented up to the first
    line that is not a comment."""
    lines = path.read_text().splitlines()
    first = lines.index(f"# {start}")
    block = []
    for line in lines[first:]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("# ").removeprefix("#"))
    return "\n".join(block) + "\n"


def test_the_shipped_examples_uncommented_hash_and_drop_what_they_say(
    small: Any, tmp_path: Path
) -> None:
    config = uncommented(REPO / ".dlt" / "config.toml", "[sources.twilio_conversations.pii]")
    secrets = uncommented(REPO / ".dlt" / "example.secrets.toml", SECTION)
    assert 'pii_hash_key = ""' in secrets
    write_dlt(tmp_path, config=config, secrets=secrets.replace('""', f'"{KEY}"'))
    env = emulator_env(small, SOURCES__TWILIO_CONVERSATIONS__BASE_URL=small.base_url)
    result = cli("run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    database = tmp_path / "twilio_conversations.duckdb"
    expected = {u["sid"]: digest(u["identity"]) for u in truth_users(small)}
    assert identities(database) == expected
    with duckdb.connect(str(database), read_only=True) as con:
        names = con.execute("select count(friendly_name) from twilio.users").fetchall()
        created = con.execute(
            "select created_by, count(attributes), count(attributes_json) "
            "from twilio.user_conversations group by all"
        ).fetchall()
    assert names == [(0,)]
    creators = {r["created_by"] for r in small.all_user_conversations()}
    assert {row[0] for row in created} == {digest(c) for c in creators}
    assert {row[1:] for row in created} == {(0, 0)}
