"""Settings base: every service reads its configuration from the environment with its own prefix.

``REFNET_INTAKE_DATABASE_URL`` configures intake; a value without the service prefix
(``REFNET_KAFKA_BOOTSTRAP``) is the shared default for all services.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared.db import with_ssl
from shared.outbound import OutboundPolicy

SERVICE_NAMES = ("registry", "intake", "referral", "audit")
DEFAULT_PORTS = {"registry": 8001, "intake": 8002, "referral": 8003, "audit": 8004}


class ServiceSettings(BaseSettings):
    """What every service needs. A service subclasses it, sets ``service_name`` and adds its own fields."""

    service_name: ClassVar[str] = "service"

    database_url: str = "postgresql+asyncpg://refnet@127.0.0.1:55432/refnet"
    # Connections the service keeps open. Sized for its busiest moments rather than left to overflow:
    # a connection opened for a burst and closed after it costs more than the query it served.
    database_pool_size: int = Field(default=20, ge=1)
    database_pool_overflow: int = Field(default=10, ge=0)
    # The URL from a file instead (a mounted secret: a password is not left in the environment).
    database_url_file: str = ""
    # TLS to PostgreSQL, for every connection the service opens (pool, outbox relay, migrations):
    # libpq's sslmode (disable, require, verify-ca, verify-full) and the CA file that signs the server's
    # certificate. Production: verify-full. They replace TLS parameters in the URL.
    database_sslmode: str = ""
    database_sslrootcert: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How this service authenticates to the broker (shared.kafka.KafkaSecurity): PLAINTEXT only for the
    # embedded stack; SASL_SSL (SCRAM) or SSL with a client certificate (mTLS) on Kafka.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_sasl_password_file: str = ""  # a mounted secret; preferred over the plain variable
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # Per-agency delivery topics, which referral creates when it first delivers to an agency (nobody else may).
    delivery_topic_partitions: int = Field(default=1, ge=1)
    delivery_topic_retention_ms: int = Field(default=14 * 24 * 3600 * 1000, ge=-1)  # deploy/k8s/examples
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""

    # Where the other services are (for the few synchronous calls, e.g. referral asking intake).
    registry_url: str = "http://127.0.0.1:8001"
    intake_url: str = "http://127.0.0.1:8002"
    referral_url: str = "http://127.0.0.1:8003"
    audit_url: str = "http://127.0.0.1:8004"

    # Token validation (this service as an OAuth resource server). The issuer can be any OAuth server.
    issuer: str = "http://127.0.0.1:8001"
    jwks_url: str = ""
    audience: str = "refnet"
    jwks_min_refetch_seconds: float = 30.0
    token_leeway_seconds: int = 30
    # Where the issuer announces revoked tokens and suspended agencies (shared.revocation); empty: nowhere.
    revocation_topic: str = "refnet.registry.events"

    # Events
    kafka_enable_idempotence: bool = False  # Tansu (the embedded broker) refuses it; true on Apache Kafka
    # The embedded broker recreates a vanished topic with one partition on first use, so one is the
    # safe local default; production topics are declared with their partition counts (deploy/k8s).
    kafka_partitions: int = 1
    # For topics a service creates on demand (per-agency delivery topics): 3 and 2 on a production cluster.
    kafka_replication_factor: int = 1
    kafka_min_insync_replicas: int = 1
    relay_poll_seconds: float = 1.0
    # How long the outbox keeps what it published, to publish it again if the broker loses it (shared.outbox):
    # long enough to outlive a broker outage. 0 keeps everything (the embedded stack: its broker forgets all
    # at every stop). The newest event of each entity is kept in any case.
    outbox_retention_days: float = Field(default=14.0, ge=0)
    # How often the relay checks that the broker still holds what it published.
    relay_reconcile_seconds: float = Field(default=15.0, gt=0)
    relay_batch_size: int = 500
    consumer_max_attempts: int = 5
    consumer_retry_backoff_seconds: float = 0.2

    # Calls to URLs partners give (webhook URLs, an agency's jwks_uri; shared.outbound): a total deadline per
    # call (resolution, connect, send and the whole answer) and the bytes read of an answer. Plain http and
    # loopback/private addresses are refused unless allowed: for a development stack on one machine only.
    outbound_deadline_seconds: float = Field(default=10.0, gt=0)
    outbound_max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    outbound_allow_http: bool = False
    outbound_allow_private: bool = False

    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(default=1024 * 1024)

    model_config = SettingsConfigDict(extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Shared defaults (REFNET_X) sit under the service's own values (REFNET_<SERVICE>_X).
        shared = EnvSettingsSource(settings_cls, env_prefix="REFNET_")
        return init_settings, env_settings, shared, dotenv_settings, file_secret_settings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        prefix = f"REFNET_{cls.service_name.upper()}_"
        cls.model_config = SettingsConfigDict(env_prefix=prefix, extra="ignore")

    @model_validator(mode="after")
    def _database_connection(self) -> ServiceSettings:
        if self.database_url_file:
            try:
                with open(self.database_url_file) as handle:
                    self.database_url = handle.read().strip()
            except OSError as exc:
                raise ValueError(f"database_url_file {self.database_url_file} cannot be read") from exc
        self.database_url = with_ssl(self.database_url, self.database_sslmode, self.database_sslrootcert)
        return self

    @property
    def outbox_retention(self) -> timedelta | None:
        return timedelta(days=self.outbox_retention_days) if self.outbox_retention_days else None

    @property
    def source(self) -> str:
        """CloudEvents ``source`` of everything this service emits."""
        return f"/refnet/{self.service_name}"

    @property
    def effective_jwks_url(self) -> str:
        return self.jwks_url or self.issuer.rstrip("/") + "/.well-known/jwks.json"

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(allow_http=self.outbound_allow_http, allow_private=self.outbound_allow_private,
                              deadline_seconds=self.outbound_deadline_seconds,
                              max_response_bytes=self.outbound_max_response_bytes)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
