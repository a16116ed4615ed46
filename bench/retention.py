"""What the outbox's retention costs, and how long publishing everything again takes (docs/operations.md,
"The broker lost data").

Retention: the rows and bytes (table and indexes, after VACUUM) that ``n`` referrals -- each a case registered
with its consent, then referred -- leave in the four outboxes, scaled to 10,000 referrals; beside the raw size
of the same events' payloads. Replay: every row every outbox retains marked for publishing again (as ``refnet
events replay`` does), timed until every relay has published it and until every consumer has read it again
and dropped it as a duplicate; beside a bare producer sending as many records of the same mean size with
``acks=all`` to the same broker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from bench.common import Row, Section, Settings
from bench.referrals import Referrer, make_cases, wait_until_referrable
from bench.stack import SERVICES, BenchStack
from shared.db import make_engine
from shared.kafka import end_offsets_of, ensure_topics, make_producer
from shared.outbox import mark_for_republish

PER = 10_000


async def _outbox(conn: asyncpg.Connection) -> dict[str, float]:
    await conn.execute("VACUUM outbox")
    row = await conn.fetchrow(
        "SELECT count(*) AS rows, count(*) FILTER (WHERE published_at IS NULL) AS unpublished, "
        "coalesce(sum(octet_length(payload::text)), 0) AS payload_bytes, "
        "pg_total_relation_size('outbox') AS bytes FROM outbox")
    assert row is not None
    return {k: float(row[k]) for k in ("rows", "unpublished", "payload_bytes", "bytes")}


async def _figures(stack: BenchStack) -> dict[str, dict[str, float]]:
    found = {}
    for service in SERVICES:
        conn = await stack.pg(f"refnet_{service}")
        try:
            found[service] = await _outbox(conn)
        finally:
            await conn.close()
    return found


async def _wait(check: Any, timeout: float) -> float:
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"not done after {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def _all_published(stack: BenchStack) -> bool:
    for service in SERVICES:
        conn = await stack.pg(f"refnet_{service}")
        try:
            if await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                return False
        finally:
            await conn.close()
    return True


async def _all_consumed(stack: BenchStack) -> bool:
    """Every consumer of every service has applied (or dropped as a duplicate) up to each topic's end."""
    marks: list[asyncpg.Record] = []
    for service in SERVICES:
        conn = await stack.pg(f"refnet_{service}")
        try:
            marks += await conn.fetch('SELECT topic, partition, "offset" FROM consumer_marks')
        finally:
            await conn.close()
    ends = await end_offsets_of(stack.bootstrap, {m["topic"] for m in marks})
    return all(m["offset"] + 1 >= ends.get(m["topic"], {}).get(m["partition"], 0) for m in marks)


async def _raw_produce(stack: BenchStack, count: int, size: int) -> float:
    topic = "bench.raw-replay"
    await ensure_topics(stack.bootstrap, [topic])
    producer = make_producer(stack.bootstrap)
    await producer.start()
    try:
        value = b"x" * size
        began = time.monotonic()
        for start in range(0, count, 500):  # as the relay does: a batch at a time, every ack awaited
            futures = [await producer.send(topic, value=value, key=str(i).encode())
                       for i in range(start, min(start + 500, count))]
            for future in futures:
                await future
        return time.monotonic() - began
    finally:
        await producer.stop()


async def run(stack: BenchStack, settings: Settings, section: Section) -> None:
    n = 100 if settings.quick else 1_000
    before = await _figures(stack)
    async with httpx.AsyncClient(timeout=60) as http:
        cases = await make_cases(stack, http, n)
        referrer = Referrer(stack, http, cases)
        await wait_until_referrable(referrer)  # that first referral is of case 0: the loop refers the others
        made = 1
        sem = asyncio.Semaphore(16)

        async def refer(worker: int) -> None:
            nonlocal made
            async with sem:
                status, _ = await referrer.create(worker)
                if status == 201:
                    made += 1

        await asyncio.gather(*(refer(w) for w in range(1, n)))
    await _wait(lambda: _all_published(stack), 120)
    after = await _figures(stack)
    rows = sum(after[s]["rows"] - before[s]["rows"] for s in SERVICES)
    size = sum(after[s]["bytes"] - before[s]["bytes"] for s in SERVICES)
    payload = sum(after[s]["payload_bytes"] - before[s]["payload_bytes"] for s in SERVICES)
    scale = PER / made
    section.data["retention"] = {"referrals": made, "rows": rows, "bytes": size, "payload_bytes": payload,
                                 "by_service": {s: after[s]["rows"] - before[s]["rows"] for s in SERVICES}}
    section.rows.append(Row(
        "retention", "outbox rows and size per 10,000 referrals (case, consent, referral)",
        f"{rows * scale:,.0f} rows, {size * scale / 1e6:,.1f} MB",
        raw=f"payloads alone {payload * scale / 1e6:,.1f} MB", ratio=f"{size / payload:.1f}x" if payload else "",
        note=f"measured over {made} referrals; " + ", ".join(
            f"{s} {(after[s]['rows'] - before[s]['rows']) * scale:,.0f}" for s in SERVICES)))

    # Everything every outbox retains, published again.
    retained = sum(after[s]["rows"] for s in SERVICES)
    began = time.monotonic()
    for service in SERVICES:
        engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{stack.pg_port}/refnet_{service}",
                             pool_size=1)
        try:
            async with engine.begin() as conn:
                await mark_for_republish(conn, reason="bench replay")
        finally:
            await engine.dispose()
    published = await _wait(lambda: _all_published(stack), 600)
    published_at = time.monotonic() - began
    consumed = await _wait(lambda: _all_consumed(stack), 600) + published_at
    mean = int(sum(after[s]["payload_bytes"] for s in SERVICES) / max(retained, 1))
    raw = await _raw_produce(stack, int(retained), mean)
    share = rows * scale / retained if retained else 0.0  # 10,000 referrals' rows, as a share of all retained
    section.data["replay"] = {"rows": retained, "published_s": published, "consumed_s": consumed,
                              "raw_produce_s": raw, "mean_payload": mean}
    section.rows.append(Row(
        "retention", "publish everything again (refnet events replay)",
        f"{retained:,.0f} events: published in {published:.1f} s, read again by every consumer in {consumed:.1f} s",
        raw=f"bare producer {raw:.1f} s", ratio=f"{published / raw:.1f}x" if raw else "",
        note=f"10,000 referrals' events: about {published * share:.0f} s to publish, "
             f"{consumed * share:.0f} s until read again"))
