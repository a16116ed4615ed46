"""Deadlines: referrals past due and still requested are flagged once, with one referral.overdue.v1 each,
even with two schedulers at once; one leader across replicas; the work queues filter on the flag."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from services.referral.jobs import DeadlineScheduler
from services.referral.service import Referrals
from shared.db import make_engine, make_sessionmaker
from tests.integration.referral.conftest import Service, body


async def overdue_events(svc: Service) -> dict[str, int]:
    async with svc.referrals.sessions() as session:
        rows = (await session.execute(text(
            "SELECT referral_id, count(*) FROM referral_feed WHERE type = 'org.refnet.referral.overdue.v1' "
            "GROUP BY referral_id"))).all()
    return {r[0]: r[1] for r in rows}


async def test_overdue_fires_exactly_once_per_referral_across_two_schedulers(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    ids: dict[str, str] = {}
    for priority in ("emergency", "urgent", "normal"):
        case_id, _ = svc.intake.add_case(sender)
        ids[priority] = (await svc.refer(sender, body(case_id, recipient, priority=priority))).json()["id"]
    case_id, _ = svc.intake.add_case(sender)
    acknowledged = (await svc.refer(sender, body(case_id, recipient, priority="emergency"))).json()["id"]
    await svc.move(recipient, acknowledged, "received")

    # A second replica: its own engine and use cases on the same database, the same clock.
    engine = make_engine(svc.database_url, pool_size=5)
    try:
        other = Referrals(make_sessionmaker(engine), source="/refnet/referral", clearance=svc.referrals.clearance,
                          clock=svc.clock)
        one = DeadlineScheduler(svc.referrals, svc.app.state.runtime.engine)
        two = DeadlineScheduler(other, engine)

        async def both_tick_many_times() -> None:
            await asyncio.gather(*[s.tick() for _ in range(5) for s in (one, two)])

        await both_tick_many_times()
        assert await overdue_events(svc) == {}

        svc.clock.advance(hours=24)
        await both_tick_many_times()
        assert await overdue_events(svc) == {ids["emergency"]: 1}

        svc.clock.advance(hours=48)
        await both_tick_many_times()
        assert await overdue_events(svc) == {ids["emergency"]: 1, ids["urgent"]: 1}

        svc.clock.advance(days=30)
        await both_tick_many_times()
        await both_tick_many_times()
        assert await overdue_events(svc) == {ids["emergency"]: 1, ids["urgent"]: 1, ids["normal"]: 1}
    finally:
        await engine.dispose()

    # the flag shows in the referral and in both parties' work queues; the acknowledged one never was overdue
    shown = (await svc.client.get(f"/referrals/{ids['emergency']}", headers=svc.headers(sender))).json()
    assert shown["overdue"] is True and shown["overdue_at"] and shown["status"] == "requested"
    for agency, role in ((sender, "sent"), (recipient, "received")):
        late = await svc.client.get("/referrals", params={"role": role, "overdue": "true"},
                                    headers=svc.headers(agency))
        assert {i["id"] for i in late.json()["items"]} == set(ids.values())
        on_time = await svc.client.get("/referrals", params={"role": role, "overdue": "false"},
                                       headers=svc.headers(agency))
        assert [i["id"] for i in on_time.json()["items"]] == [acknowledged]


async def test_one_leader_across_replicas_and_the_standby_takes_over(svc: Service) -> None:
    own = svc.deps.deadlines  # the service's own scheduler runs and leads
    deadline = time.monotonic() + 10
    while not own.is_leader:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    engine_a = make_engine(svc.database_url, pool_size=2)
    engine_b = make_engine(svc.database_url, pool_size=2)
    # The module's own service already leads with the real lock key: these two replicas contend for another.
    key = 424242
    a = DeadlineScheduler(svc.referrals, engine_a, interval_seconds=0.1, lock_key=key)
    b = DeadlineScheduler(svc.referrals, engine_b, interval_seconds=0.1, lock_key=key)
    task_a = asyncio.create_task(a.run())
    task_b = None
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task_b = asyncio.create_task(b.run())
        await asyncio.sleep(0.6)
        assert a.is_leader and not b.is_leader
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        deadline = time.monotonic() + 10
        while not b.is_leader:
            assert time.monotonic() < deadline, "the standby never took over"
            await asyncio.sleep(0.05)
    finally:
        for task in (task_a, task_b):
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in (task_a, task_b) if t is not None], return_exceptions=True)
        await engine_a.dispose()
        await engine_b.dispose()


async def test_the_scheduler_exports_how_many_are_overdue_and_still_unanswered(svc: Service) -> None:
    from prometheus_client import REGISTRY

    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    made = (await svc.refer(sender, body(case_id, recipient, priority="emergency"))).json()
    scheduler = DeadlineScheduler(svc.referrals, svc.app.state.runtime.engine)

    def overdue() -> float | None:
        return REGISTRY.get_sample_value("refnet_referrals_overdue",
                                         {"pathway": made["pathway"], "priority": "emergency"})

    await scheduler.tick()
    before = overdue()  # the database is shared with earlier tests, which left their own overdue referrals
    assert before is not None  # a series even when none is overdue: "none" is not "no scheduler"
    assert REGISTRY.get_sample_value("refnet_referrals_overdue", {"pathway": "resettlement", "priority": "normal"}) \
        is not None
    svc.clock.advance(hours=24)
    await scheduler.tick()
    assert overdue() == before + 1
    await svc.move(recipient, made["id"], "received")
    await scheduler.tick()
    assert overdue() == before  # answered: no longer counted
