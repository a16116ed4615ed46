"""When the broker loses what it acknowledged, the outbox publishes it again: nothing is lost, nothing doubled.

The embedded broker forgets everything when it stops; a production cluster can lose its log too (a disaster,
a retention that expired while a consumer was down, a move to a new cluster). The relay notices at start and
while running, and publishes its retained rows again with their original ids, in their original order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from deploy.launcher.infra import Broker
from shared import contract
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.kafka import header
from shared.outbox import NewEvent, OutboxRelay, add_events, mark_for_republish, outbox_summary
from shared.topics import REGISTRY_EVENTS
from tests.integration.messaging import Harness, assert_exactly_once_in_order


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_ids(bootstrap: str, topic: str, *, expect: int, timeout: float = 60) -> list[str]:
    """Every record's ce_id on ``topic``, from its start, as a case system reading its delivery topic sees them."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                              enable_auto_commit=False, metadata_max_age_ms=1000)
    ids: list[str] = []
    await reader.start()
    try:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            ids += [header(r.headers, "ce_id") or "" for r in records]
            if records:
                quiet_since = time.monotonic()
            elif len(ids) >= expect and time.monotonic() - quiet_since > 2:
                break  # everything expected, and nothing more for a while
    finally:
        await reader.stop()
    return ids


async def wait_published(h: Harness, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await h.outbox_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await h.outbox_size() == 0, "the relay did not publish"


async def test_events_the_broker_lost_reach_every_consumer_once_in_order(
        private_broker: Broker, new_database: Callable[[str], str]) -> None:
    h = await Harness.create(new_database("lostlog"))
    bootstrap = private_broker.bootstrap
    # A second reader with a database of its own: a consumer that had read nothing when the broker forgot.
    late_url = new_database("lostlog_late")
    late_engine = make_engine(late_url, pool_size=3)
    late = Harness(late_url, late_engine, make_sessionmaker(late_engine), h.topic)
    async with late.engine.begin() as conn:
        from shared.migration_ops import MESSAGING_DDL
        from tests.integration.messaging import EFFECTS_DDL
        for ddl in (*MESSAGING_DDL, EFFECTS_DDL):
            await conn.exec_driver_sql(ddl)

    relay = h.relay(bootstrap, reconcile_seconds=1.0)
    async with running(relay.run()):
        # The early consumer reads the first half; then it stops, and the second half is published unread.
        async with running(h.consumer(bootstrap).run()):
            first = await h.write_stream(300, keys=20)
            await h.wait_for_effects(first, timeout=60)
        second = await h.write_stream(300, keys=20, start=first)
        await wait_published(h)
        ids_before = await read_ids(bootstrap, h.topic, expect=first + second)
        assert len(ids_before) == first + second

        # The broker stops and comes back empty, before anyone read the second half.
        private_broker.kill()
        private_broker.start()

        # The relay sees its topic gone and publishes every retained row again, with the same ids, in order.
        ids_after = await read_ids(bootstrap, h.topic, expect=first + second)
        # The same ids and nothing new. (Not necessarily in one sequence: a reader that asks for a topic the
        # embedded broker no longer has makes it create one with several partitions; per-key order holds.)
        assert len(ids_after) == len(ids_before) and set(ids_after) == set(ids_before), \
            "a reader of the topic must see the same ids again, and nothing new"
        summary = await outbox_summary(h.engine)
        assert summary.retained == first + second and summary.unpublished == 0
        assert summary.last_republish is not None and summary.last_republish["rows"] == first + second
        assert summary.last_republish["topic"] == h.topic

        # Both consumers end with every event applied exactly once, one key's events in order.
        async with running(h.consumer(bootstrap).run(), late.consumer(bootstrap, group=f"late-{h.topic}").run()):
            early_rows = await h.wait_for_effects(first + second, timeout=90)
            late_rows = await late.wait_for_effects(first + second, timeout=90)
            await asyncio.sleep(2)  # anything doubled would have arrived by now
            early_rows, late_rows = await h.effects(), await late.effects()
    assert_exactly_once_in_order(early_rows, set(range(first + second)))
    assert_exactly_once_in_order(late_rows, set(range(first + second)))
    await late.engine.dispose()


async def test_a_replay_publishes_the_same_events_again_and_nothing_new(
        private_broker: Broker, new_database: Callable[[str], str]) -> None:
    """``refnet events replay`` marks retained rows unpublished; the relay sends them again, same ids."""
    h = await Harness.create(new_database("replay"))
    bootstrap = private_broker.bootstrap
    async with running(h.relay(bootstrap).run()):
        written = await h.write_stream(100, keys=5)
        await wait_published(h)
        cut = datetime.now(UTC)
        await asyncio.sleep(0.05)
        later = await h.write_stream(50, keys=5, start=written)
        await wait_published(h)
        before = await read_ids(bootstrap, h.topic, expect=written + later)
        async with h.engine.begin() as conn:
            counts = await mark_for_republish(conn, reason="operator replay", topic=h.topic, since=cut)
        assert counts == {h.topic: later}
        await wait_published(h)
        after = await read_ids(bootstrap, h.topic, expect=written + 2 * later)
    assert after == before + before[written:], "the replay must repeat exactly the events written since the cut"


async def test_retention_prunes_history_and_keeps_each_entitys_newest_state(
        new_database: Callable[[str], str]) -> None:
    url = new_database("prune")
    engine = make_engine(url, pool_size=3)
    async with engine.begin() as conn:
        from shared.migration_ops import MESSAGING_DDL
        for ddl in MESSAGING_DDL:
            await conn.exec_driver_sql(ddl)
    sessions = make_sessionmaker(engine)

    def agency(agency_id: str, status: str) -> NewEvent:
        return NewEvent(topic=REGISTRY_EVENTS, type=contract.AGENCY_UPDATED, aggregate_type="Agency",
                        aggregate_id=agency_id, payload={"agency_id": agency_id, "status": status})

    def revoked() -> NewEvent:
        return NewEvent(topic=REGISTRY_EVENTS, type=contract.TOKEN_REVOKED, aggregate_type="Token",
                        aggregate_id="agy_a", payload={"jti": uuid.uuid4().hex, "agency_id": "agy_a"})

    async with unit_of_work(sessions) as session:
        await add_events(session, source="/refnet/test", events=[
            agency("agy_a", "active"), revoked(), agency("agy_a", "suspended"), agency("agy_b", "active"),
            revoked()])
    async with engine.begin() as conn:
        # All published long ago, but the last revocation, published within the retention.
        await conn.execute(text("UPDATE outbox SET published_at = now() - interval '30 days', "
                                "published_partition = 0, published_offset = seq"))
        await conn.execute(text("UPDATE outbox SET published_at = now() WHERE seq = (SELECT max(seq) FROM outbox)"))
    relay = OutboxRelay(service="test-prune", engine=engine, database_url=url, bootstrap="127.0.0.1:1",
                        retention=timedelta(days=14), prune_batch=1)
    assert await relay.prune() == 2  # agy_a's older state and the old revocation
    async with engine.connect() as conn:
        kept = (await conn.execute(text("SELECT state_key, payload->'data'->>'status' AS status, type "
                                        "FROM outbox ORDER BY seq"))).all()
    assert [(k.state_key, k.status) for k in kept] == [
        ("agency:agy_a", "suspended"), ("agency:agy_b", "active"), (None, None)]
    assert kept[-1].type.endswith(contract.TOKEN_REVOKED)
    # Nothing is pruned without a retention (the embedded stack keeps everything).
    keep_all = OutboxRelay(service="test-prune", engine=engine, database_url=url, bootstrap="127.0.0.1:1")
    assert await keep_all.prune() == 0
    await engine.dispose()
