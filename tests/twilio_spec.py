"""Where Twilio's OpenAPI spec for Conversations v1 is: `shared/twilio/` beside the clone (as CI
lays it), else the workplace's copy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dlt.common.schema.typing import TTableSchemaColumns
from twilio_conversations.columns import (
    CONVERSATIONS_COLUMNS,
    SERVICES_COLUMNS,
    USER_CONVERSATIONS_COLUMNS,
    USERS_COLUMNS,
)

_NAME = Path("shared") / "twilio" / "twilio_conversations_v1.json"
_CANDIDATES = (Path(__file__).resolve().parents[2] / _NAME, Path("/work") / _NAME)
SPEC_PATH = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])


def load_spec() -> dict[str, Any]:
    """The spec; a test without it fails under CI and is skipped, saying why, elsewhere."""
    if not SPEC_PATH.exists():
        message = f"Twilio's spec not found at {' or '.join(str(p) for p in _CANDIDATES)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


# table -> (the spec's record schema the table mirrors, the hints the resource is given)
TABLES: dict[str, tuple[str, TTableSchemaColumns]] = {
    "services": ("conversations.v1.service", SERVICES_COLUMNS),
    "users": ("conversations.v1.service.service_user", USERS_COLUMNS),
    "user_conversations": (
        "conversations.v1.service.service_user.service_user_conversation",
        USER_CONVERSATIONS_COLUMNS,
    ),
    "conversations": ("conversations.v1.service.service_conversation", CONVERSATIONS_COLUMNS),
}
