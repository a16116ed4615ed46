"""Kafka clients configured one way for every service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = structlog.get_logger("refnet.kafka")

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


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
    )


async def end_offsets(bootstrap: str, topic: str, *, timeout: float = 15.0) -> dict[int, int]:
    """Per partition of ``topic``: the offset the next record will get (nothing for a topic that does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        await asyncio.wait_for(consumer.topics(), timeout)  # fresh metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return {}
        found = await asyncio.wait_for(consumer.end_offsets(partitions), timeout)
        return {tp.partition: int(offset) for tp, offset in found.items()}
    finally:
        await consumer.stop()


async def ensure_topics(bootstrap: str, topics: Iterable[str], *, partitions: int = 1,
                        replication_factor: int = 1, config: dict[str, str] | None = None,
                        timeout: float = 15.0) -> None:
    wanted = sorted(set(topics))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
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
