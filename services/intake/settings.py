"""intake's configuration: environment variables prefixed ``REFNET_INTAKE_``."""

from __future__ import annotations

from typing import ClassVar

from services.intake.crypto import Keyring
from shared.crypto import keyring_from_files
from shared.settings import DEFAULT_PORTS, ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    port: int = DEFAULT_PORTS["intake"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_intake"
    # The master key wrapping every case's data key: a file holding base64 of 32 random bytes.
    master_key_file: str = ""
    # During a master-key rotation: the key being retired, still accepted for unwrapping.
    previous_master_key_file: str = ""
    # How long a risk-to-life override lets its recipient read without consent.
    override_valid_hours: int = 72
    # Consumer groups are "<consumer_group>-referrals" and "<consumer_group>-agencies": one name per
    # intake deployment (replicas share it; a second deployment on the same broker needs its own).
    consumer_group: str = "intake"

    def keyring(self) -> Keyring:
        """The configured master keys; ``KeyUnavailable`` when there is none (no personal data is then
        accepted or shown, rather than kept under a throwaway key)."""
        # A rotation in progress stages its new key beside the current one (see deploy/commands/intake.py).
        return keyring_from_files(self.master_key_file, self.previous_master_key_file,
                                  setting="REFNET_INTAKE_MASTER_KEY_FILE")
