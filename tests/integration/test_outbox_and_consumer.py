"""The event backbone's promises, against the real PostgreSQL and the real broker.

Nothing committed is lost, nothing rolled back is published, each event's effect happens once, one key's
events apply in order -- also after a consumer dies between its effect and its offset commit. Poison and
undecodable messages go to the dead-letter topic. The broker's own outages: test_broker_outages.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.db import unit_of_work
from shared.envelope import ERROR_HEADER
from shared.kafka import ensure_topics
from shared.observability import EVENTS_CONSUMED
from shared.outbox import add_event
from tests.conftest import Infra
from tests.integration.messaging import assert_exactly_once_in_order, harness, running


async def test_thousands_of_events_arrive_once_each_in_order_per_key(infra: Infra, new_database) -> None:
    # 3,000 events over 100 keys in 300 transactions, every 7th rolled back: enough batches, interleaving and
    # rollbacks to show loss, duplication or reordering; more only costs time (the benchmarks measure volume).
    h = await harness(new_database)
    async with running(h.relay(infra.bootstrap).run(), h.consumer(infra.bootstrap).run()):
        written = await h.write_stream(3_000, keys=100, per_tx=10, rolled_back_every=7)
        rows = await h.wait_for_effects(written, timeout=180)
        await asyncio.sleep(2)  # anything extra (a duplicate, a rolled-back event) would show up now
        rows = await h.effects()
    assert written == 3_000
    assert all(r.n >= 0 for r in rows), "an event of a rolled-back transaction was delivered"
    assert_exactly_once_in_order(rows, set(range(written)))
    assert await h.outbox_size() == 0


async def test_a_batch_reaching_a_new_topic_goes_out_at_once(infra: Infra, new_database) -> None:
    """A new agency's first referral: one transaction writes to a topic that existed when the relay started and
    to one that does not exist yet (the agency's delivery topic). Both go out at once: the embedded broker
    refused such a batch (NotLeaderForPartition) until the produce request timed out, 15 s later."""
    h = await harness(new_database)
    await ensure_topics(infra.bootstrap, [h.topic])  # as the launcher makes the services' topics
    async with running(h.relay(infra.bootstrap).run()):
        await h.write("k", 0)
        for _ in range(100):
            if await h.outbox_size() == 0:
                break
            await asyncio.sleep(0.1)
        new_topic = h.topic + ".new"
        async with unit_of_work(h.sessions) as session:
            await h.write("k", 1, session=session)
            await add_event(session, source="/test", topic=new_topic, type="test.happened.v1",
                            aggregate_type="test", aggregate_id="k", payload={"key": "k", "n": 2})
        started = time.monotonic()
        while await h.outbox_size() and time.monotonic() - started < 30:
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
    assert await h.outbox_size() == 0 and took < 5, f"published after {took:.1f} s"


CRASHING_CONSUMER = """
import asyncio, os, sys
from tests.integration.messaging import Harness
from shared.db import make_engine, make_sessionmaker

async def main(url, bootstrap, topic, group):
    engine = make_engine(url, pool_size=2)
    h = Harness(url, engine, make_sessionmaker(engine), topic)
    async def die():  # the effects of the batch are committed; the offsets are not
        os._exit(9)
    await h.consumer(bootstrap, group=group, on_batch_applied=die).run()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_consumer_killed_before_offset_commit_redelivery_is_a_no_op(infra: Infra, new_database) -> None:
    h = await harness(new_database)
    group = f"crashy-{h.topic}"
    async with running(h.relay(infra.bootstrap).run()):
        written = await h.write_stream(300, keys=10)
        await asyncio.sleep(0)
        proc = subprocess.run(
            [sys.executable, "-c", CRASHING_CONSUMER, h.url, infra.bootstrap, h.topic, group],
            cwd=Path(__file__).resolve().parents[2], env={**os.environ}, timeout=120, capture_output=True,
        )
        assert proc.returncode == 9, proc.stderr.decode()[-2000:]
        applied_by_the_dead = len(await h.effects())
        assert applied_by_the_dead > 0
        duplicates = EVENTS_CONSUMED.labels("test", group, "duplicate")
        before = duplicates._value.get()
        async with running(h.consumer(infra.bootstrap, group=group).run()):
            rows = await h.wait_for_effects(written, timeout=120)
            await asyncio.sleep(1)
            rows = await h.effects()
        redelivered = duplicates._value.get() - before
    assert redelivered >= applied_by_the_dead, "the uncommitted batch was not redelivered"
    assert_exactly_once_in_order(rows, set(range(written)))


async def test_poison_and_undecodable_messages_go_to_the_dlq_and_the_consumer_goes_on(
    infra: Infra, new_database
) -> None:
    h = await harness(new_database)
    async with running(h.relay(infra.bootstrap).run(), h.consumer(infra.bootstrap, poison_n=1).run()):
        await h.write("k", 0)
        await h.write("k", 1)  # the handler always fails on this one
        producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(h.topic, b"\xff\x00 not an event", key=b"k")
            await producer.send_and_wait(h.topic, b"{}", key=b"k", headers=[("ce_id", b"x")])
        finally:
            await producer.stop()
        await h.write("k", 2)
        rows = await h.wait_for_effects(2, timeout=60)
    assert [r.n for r in rows] == [0, 2]

    dlq = AIOKafkaConsumer(h.topic + ".dlq", bootstrap_servers=infra.bootstrap,
                           auto_offset_reset="earliest", group_id=None)
    await dlq.start()
    try:
        records = []
        for _ in range(20):
            batch = await dlq.getmany(timeout_ms=500)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= 3:
                break
    finally:
        await dlq.stop()
    errors = [dict(r.headers)[ERROR_HEADER].decode() for r in records]
    assert len(records) == 3, errors
    assert sorted(e.split(":", 1)[0] for e in errors) == ["ValueError", "undecodable", "undecodable"], errors
