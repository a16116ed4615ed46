"""intake's configuration: environment variables prefixed ``REFNET_INTAKE_``."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import DEFAULT_PORTS, ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    port: int = DEFAULT_PORTS["intake"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_intake"
