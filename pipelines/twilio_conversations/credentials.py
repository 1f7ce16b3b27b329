"""Twilio credentials as a dlt configspec, with Twilio's conventional environment variables.

Resolution order for each field: dlt's providers (`SOURCES__TWILIO_CONVERSATIONS__CREDENTIALS__*`
environment variables, `.dlt/secrets.toml`, ...), then Twilio's own names (`TWILIO_ACCOUNT_SID`,
`TWILIO_AUTH_TOKEN`, `TWILIO_API_KEY`, `TWILIO_API_SECRET`) for whatever is still missing.
"""

from __future__ import annotations

import os
from typing import Final

from dlt.common.configuration import configspec
from dlt.common.configuration.specs import CredentialsConfiguration
from dlt.common.typing import TSecretStrValue

from .errors import ConfigurationError
from .settings import ACCOUNT_SID_PATTERN, API_KEY_SID_PATTERN

TWILIO_ENV_FALLBACKS: Final[dict[str, str]] = {
    "account_sid": "TWILIO_ACCOUNT_SID",
    "auth_token": "TWILIO_AUTH_TOKEN",
    "api_key_sid": "TWILIO_API_KEY",
    "api_key_secret": "TWILIO_API_SECRET",
}


@configspec
class TwilioCredentials(CredentialsConfiguration):
    """Either an Account SID with its Auth Token, or an API Key SID with its secret.

    Attributes:
        account_sid: `AC…`; required with `auth_token`, optional with an API key.
        auth_token: The account's Auth Token.
        api_key_sid: `SK…` API Key SID (preferred: revocable, least privilege).
        api_key_secret: The API key's secret.
    """

    account_sid: str | None = None
    auth_token: TSecretStrValue | None = None
    api_key_sid: str | None = None
    api_key_secret: TSecretStrValue | None = None

    def on_resolved(self) -> None:
        for field, env_name in TWILIO_ENV_FALLBACKS.items():
            if not getattr(self, field):
                value = os.environ.get(env_name)
                if value:
                    setattr(self, field, value.strip())

    def basic_auth_pair(self) -> tuple[str, str]:
        """The (username, password) pair for HTTP Basic auth; an API key wins over the token.

        Raises:
            ConfigurationError: When no complete pair is configured or a SID is malformed.
        """
        if self.api_key_sid or self.api_key_secret:
            if not (self.api_key_sid and self.api_key_secret):
                raise ConfigurationError(
                    "credentials: api_key_sid and api_key_secret must be set together"
                )
            if not API_KEY_SID_PATTERN.match(self.api_key_sid):
                raise ConfigurationError(
                    f"credentials: api_key_sid {self.api_key_sid!r} is not an API Key SID "
                    "(SK followed by 32 hex digits)"
                )
            self._check_account_sid(required=False)
            return self.api_key_sid, self.api_key_secret
        if not (self.account_sid and self.auth_token):
            raise ConfigurationError(
                "credentials missing: set account_sid and auth_token (or api_key_sid and "
                "api_key_secret) under [sources.twilio_conversations.credentials], or "
                "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN (TWILIO_API_KEY/TWILIO_API_SECRET)"
            )
        self._check_account_sid(required=True)
        return self.account_sid, self.auth_token

    def _check_account_sid(self, *, required: bool) -> None:
        if (required or self.account_sid) and not ACCOUNT_SID_PATTERN.match(self.account_sid or ""):
            raise ConfigurationError(
                f"credentials: account_sid {self.account_sid!r} is not an Account SID "
                "(AC followed by 32 hex digits)"
            )
