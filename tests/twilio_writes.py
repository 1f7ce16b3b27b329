"""Change data as real traffic does: through the emulator's Twilio write endpoints over HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests


class TwilioWrites:
    """The Conversations write calls the tests need, form-encoded as Twilio takes them."""

    def __init__(self, emu: Any) -> None:
        self.base = emu.base_url
        self.session = requests.Session()
        self.session.auth = (emu.account_sid, emu.auth_token)

    def _call(self, method: str, path: str, **form: Any) -> dict[str, Any]:
        response = self.session.request(method, self.base + path, data=form or None, timeout=10)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else {}

    def set_read_state(self, service: str, user: str, conversation: str, **form: Any) -> None:
        """LastReadMessageIndex / NotificationLevel: the conversation's date_updated stays."""
        self._call(
            "POST", f"/v1/Services/{service}/Users/{user}/Conversations/{conversation}", **form
        )

    def leave(self, service: str, user: str, conversation: str) -> None:
        self._call("DELETE", f"/v1/Services/{service}/Users/{user}/Conversations/{conversation}")

    def join(self, service: str, conversation: str, identity: str) -> None:
        self._call(
            "POST",
            f"/v1/Services/{service}/Conversations/{conversation}/Participants",
            Identity=identity,
        )

    def update_conversation(self, service: str, conversation: str, **form: Any) -> None:
        """FriendlyName / State / Attributes: moves the conversation's date_updated."""
        self._call("POST", f"/v1/Services/{service}/Conversations/{conversation}", **form)

    def create_conversation(self, service: str, **form: Any) -> str:
        return str(self._call("POST", f"/v1/Services/{service}/Conversations", **form)["sid"])

    def post_message(
        self, service: str, conversation: str, author: str, body: str = "hello"
    ) -> str:
        """Returns the new message's SID."""
        return str(
            self._call(
                "POST",
                f"/v1/Services/{service}/Conversations/{conversation}/Messages",
                Author=author,
                Body=body,
            )["sid"]
        )

    def edit_message(self, service: str, conversation: str, message: str, **form: Any) -> None:
        """Body / Attributes / Author: moves the message's date_updated."""
        self._call(
            "POST",
            f"/v1/Services/{service}/Conversations/{conversation}/Messages/{message}",
            **form,
        )

    def delete_message(self, service: str, conversation: str, message: str) -> None:
        self._call(
            "DELETE", f"/v1/Services/{service}/Conversations/{conversation}/Messages/{message}"
        )

    def add_sms_participant(
        self, service: str, conversation: str, address: str, proxy_address: str
    ) -> str:
        """An SMS (or, with ``whatsapp:`` addresses, WhatsApp) participant; returns its SID."""
        form = {"MessagingBinding.Address": address, "MessagingBinding.ProxyAddress": proxy_address}
        return str(
            self._call(
                "POST", f"/v1/Services/{service}/Conversations/{conversation}/Participants", **form
            )["sid"]
        )

    def update_participant(
        self, service: str, conversation: str, participant: str, **form: Any
    ) -> None:
        """Attributes / LastReadMessageIndex / LastReadTimestamp of any participant."""
        self._call(
            "POST",
            f"/v1/Services/{service}/Conversations/{conversation}/Participants/{participant}",
            **form,
        )

    def remove_participant(self, service: str, conversation: str, participant: str) -> None:
        self._call(
            "DELETE",
            f"/v1/Services/{service}/Conversations/{conversation}/Participants/{participant}",
        )

    def delete_conversation(self, service: str, conversation: str) -> None:
        self._call("DELETE", f"/v1/Services/{service}/Conversations/{conversation}")

    def create_user(self, service: str, identity: str) -> str:
        return str(self._call("POST", f"/v1/Services/{service}/Users", Identity=identity)["sid"])

    def delete_user(self, service: str, user: str) -> None:
        self._call("DELETE", f"/v1/Services/{service}/Users/{quote(user, safe='')}")
