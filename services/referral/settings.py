"""referral's configuration: environment variables prefixed ``REFNET_REFERRAL_``."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field, field_validator

from services.referral.domain import Priority
from shared.crypto import Keyring, keyring_from_files
from shared.settings import DEFAULT_PORTS, ServiceSettings


class ReferralSettings(ServiceSettings):
    service_name: ClassVar[str] = "referral"
    port: int = DEFAULT_PORTS["referral"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_referral"

    # How referral gets its cases:clearance token for intake: the registry's client credentials grant with
    # the credentials file of the referral-service client (the launcher sets it), else this static bearer.
    credentials_file: str = ""
    service_token: str = ""
    clearance_timeout_seconds: float = 5.0
    # Consumer group names are "<prefix>-registry" and "<prefix>-intake".
    consumer_group_prefix: str = "referral"
    # How often the deadline scheduler looks for referrals past due (and tries to become leader).
    deadline_interval_seconds: float = 30.0
    # How long a recipient has to acknowledge a referral before it is overdue, by priority: the common
    # inter-agency referral form's 24 h, 72 h and 14 days unless the country's SOPs agreed others. ISO 8601
    # durations (`PT24H`, `P14D`, `PT5S`).
    acknowledge_emergency_within: timedelta = timedelta(hours=24)
    acknowledge_urgent_within: timedelta = timedelta(hours=72)
    acknowledge_normal_within: timedelta = timedelta(days=14)
    # A replica that finds the registry's topic empty when it starts waits this long for the registry's first
    # events (on a fresh stack they come seconds later) before it takes an unknown recipient for unknown.
    registry_empty_grace_seconds: float = 15.0
    # Longest wait a pull-feed client may ask for.
    feed_max_wait_seconds: float = 30.0
    # Waiting pull-feed requests (wait > 0) an agency may hold at once on one replica; beyond it 429.
    feed_max_waiting_per_agency: int = Field(default=4, ge=1)
    # The master key wrapping referral's per-case data keys (the free text of referrals and transitions is
    # sealed under them): a file holding base64 of 32 random bytes, referral's own (not intake's). Without it
    # no free text is accepted or shown (503).
    master_key_file: str = ""
    # During a master-key rotation: the key being retired, still accepted for unwrapping.
    previous_master_key_file: str = ""

    # Webhooks (Standard Webhooks signatures): poll interval of the dispatcher, exponential backoff with
    # jitter between failed attempts, disabled after so many failures in a row. Each attempt is bounded by
    # outbound_deadline_seconds and outbound_max_response_bytes; URLs are checked by outbound_allow_http and
    # outbound_allow_private (shared settings).
    webhook_poll_seconds: float = 1.0
    webhook_backoff_base_seconds: float = 2.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_max_failures: int = 12
    # Deliveries in flight at once, in all and per agency: one agency's slow receivers cannot take every slot.
    webhook_max_parallel: int = Field(default=50, ge=1)
    webhook_max_parallel_per_agency: int = Field(default=4, ge=1)
    webhook_max_subscriptions_per_agency: int = 20
    # After a secret rotation the old secret keeps signing this long (receivers switch meanwhile).
    webhook_secret_grace_seconds: int = Field(default=86400, ge=0, le=30 * 86400)

    @field_validator("acknowledge_emergency_within", "acknowledge_urgent_within", "acknowledge_normal_within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    def keyring(self) -> Keyring:
        """The configured master keys; ``KeyUnavailable`` when there is none."""
        return keyring_from_files(self.master_key_file, self.previous_master_key_file,
                                  setting="REFNET_REFERRAL_MASTER_KEY_FILE")

    def acknowledge_within(self) -> dict[Priority, timedelta]:
        return {Priority.emergency: self.acknowledge_emergency_within,
                Priority.urgent: self.acknowledge_urgent_within,
                Priority.normal: self.acknowledge_normal_within}
