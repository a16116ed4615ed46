"""intake's configuration: environment variables prefixed ``REFNET_INTAKE_``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from services.intake.crypto import STAGED_SUFFIX, Keyring, KeyUnavailable, MasterKey
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
        if not self.master_key_file:
            raise KeyUnavailable("REFNET_INTAKE_MASTER_KEY_FILE is not set")
        previous = [MasterKey.from_file(self.previous_master_key_file)] if self.previous_master_key_file else []
        # A rotation in progress stages its new key beside the current one (see services/intake/cli.py).
        staged = Path(self.master_key_file + STAGED_SUFFIX)
        if staged.exists():
            previous.append(MasterKey.from_file(staged))
        return Keyring(MasterKey.from_file(self.master_key_file), tuple(previous))
