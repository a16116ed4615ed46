"""audit's configuration: environment variables prefixed ``REFNET_AUDIT_``."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import DEFAULT_PORTS, ServiceSettings


class AuditSettings(ServiceSettings):
    service_name: ClassVar[str] = "audit"
    port: int = DEFAULT_PORTS["audit"]
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:55432/refnet_audit"

    # The database role the running service acts as: it may only INSERT and SELECT the log (the role that
    # runs migrations owns the tables). Empty: act as the connecting user (when that user is the writer).
    writer_role: str = "refnet_audit_writer"

    # Signed checkpoints. Without a key file the service signs with a throwaway key (and says so in its
    # log): fine for tests, useless for auditors, who pin the public key.
    checkpoint_key_file: str = ""
    checkpoint_origin: str = "refnet.local/audit"
    checkpoint_interval_seconds: float = 5.0
    # Earlier checkpoint keys, as C2SP verifier keys (``refnet keys audit-checkpoint`` prints the current one's):
    # a checkpoint counts only if one of the log's keys verifies it, so after a rotation list the old one here.
    checkpoint_previous_keys: list[str] = []
    # Where the signer remembers the last checkpoint it signed, outside the database (a JSON file on the
    # signer's own storage, next to the key). Empty: in memory only, until the next restart.
    checkpoint_state_file: str = ""
    # Witnesses (C2SP tlog-cosignature, Ed25519 verifier keys) whose cosignatures the log accepts and serves.
    witness_keys: list[str] = []
    # A full recomputation of /audit/verify (?full=true) at most this often; the default one is incremental.
    full_verify_interval_seconds: float = 300.0

    # The Kafka consumer group of the ingest consumer (alerts match refnet.*audit.*: docs/operations.md).
    consumer_group: str = "refnet-audit"

    # The single sequencer: how many pending entries one append takes, and how often it looks.
    sequencer_batch_size: int = 1000
    sequencer_poll_seconds: float = 0.5
