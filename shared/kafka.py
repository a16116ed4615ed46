"""Kafka clients configured one way for every service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import OffsetOutOfRangeError, TopicAlreadyExistsError

log = structlog.get_logger("refnet.kafka")

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of a process authenticates: SASL/SCRAM and/or TLS (mTLS with a client certificate).

    Read from ``REFNET_KAFKA_*`` (shared.settings) once at start-up and installed with ``configure``; every
    producer, consumer and admin client is built with ``client_options()``, so no client can be left open."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"kafka_security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(f"kafka_sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}")
            if not self.sasl_username or not self.sasl_password:
                raise ValueError("kafka_sasl_username and kafka_sasl_password (or _FILE) are required for SASL")

    @classmethod
    def from_settings(cls, settings: Any) -> KafkaSecurity:
        return cls(
            security_protocol=settings.kafka_security_protocol.upper(),
            sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
            sasl_username=settings.kafka_sasl_username,
            sasl_password=_secret(settings.kafka_sasl_password, settings.kafka_sasl_password_file),
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        if self.security_protocol in ("SSL", "SASL_SSL"):
            # Verify the broker against the given CA (the system's when none is given); a client certificate
            # makes it mTLS.
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
            options["ssl_context"] = context
        return options

    def __repr__(self) -> str:  # never the password, e.g. in a traceback or a log line
        return f"KafkaSecurity(security_protocol={self.security_protocol!r}, user={self.sasl_username!r})"


def _secret(value: str, file: str) -> str:
    return Path(file).read_text().strip() if file else value


_security = KafkaSecurity()


def configure(security: KafkaSecurity) -> None:
    """Install how this process's Kafka clients authenticate (the service's start-up, the CLI)."""
    global _security
    _security = security


def configure_from_env() -> None:
    """For commands outside a service (launcher, CLI): the shared ``REFNET_KAFKA_*`` settings."""
    from shared.settings import ServiceSettings

    if any(k.startswith("REFNET_KAFKA_S") for k in os.environ):
        configure(KafkaSecurity.from_settings(ServiceSettings()))


def client_options() -> dict[str, Any]:
    """The security options every AIOKafka* client of this process is built with."""
    return _security.client_options()


def make_producer(bootstrap: str, *, enable_idempotence: bool = False) -> AIOKafkaProducer:
    # acks=all: an event counts as published only once every in-sync replica has it. Idempotence is off
    # by default because the embedded broker (Tansu) refuses InitProducerId; on Apache Kafka turn it on.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=enable_idempotence,
        linger_ms=2,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
        metadata_max_age_ms=30000,
        **client_options(),
    )


async def end_offsets(bootstrap: str, topic: str, *, timeout: float = 15.0) -> dict[int, int]:
    """Per partition of ``topic``: the offset the next record will get (nothing for a topic that does not exist)."""
    return (await end_offsets_of(bootstrap, [topic], timeout=timeout)).get(topic, {})


async def end_offsets_of(bootstrap: str, topics: Iterable[str], *,
                         timeout: float = 15.0) -> dict[str, dict[int, int]]:
    """``end_offsets`` of several topics with one client; a topic that does not exist is absent."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=int(timeout * 1000), **client_options())
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        await asyncio.wait_for(consumer.topics(), timeout)  # fresh metadata
        partitions = [TopicPartition(topic, p) for topic in sorted(set(topics))
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return {}
        found = {tp: int(offset) for tp, offset in
                 (await asyncio.wait_for(consumer.end_offsets(partitions), timeout)).items()}
        # The embedded broker (Tansu 0.6) answers ListOffsets with the last *batch's* base offset + 1, short of
        # the end by the rest of that batch; a fetch's high watermark is right. So fetch the last record the
        # answer points at and take the high watermark (on Apache Kafka both agree).
        written = [tp for tp, end in found.items() if end > 0]
        if written:
            consumer.assign(written)
            for tp in written:
                consumer.seek(tp, found[tp] - 1)
            deadline = asyncio.get_running_loop().time() + timeout
            while any(consumer.highwater(tp) is None for tp in written):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError("no high watermark from the broker")
                await consumer.getmany(*written, timeout_ms=int(min(left, 1.0) * 1000), max_records=1)
            for tp in written:
                found[tp] = max(found[tp], int(consumer.highwater(tp) or 0))
        ends: dict[str, dict[int, int]] = {}
        for tp, offset in found.items():
            ends.setdefault(tp.topic, {})[tp.partition] = offset
        return ends
    finally:
        await consumer.stop()


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


async def event_ids_at(bootstrap: str, positions: Mapping[TopicPartition, int], *,
                       timeout: float = 1.5) -> dict[TopicPartition, str | None]:
    """The CloudEvents id (``ce_id``) of the record at each given offset; None where no record is there (the
    log is shorter, or was replaced by one whose first offset is later). How a reader that remembered where it
    was tells whether the broker still holds the log it left."""
    found: dict[TopicPartition, str | None] = dict.fromkeys(positions)
    if not positions:
        return found
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                              auto_offset_reset="none", **client_options())
    try:
        await reader.start()
        reader.assign(list(positions))
        for tp, offset in positions.items():
            reader.seek(tp, offset)
            try:
                records = (await reader.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)).get(tp, [])
            except OffsetOutOfRangeError:
                records = []
            if records and records[0].offset == offset:
                found[tp] = header(records[0].headers, "ce_id")
    finally:
        await reader.stop()
    return found


async def ensure_topics(bootstrap: str, topics: Iterable[str], *, partitions: int = 1,
                        replication_factor: int = 1, config: dict[str, str] | None = None,
                        timeout: float = 15.0) -> None:
    wanted = sorted(set(topics))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                **client_options())
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor,
                              topic_configs=config or {})
                     for t in missing]
                )
    finally:
        await admin.close()
