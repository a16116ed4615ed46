"""audit's configuration: environment variables prefixed ``REFNET_AUDIT_``."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import DEFAULT_PORTS, ServiceSettings


class AuditSettings(ServiceSettings):
    service_name: ClassVar[str] = "audit"
    port: int = DEFAULT_PORTS["audit"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_audit"
