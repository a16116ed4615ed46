"""console's configuration: environment variables prefixed ``REFNET_CONSOLE_``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.kek import KeyRing
from shared.settings import ServiceSettings

KEK_SETTING = "REFNET_CONSOLE_KEK_FILE"
#: The console is not one of the four APIs (shared.settings.SERVICE_NAMES): its port is its own.
CONSOLE_PORT = 8005


class ConsoleSettings(ServiceSettings):
    service_name: ClassVar[str] = "console"
    port: int = CONSOLE_PORT
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_console"
    # The console publishes nothing and reads no topic: it listens to no revocation list either (the APIs it
    # calls check the person's token themselves).
    revocation_topic: str = ""

    # The OpenID Connect provider people sign in at (its /.well-known/openid-configuration), and the console's
    # client there: a confidential client when a secret is set, else a public one (PKCE alone).
    oidc_issuer: str = ""
    client_id: str = "refnet-console"
    client_secret: str = ""
    client_secret_file: str = ""  # a mounted secret; preferred over the plain variable
    # Where the provider sends people back (must be registered with the client); empty: <base_url>/auth/callback.
    redirect_uri: str = ""
    scopes: str = "openid profile offline_access"

    # The key-encryption key the people's tokens are sealed under in the database (base64 of 32 bytes, as
    # shared.kek's files), and an older one still accepted during a rotation.
    kek_file: str = ""
    previous_kek_file: str = ""

    # A session ends after this long without a page the person asked for (the inbox's refresh does not count),
    # and after max_session_seconds in any case; the page warns warn_seconds before.
    session_idle_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    session_max_seconds: int = Field(default=12 * 3600, ge=300, le=7 * 24 * 3600)
    session_warn_seconds: int = Field(default=120, ge=10, le=600)
    # Secure session cookies (Chromium accepts Secure on http://127.0.0.1 and localhost).
    cookie_secure: bool = True
    # Where the quick-exit control leaves to: a neutral page (the console's own, by default).
    quick_exit_url: str = "/neutral"
    languages: list[str] = ["en", "fr", "ar"]
    default_language: str = "en"
    # The inbox's refresh, in seconds.
    inbox_refresh_seconds: int = Field(default=10, ge=2, le=300)
    # Calls to the four APIs.
    api_timeout_seconds: float = Field(default=15.0, gt=0)

    def kek_ring(self) -> KeyRing:
        """The configured KEKs; ``shared.kek.KeyUnavailable`` naming the setting when there is none."""
        return KeyRing.load(self.kek_file, self.previous_kek_file, setting=KEK_SETTING)

    @property
    def effective_oidc_issuer(self) -> str:
        return (self.oidc_issuer or self.issuer).rstrip("/")

    @property
    def effective_redirect_uri(self) -> str:
        return self.redirect_uri or self.base_url.rstrip("/") + "/auth/callback"

    @property
    def effective_client_secret(self) -> str:
        if self.client_secret_file:
            with open(self.client_secret_file) as handle:
                return handle.read().strip()
        return self.client_secret
