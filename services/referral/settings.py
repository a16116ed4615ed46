"""referral's configuration: environment variables prefixed ``REFNET_REFERRAL_``."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import DEFAULT_PORTS, ServiceSettings


class ReferralSettings(ServiceSettings):
    service_name: ClassVar[str] = "referral"
    port: int = DEFAULT_PORTS["referral"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_referral"
