"""registry's configuration: environment variables prefixed ``REFNET_REGISTRY_``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import DEFAULT_PORTS, ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: ClassVar[str] = "registry"
    port: int = DEFAULT_PORTS["registry"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_registry"

    # The authorization server. The first signing key is imported from this PEM file (a P-256 private key)
    # when the database holds none; `refnet keys rotate` adds the next ones.
    signing_key_file: str = ""
    access_token_lifetime_seconds: int = Field(default=600, ge=60, le=900)
    assertion_max_lifetime_seconds: int = Field(default=300, ge=30, le=300)
    assertion_leeway_seconds: int = 30
    # Token endpoint throttling per (claimed client id, address).
    token_requests_per_minute: float = 120.0
    token_burst: int = 30
    # Fetching an agency's jwks_uri holds up its token request: a shorter deadline than the shared default.
    outbound_deadline_seconds: float = Field(default=5.0, gt=0)

    @property
    def token_url(self) -> str:
        return self.issuer.rstrip("/") + "/oauth/token"
