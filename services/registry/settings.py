"""registry's configuration: environment variables prefixed ``REFNET_REGISTRY_``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.kek import KeyRing
from shared.settings import DEFAULT_PORTS, ServiceSettings

KEK_SETTING = "REFNET_REGISTRY_KEK_FILE"


class RegistrySettings(ServiceSettings):
    service_name: ClassVar[str] = "registry"
    port: int = DEFAULT_PORTS["registry"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_registry"

    # The authorization server. The first signing key is imported from this PEM file (a P-256 private key)
    # when the database holds none; `refnet keys rotate` adds the next ones.
    signing_key_file: str = ""
    # The key-encryption key (KEK): a file holding base64 of 32 random bytes. The signing keys' private parts
    # are stored in the database only wrapped under it; without it the registry does not start.
    kek_file: str = ""
    # During a KEK rotation: an older KEK still accepted for unwrapping.
    previous_kek_file: str = ""
    # How long a key that stopped signing keeps its private part (for the key file `refnet keys rotate`
    # writes, with the previous key second) before it is destroyed; its public part stays in the JWKS while
    # it is the previous key. Default: one maximal token lifetime plus the JWKS cache and leeway, rounded up.
    signing_key_grace_seconds: int = Field(default=1200, ge=0, le=7 * 24 * 3600)
    access_token_lifetime_seconds: int = Field(default=600, ge=60, le=900)
    assertion_max_lifetime_seconds: int = Field(default=300, ge=30, le=300)
    assertion_leeway_seconds: int = 30
    # Token endpoint throttling per (claimed client id, address).
    token_requests_per_minute: float = 120.0
    token_burst: int = 30
    # Fetching an agency's jwks_uri holds up its token request: a shorter deadline than the shared default.
    outbound_deadline_seconds: float = Field(default=5.0, gt=0)

    # People (issue #20): staff sign-in at the registry's OpenID Connect provider.
    # Sign-out after inactivity: a sign-in session and its refresh tokens end after this long unused.
    session_idle_seconds: int = Field(default=900, ge=1, le=24 * 3600)
    # An invitation (or reset) link is single use and expires after this long.
    invite_lifetime_seconds: int = Field(default=72 * 3600, ge=60, le=14 * 24 * 3600)
    # Lockout: this many failed attempts (password or second factor) within the window lock the account
    # for lock_seconds, or until an agency admin resets it.
    sign_in_max_failures: int = Field(default=5, ge=1, le=100)
    sign_in_failure_window_seconds: int = Field(default=900, ge=1)
    sign_in_lock_seconds: int = Field(default=900, ge=1)
    # The authorization code's and the ID token's lifetimes.
    authorization_code_lifetime_seconds: int = Field(default=60, ge=5, le=600)
    id_token_lifetime_seconds: int = Field(default=600, ge=60, le=3600)
    # The sign-in cookies are Secure unless the issuer is plain http (the local stack, tests).
    cookie_secure: bool | None = None
    # A sign-in through an agency's own identity provider lasts at most this long, however active: then the
    # provider is asked again (a person removed there loses RefNet within this time).
    federated_session_max_seconds: int = Field(default=3600, ge=60, le=24 * 3600)

    def kek_ring(self) -> KeyRing:
        """The configured KEKs; ``shared.kek.KeyUnavailable`` naming the setting when there is none."""
        return KeyRing.load(self.kek_file, self.previous_kek_file, setting=KEK_SETTING)

    @property
    def token_url(self) -> str:
        return self.issuer.rstrip("/") + "/oauth/token"
