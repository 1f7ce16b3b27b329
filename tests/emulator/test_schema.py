"""Every list response validates against the response schemas of Twilio's OpenAPI spec.

openapi-core validates types, patterns, enums and nullability; the spec does not forbid extra
properties, so the field sets are compared with the schemas' property lists as well.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from twilio_emulator import Emulator

from .conversation_support import META_KEYS, properties, validate
from .helpers import membership_counts, session_for

pytest.importorskip("openapi_core")


def _list_urls(emu: Emulator) -> list[str]:
    base = emu.base_url
    urls = [f"{base}/v1/Services", f"{base}/v1/Services?PageSize=1", f"{base}/v1/Users?PageSize=3"]
    for service in emu.services():
        sid = service["sid"]
        urls.append(f"{base}/v1/Services/{sid}/Users?PageSize=5")
        counts = membership_counts(emu, sid)
        # Users with 0 rows, one page and several pages.
        for user in {min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)}:
            urls.append(f"{base}/v1/Services/{sid}/Users/{user}/Conversations")
            urls.append(f"{base}/v1/Services/{sid}/Users/{user}/Conversations?PageSize=20")
    user = max(membership_counts(emu, emu.default_service_sid).items(), key=lambda item: item[1])[0]
    urls.append(f"{base}/v1/Users/{user}/Conversations?PageSize=10")
    return urls


def test_every_list_page_validates(emu: Emulator, openapi: Any, spec: dict[str, Any]) -> None:
    item_schema = {
        "services": "conversations.v1.service",
        "users": "conversations.v1.service.service_user",
        "conversations": "conversations.v1.service.service_user.service_user_conversation",
    }
    pages = 0
    with session_for(emu) as session:
        for start in _list_urls(emu):
            url: str | None = start
            while url:
                response = session.get(url)
                assert response.status_code == 200
                validate(openapi, emu, response)
                body = response.json()
                key = body["meta"]["key"]
                assert set(body) == {key, "meta"}
                assert set(body["meta"]) == META_KEYS
                for item in body[key]:
                    assert set(item) == properties(spec, item_schema[key])
                url = body["meta"]["next_page_url"]
                pages += 1
    assert pages > 20


def test_user_links_include_user_conversations(emu: Emulator, http: requests.Session) -> None:
    user = emu.users(emu.default_service_sid)[0]
    assert set(user["links"]) == {"user_conversations"}
    row = next(r for r in emu.all_user_conversations())
    assert set(row["links"]) == {"participant", "conversation"}


def test_fetch_user_validates(emu: Emulator, openapi: Any, http: requests.Session) -> None:
    user = emu.users(emu.default_service_sid)[0]
    for url in (user["url"], f"{emu.base_url}/v1/Users/{user['sid']}"):
        response = http.get(url)
        validate(openapi, emu, response)
        assert response.json() == {
            **user,
            "url": response.json()["url"],
            "links": response.json()["links"],
        }


def test_validation_catches_a_broken_row(
    emu: Emulator, openapi: Any, http: requests.Session
) -> None:
    """The check can fail: a row whose account SID breaks the pattern is rejected."""
    response = http.get(f"{emu.base_url}/v1/Services")
    response._content = response.content.replace(b'"account_sid":"AC', b'"account_sid":"XX')  # noqa: SLF001
    with pytest.raises(Exception, match="does not match"):
        validate(openapi, emu, response)
