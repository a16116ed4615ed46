"""registry's configuration: environment variables prefixed ``REFNET_REGISTRY_``."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import DEFAULT_PORTS, ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: ClassVar[str] = "registry"
    port: int = DEFAULT_PORTS["registry"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_registry"
