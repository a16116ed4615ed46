"""Delivery topics are created by referral's relay with their prescribed partitions and retention
(issue 17 finding 2), on the broker the tests run: before, every topic a relay created got the service's
one partition count and no retention."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer

from shared.contract import REFERRAL_TYPES
from shared.db import unit_of_work
from shared.outbox import add_event
from shared.topics import DELIVERY_PREFIX, delivery_topic
from tests.conftest import Infra
from tests.integration.messaging import Harness
from tests.integration.test_outbox_and_consumer import harness, running


async def _partitions(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()


async def _publish(h: Harness, bootstrap: str, topics: list[str]) -> None:
    async with running(h.relay(bootstrap, partitions=1, delivery_partitions=3,
                               delivery_retention_ms=1209600000).run()):
        async with unit_of_work(h.sessions) as session:
            for topic in topics:
                type_ = REFERRAL_TYPES[0] if topic.startswith(DELIVERY_PREFIX) else "test.happened.v1"
                await add_event(session, source="/test", topic=topic, type=type_,
                                aggregate_type="test", aggregate_id="k", payload={"key": "k", "n": 1})
        for _ in range(150):
            if await h.outbox_size() == 0:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("not published")


async def test_a_delivery_topic_gets_its_own_partitions_and_retention(infra: Infra, new_database) -> None:
    h = await harness(new_database)
    agency_topic = delivery_topic(f"agy_{uuid.uuid4().hex[:16]}")
    other_topic = h.topic + ".other"
    await _publish(h, infra.bootstrap, [agency_topic, other_topic])
    assert await _partitions(infra.bootstrap, agency_topic) == 3
    assert await _partitions(infra.bootstrap, other_topic) == 1  # the service's own setting, as before
    # Retention goes with the CreateTopics request (the embedded broker does not describe topic configs back).
    relay = h.relay(infra.bootstrap, delivery_partitions=3, delivery_retention_ms=1209600000)
    assert relay.delivery_config == {"retention.ms": "1209600000"}
