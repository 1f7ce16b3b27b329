"""The conversation, participant and message endpoints validate against Twilio's OpenAPI spec.

Every page of the lists, every single fetch and every write response, in the service form
(``/v1/Services/{IS}/Conversations…``) and the default-service form (``/v1/Conversations…``),
whose schemas differ (the latter's participants and messages have no ``chat_service_sid``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from twilio_emulator import Emulator, EmulatorConfig, run_emulator

from .conversation_support import (
    CONV_SPEC,
    META_KEYS,
    SCHEMAS,
    interesting_conversations,
    properties,
    validate,
)
from .helpers import session_for

pytest.importorskip("openapi_core")


@pytest.fixture(scope="module")
def cemu() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[Emulator]:
    with run_emulator(EmulatorConfig(data=CONV_SPEC)) as running:
        yield running


def _list_urls(emu: Emulator) -> list[tuple[str, bool]]:
    """(first page URL, twin?) of every kind of list the new endpoints serve."""
    base = emu.base_url
    urls: list[tuple[str, bool]] = []
    for service in emu.services():
        sid = service["sid"]
        root = f"{base}/v1/Services/{sid}/Conversations"
        urls += [(root, False), (f"{root}?PageSize=7", False), (f"{root}?State=active", False)]
        urls.append((f"{root}?StartDate=2024-01-01&EndDate=2024-12-31&PageSize=9", False))
        for conv in interesting_conversations(emu, sid):
            urls.append((f"{root}/{conv}/Participants?PageSize=2", False))
            urls.append((f"{root}/{conv}/Messages", False))
            urls.append((f"{root}/{conv}/Messages?Order=desc&PageSize=100", False))
    urls.append((f"{base}/v1/Conversations?PageSize=20", True))
    for conv in interesting_conversations(emu, emu.default_service_sid)[:3]:
        urls.append((f"{base}/v1/Conversations/{conv}/Participants", True))
        urls.append((f"{base}/v1/Conversations/{conv}/Messages?Order=desc&PageSize=60", True))
    return urls


def _check_row(spec: dict[str, Any], key: str, row: dict[str, Any], twin: bool) -> None:
    assert set(row) == properties(spec, SCHEMAS[key][twin])


def test_every_page_of_the_new_lists_validates(
    cemu: Emulator, openapi: Any, spec: dict[str, Any]
) -> None:
    pages = rows = 0
    with session_for(cemu) as session:
        for start, twin in _list_urls(cemu):
            url: str | None = start
            while url:
                response = session.get(url)
                assert response.status_code == 200, response.text
                validate(openapi, cemu, response)
                body = response.json()
                key = body["meta"]["key"]
                assert set(body) == {key, "meta"} and set(body["meta"]) == META_KEYS
                for row in body[key]:
                    _check_row(spec, key, row, twin)
                    rows += 1
                url = body["meta"]["next_page_url"]
                pages += 1
    assert pages > 100 and rows > 2000


def test_single_fetches_validate_and_equal_the_list_rows(
    cemu: Emulator, openapi: Any, spec: dict[str, Any]
) -> None:
    service = cemu.default_service_sid
    base = cemu.base_url
    fetched = 0
    with session_for(cemu) as session:
        for conv in interesting_conversations(cemu, service):
            truth = next(c for c in cemu.conversations(service) if c["sid"] == conv)
            response = session.get(truth["url"])
            validate(openapi, cemu, response)
            assert response.json() == truth
            twin = session.get(f"{base}/v1/Conversations/{conv}")
            validate(openapi, cemu, twin)
            _check_row(spec, "conversations", twin.json(), True)
            for p in cemu.participants(service, conv):
                response = session.get(p["url"])
                validate(openapi, cemu, response)
                assert response.json() == p
                if p["identity"]:
                    identity = quote(p["identity"], safe="")
                    by_identity = session.get(f"{truth['links']['participants']}/{identity}")
                    assert by_identity.json() == p
                twin = session.get(f"{base}/v1/Conversations/{conv}/Participants/{p['sid']}")
                validate(openapi, cemu, twin)
                _check_row(spec, "participants", twin.json(), True)
                fetched += 1
            messages = cemu.messages(service, conv)
            for m in messages[:3] + messages[-3:]:
                response = session.get(m["url"])
                validate(openapi, cemu, response)
                assert response.json() == m
                twin = session.get(f"{base}/v1/Conversations/{conv}/Messages/{m['sid']}")
                validate(openapi, cemu, twin)
                _check_row(spec, "messages", twin.json(), True)
                assert {k: v for k, v in twin.json().items() if k not in ("url", "links")} == {
                    k: v for k, v in m.items() if k not in ("url", "links", "chat_service_sid")
                }
                fetched += 1
    assert fetched > 20


def test_write_responses_validate(fresh: Emulator, openapi: Any, spec: dict[str, Any]) -> None:
    service = fresh.default_service_sid
    conv = interesting_conversations(fresh, service)[0]
    root = f"{fresh.base_url}/v1/Services/{service}/Conversations/{conv}"
    user = fresh.users(service)[0]
    with session_for(fresh) as session:
        created = [
            session.post(f"{root}/Participants", data={"Identity": "new.user@example.com"}),
            session.post(
                f"{root}/Participants",
                data={
                    "MessagingBinding.Address": "+15550001111",
                    "MessagingBinding.ProxyAddress": "+15017122661",
                    "Attributes": '{"source": "test"}',
                },
            ),
            session.post(f"{root}/Messages", data={"Body": "hi", "Author": user["identity"]}),
            session.post(
                f"{fresh.base_url}/v1/Services/{service}/Conversations",
                data={"FriendlyName": "Fresh"},
            ),
        ]
        for response in created:
            assert response.status_code == 201, response.text
            validate(openapi, fresh, response)
        message = created[2].json()
        updated = [
            session.post(message["url"], data={"Body": "edited"}),
            session.post(created[1].json()["url"], data={"LastReadMessageIndex": "2"}),
            session.post(f"{fresh.base_url}/v1/Conversations/{conv}", data={"State": "closed"}),
        ]
        for response in updated:
            assert response.status_code == 200, response.text
            validate(openapi, fresh, response)
    _check_row(spec, "participants", created[0].json(), False)
    _check_row(spec, "messages", updated[0].json(), False)
    _check_row(spec, "conversations", updated[2].json(), True)


def test_validation_catches_a_broken_message(cemu: Emulator, openapi: Any) -> None:
    """The check can fail: a message whose SID breaks the pattern is rejected."""
    service = cemu.default_service_sid
    conv = interesting_conversations(cemu, service)[0]
    with session_for(cemu) as session:
        response = session.get(
            f"{cemu.base_url}/v1/Services/{service}/Conversations/{conv}/Messages"
        )
    response._content = response.content.replace(b'"sid":"IM', b'"sid":"XX', 1)  # noqa: SLF001
    with pytest.raises(Exception, match="does not match"):
        validate(openapi, cemu, response)
