"""The pure PII policy module: config shapes, typos, the hash's form, what a policy does to a
record. Expected digests are computed here with the standard library's HMAC."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest
from twilio_conversations.columns import parse_attributes
from twilio_conversations.errors import ConfigurationError
from twilio_conversations.pii import KEEP_ALL, parse_policy

KEY = "k" * 16
OTHER_KEY = "z" * 16


def expected(value: str, key: str = KEY) -> str:
    return "hmac-sha256:" + hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


USER = {
    "sid": "US" + "1" * 32,
    "identity": "josé.garcía@exämple.es",
    "friendly_name": "José",
    "attributes": '{"tier": "gold"}',
    "url": "https://example.test/Users/US1",
}


@pytest.mark.parametrize(
    "config",
    [
        {"users": {"identity": "hash", "attributes": "drop"}},  # TOML dotted keys / tables
        {"users.identity": "hash", "users.attributes": "drop"},  # quoted flat keys, env JSON
        {"users.identity": "HASH ", "users": {"attributes": "drop"}, "users.friendly_name": "keep"},
    ],
)
def test_every_config_shape_means_the_same_policy(config: dict[str, Any]) -> None:
    (row,) = parse_policy(config, KEY).apply("users", [USER])
    assert row == {**USER, "identity": expected(USER["identity"]), "attributes": None}
    assert USER["identity"] == "josé.garcía@exämple.es"  # the input is not modified


def test_hash_is_prefixed_lowercase_hex_hmac_sha256_stable_and_keyed() -> None:
    policy = parse_policy({"users.identity": "hash"}, KEY)
    (row,) = policy.apply("users", [USER])
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", row["identity"])
    assert row["identity"] == expected(USER["identity"])
    (again,) = parse_policy({"users": {"identity": "hash"}}, KEY).apply("users", [dict(USER)])
    assert again["identity"] == row["identity"]  # same key, same input: same digest
    (other,) = parse_policy({"users.identity": "hash"}, OTHER_KEY).apply("users", [USER])
    assert other["identity"] == expected(USER["identity"], OTHER_KEY) != row["identity"]


def test_null_stays_null_and_an_absent_field_stays_absent() -> None:
    policy = parse_policy({"users.friendly_name": "hash", "users.attributes": "drop"}, KEY)
    (row,) = policy.apply("users", [{"sid": "US1", "friendly_name": None}])
    assert row == {"sid": "US1", "friendly_name": None}


def test_hashed_attributes_have_no_parsed_twin() -> None:
    (row,) = parse_policy({"users.attributes": "hash"}, KEY).apply("users", [USER])
    assert row["attributes"] == expected(USER["attributes"])
    assert parse_attributes(row["attributes"]) is None  # attributes_json will be null


def test_keep_everywhere_returns_the_records_untouched() -> None:
    rows = [USER]
    assert parse_policy(None).apply("users", rows) is rows
    assert parse_policy({}).apply("users", rows) is rows
    assert parse_policy({"users.identity": "keep"}).apply("users", rows) is rows
    assert parse_policy({"users.identity": "keep"}) == KEEP_ALL
    users_only = parse_policy({"users.identity": "drop"})
    assert users_only.apply("user_conversations", rows) is rows
    assert users_only.describe() == "users.identity=drop"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"users.identiy": "hash"},
            "pii: unknown column `users.identiy` (did you mean `users.identity`?). PII columns: "
            "users.identity, users.friendly_name, users.attributes, "
            "user_conversations.friendly_name, user_conversations.unique_name, "
            "user_conversations.attributes, user_conversations.created_by, "
            "conversations.friendly_name, conversations.unique_name, conversations.attributes. "
            "Not started: "
            "ignoring it would leave a column unprotected",
        ),
        (
            {"user": {"identity": "hash"}},
            "pii: unknown table `user` (did you mean `users`?)",
        ),
        ({"users.identity": "hsah"}, "pii: users.identity = `hsah` is not a policy (did you"),
        ({"users": {"identity": 1}}, "pii: users.identity = `1` is not a policy"),
        ({"identity": "hash"}, "pii: `identity` names no column; write `<table>.<column>`"),
        (
            {"user_conversations.attributes_json": "drop"},
            "pii: user_conversations.attributes_json follows user_conversations.attributes",
        ),
        (
            {"users.sid": "drop"},
            "pii: unknown column `users.sid`",
        ),
    ],
)
def test_an_unknown_table_column_or_policy_is_one_line_naming_it(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as failure:
        parse_policy(config, KEY)
    assert str(failure.value).startswith(message)
    assert "\n" not in str(failure.value)


def test_hash_without_a_key_or_with_a_short_one_refuses_to_run() -> None:
    with pytest.raises(ConfigurationError) as missing:
        parse_policy({"users.friendly_name": "drop", "users.identity": "hash"}, None)
    assert str(missing.value) == (
        'pii: users.identity = "hash" needs a key: set pii_hash_key under '
        "[sources.twilio_conversations] in .dlt/secrets.toml, or "
        "SOURCES__TWILIO_CONVERSATIONS__PII_HASH_KEY. Not started"
    )
    with pytest.raises(ConfigurationError, match="shorter than 16 characters") as short:
        parse_policy({"users.identity": "hash"}, "short-key")
    assert "short-key" not in str(short.value)
    # drop needs no key
    assert parse_policy({"users.identity": "drop"}, None).describe() == "users.identity=drop"
