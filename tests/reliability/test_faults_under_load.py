"""Faults under load: nothing lost, nothing duplicated, every access logged once, while parts of RefNet fail.

While concurrent case systems move referrals through their lifecycle (tests/reliability/load.py), this test
kills each service with SIGKILL and starts it again, freezes the broker (SIGSTOP) and restarts PostgreSQL.
Then it checks, from the public APIs, the delivery topics and the audit log only:

- every referral is in a legal state, the one the clients were last told, with exactly the history of moves
  they were acknowledged, and no referral exists twice (the Idempotency-Key held across lost answers);
- every referral event reached both parties' delivery topics and the referral topic: after dedupe on ce_id,
  each topic holds exactly the referral's moves, in order; nothing went to a dead-letter topic;
- every read of a case by its recipient is in the audit log once (as many granted and refused reads as the
  clients saw, within those whose answer was lost), no event is logged twice, the log verifies and its
  checkpoint's signature and root (recomputed here with pymerkle) hold;
- no request was answered 5xx (or left unanswered) without the client's retry then succeeding;
- ``/readyz`` answers 503 while PostgreSQL is away and 200 after, from the same process; while the broker is
  away it stays 200 (the outbox rides that out) and says ``broker: false``.

The stack is this test's own (deploy/launcher/stack.py driven in-process, as `refnet up` drives it), so it can
kill one service and start just that one again (``Stack.start_service``) and restart PostgreSQL under the
services' feet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from aiokafka import AIOKafkaConsumer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deploy.launcher.infra import free_port
from deploy.launcher.stack import Stack, StackConfig
from services.referral import domain
from shared.kafka import dlq_topic
from shared.settings import SERVICE_NAMES
from shared.topics import ALL_TOPICS, REFERRAL_EVENTS
from tests.reliability.load import ROUTES, CaseSystems, Ledger, ReferralRecord, Run, plan, topics_of
from tests.reliability.report import Report, scale

REFERRALS = scale(2000, 150)
WORKERS = scale(32, 16)
SERVICE_DOWN_SECONDS = scale(3, 1)
BROKER_PAUSE_SECONDS = scale(20, 5)
DATABASE_DOWN_SECONDS = scale(5, 2)
SETTLE_SECONDS = 90.0


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """PostgreSQL, the broker and the four services, migrated and seeded, as `refnet up` starts them.

    Its home is not under pytest's temporary directory: every pytest session that starts (another one, on a
    shared machine) closes ``/tmp/pytest-of-<user>`` to others, and PostgreSQL, which runs as its own user when
    we are root, would lose its data directory in the middle of the run. Kept when the test fails, for its logs.
    """
    home = Path(tempfile.mkdtemp(prefix="refnet-faults-")) / ".refnet"
    config = StackConfig(home=home, pg_port=free_port(), broker_port=free_port(),
                         service_ports={name: free_port() for name in SERVICE_NAMES})
    stack = Stack(config, say=lambda _: None)
    failed_before = request.session.testsfailed
    try:
        stack.start_infrastructure()
        stack.migrate()
        stack.prepare_services()
        stack.start_services()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(home.parent, ignore_errors=True)
        else:
            print(f"the stack's logs: {home / 'logs'}")


# --- faults ---------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """The faults, in order, each started when the load reaches its share of the referrals."""

    stack: Stack
    http: httpx.AsyncClient
    injected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    readiness_polls: int = 0

    def plan(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        kills: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (f"kill -9 {name}", functools.partial(self.kill_and_restart, name)) for name in SERVICE_NAMES]
        return [*kills, (f"broker SIGSTOP {BROKER_PAUSE_SECONDS} s", self.pause_broker),
                ("PostgreSQL restart", self.restart_postgres)]

    async def ready(self, service: str) -> int | None:
        self.readiness_polls += 1
        try:
            response = await self.http.get(f"{self.stack.url(service)}/readyz", timeout=10)
        except httpx.TransportError:
            return None
        return response.status_code

    async def until_ready(self, services: tuple[str, ...] = SERVICE_NAMES, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        pending = set(services)
        while pending and time.monotonic() < deadline:
            answers = await asyncio.gather(*(self.ready(s) for s in sorted(pending)))
            pending -= {s for s, status in zip(sorted(pending), answers, strict=True) if status == 200}
            if pending:
                await asyncio.sleep(0.3)
        if pending:
            self.problems.append(f"not ready again within {seconds:.0f} s: {', '.join(sorted(pending))}")

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.stack.services.items() if proc.poll() is None}

    async def kill_and_restart(self, service: str) -> None:
        proc = self.stack.services[service]
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        killed = time.monotonic()
        await asyncio.sleep(SERVICE_DOWN_SECONDS)
        await asyncio.to_thread(self.stack.start_service, service)
        await self.until_ready((service,))
        self.injected.append(f"kill -9 {service}, started again after {SERVICE_DOWN_SECONDS} s, ready "
                             f"{time.monotonic() - killed:.0f} s after the kill")

    async def outage(self, what: str, cause: Callable[[], None], cure: Callable[[], None], seconds: float,
                     *, unready: bool = True) -> None:
        """A dependency away for ``seconds``: every service says 503 meanwhile (or, with ``unready`` false, never
        says it), then 200, from the same process."""
        before = self.pids()
        await asyncio.to_thread(cause)
        started = time.monotonic()
        not_ready: set[str] = set()
        while time.monotonic() - started < seconds:
            answers = await asyncio.gather(*(self.ready(s) for s in SERVICE_NAMES))
            not_ready |= {s for s, status in zip(SERVICE_NAMES, answers, strict=True) if status == 503}
            await asyncio.sleep(0.5)
        await asyncio.to_thread(cure)
        cured = time.monotonic()
        if unready and not_ready != set(SERVICE_NAMES):
            self.problems.append(f"{what}: /readyz never said 503 on {sorted(set(SERVICE_NAMES) - not_ready)}")
        if not unready and not_ready:
            self.problems.append(f"{what}: /readyz said 503 on {sorted(not_ready)}, which should have kept serving")
        await self.until_ready()
        self.injected.append(f"{what} for {seconds} s, every service ready {time.monotonic() - cured:.0f} s later")
        if self.pids() != before:
            self.problems.append(f"{what}: a service process was restarted or died ({before} -> {self.pids()})")

    async def pause_broker(self) -> None:
        broker = self.stack.broker
        assert broker is not None
        # Ready throughout: readiness needs the database and caught-up read models, not the broker.
        await self.outage("broker frozen (SIGSTOP, then SIGCONT)", broker.pause, broker.resume,
                          BROKER_PAUSE_SECONDS, unready=False)

    async def restart_postgres(self) -> None:
        postgres = self.stack.postgres
        assert postgres is not None
        await self.outage("PostgreSQL stopped (fast shutdown) and started again", postgres.stop, postgres.start,
                          DATABASE_DOWN_SECONDS)


class Schedule:
    """Interleaves faults with the load: the fault k starts once the load created its share of referrals, and
    the load does not run past the next share before that fault started -- so every fault meets load, however
    fast or slow this machine is."""

    def __init__(self, total: int, faults: int) -> None:
        self.thresholds = [total * (k + 1) // (faults + 1) for k in range(faults)]
        self.admitted = 0
        self.started = 0
        self.changed = asyncio.Condition()

    async def admit(self, index: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.started >= sum(t <= index for t in self.thresholds))
            self.admitted += 1
            self.changed.notify_all()

    def _reached(self, threshold: int) -> bool:
        return self.admitted >= threshold

    async def run(self, faults: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
        for threshold, (_, inject) in zip(self.thresholds, faults, strict=True):
            async with self.changed:
                await self.changed.wait_for(functools.partial(self._reached, threshold))
                self.started += 1
                self.changed.notify_all()
            await inject()


# --- what the network holds afterwards --------------------------------------------------------------------


@dataclass
class TopicRecord:
    topic: str
    ce_id: str
    ce_type: str
    subject: str
    error: str = ""  # refnet-error, on a dead-letter topic


async def read_topics(bootstrap: str, topics: list[str], done: Callable[[list[TopicRecord]], bool],
                      seconds: float) -> list[TopicRecord]:
    """Every record of ``topics`` from the beginning, read until ``done`` holds or ``seconds`` pass."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[TopicRecord] = []
    try:
        deadline = time.monotonic() + seconds
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for partition_records in batch.values():
                for r in partition_records:
                    headers = {k: bytes(v).decode() for k, v in r.headers}
                    records.append(TopicRecord(r.topic, headers.get("ce_id", ""), headers.get("ce_type", ""),
                                               headers.get("ce_subject", ""), headers.get("refnet-error", "")))
            if batch:
                quiet_since = time.monotonic()
            # Done, and nothing more arriving for a moment (a redelivered copy may trail the original).
            elif done(records) and time.monotonic() - quiet_since > 2:
                break
    finally:
        await consumer.stop()
    return records


def event_type(state: str) -> str:
    return f"org.refnet.referral.{state}.v1"


def topic_sequences(records: list[TopicRecord]) -> tuple[dict[tuple[str, str], list[str]], int]:
    """(topic, referral id) -> event types after dedupe on ce_id, in topic order; and the duplicates dropped."""
    seen: set[tuple[str, str]] = set()
    sequences: dict[tuple[str, str], list[str]] = defaultdict(list)
    duplicates = 0
    for r in records:
        if (r.topic, r.ce_id) in seen:
            duplicates += 1
            continue
        seen.add((r.topic, r.ce_id))
        sequences[(r.topic, r.subject)].append(r.ce_type)
    return sequences, duplicates


def expected_on_topics(record: ReferralRecord) -> dict[str, list[str]]:
    types = [event_type(s) for s in record.acknowledged]
    return {f"refnet.delivery.{record.sender}": types, f"refnet.delivery.{record.recipient}": types,
            REFERRAL_EVENTS: types}


class AuditLog:
    """The audit log as the oversight body reads it, page by page, fetching only what is new each time."""

    def __init__(self, systems: CaseSystems) -> None:
        self.systems = systems
        self.entries: list[dict[str, Any]] = []

    async def refresh(self) -> list[dict[str, Any]]:
        while True:
            cursor = f"&cursor={self.entries[-1]['index']}" if self.entries else ""
            outcome = await self.systems.call("oversight", "GET", "audit", f"/audit/entries?limit=500{cursor}",
                                              done=lambda r: r.status_code == 200, what="read the audit log")
            assert outcome.response.status_code == 200, outcome.response.status_code
            page = outcome.response.json()
            self.entries += page["items"]
            if page["next_cursor"] is None:
                return self.entries


def merkle_root(entries: list[dict[str, Any]]) -> bytes:
    """RFC 9162 root of the entries' leaves (RFC 8785 JSON), computed by pymerkle, not by the audit service."""
    import pymerkle

    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for entry in entries:
        tree.append_entry(rfc8785.dumps(entry))
    get_root = getattr(tree, "get_root", None) or tree.get_state
    return bytes(get_root(len(entries)))


# --- the test ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(scale(1800, 420))
async def test_nothing_lost_or_duplicated_while_services_broker_and_database_fail(
        stack: Stack, report: Report) -> None:
    started = time.monotonic()
    systems = CaseSystems(stack.config.home, {name: stack.url(name) for name in SERVICE_NAMES},
                          connections=WORKERS * 2)
    ledger = Ledger()
    problems: list[str] = []
    async with httpx.AsyncClient() as http:
        faults = Faults(stack, http)
        injections = faults.plan()
        schedule = Schedule(REFERRALS, len(injections))
        run = Run(systems, ledger, run_id=uuid.uuid4().hex[:8])
        await warm_up(systems, ledger)
        load_started = time.monotonic()
        progress = asyncio.create_task(show_progress(run, schedule, faults, systems))
        try:
            await asyncio.gather(run.drive(REFERRALS, WORKERS, schedule.admit), schedule.run(injections))
        finally:
            progress.cancel()
        load_seconds = time.monotonic() - load_started
        problems += faults.problems
        # The load is over: everything committed must now reach the topics and the audit log.
        try:
            figures = await check_network(stack, systems, ledger, problems)
        finally:
            await systems.aclose()

    tally = systems.tally
    problems += [f"gave up: {what}" for what in tally.given_up]
    problems += [f"unexpected answer: {what}" for what in tally.unexpected]
    if tally.answers_500:
        # An outage is answered 503 with Retry-After (shared/errors.py); a 500 is a bug, even if a retry passed.
        problems.append(f"{tally.answers_500} requests answered 500; see the services' logs (unhandled_error)")
    if tally.retried_operations != tally.retried_to_success:
        problems.append(f"{tally.retried_operations - tally.retried_to_success} operations met a 5xx or no answer "
                        "and did not then succeed")
    report.add(
        "Faults under load",
        injected=f"{REFERRALS} referrals from {WORKERS} concurrent clients; "
                 + "; ".join(faults.injected),
        checked="referral states and histories against what clients were acknowledged; no referral or case "
                "twice; each move once, in order, on both parties' delivery topics, the referral topic (dedupe "
                "on ce_id) and both parties' pull feeds; no dead letters; recipients' case reads in the audit "
                "log once; no event logged twice; /audit/verify; checkpoint signature and root (pymerkle); no "
                "500; every 5xx retried to success; /readyz 503 while PostgreSQL is away (200 while the broker is), "
                "200 after, same pid",
        figures={
            "referrals": len(ledger.referrals), "requests": tally.requests, **figures,
            "faults injected": len(faults.injected), "readyz polls": faults.readiness_polls,
            "5xx answers": tally.server_errors, "of them 500": tally.answers_500,
            "unanswered requests": tally.no_answer,
            "operations retried": tally.retried_operations, "retried to success": tally.retried_to_success,
            "referrals replayed by Idempotency-Key": ledger.replayed_creates,
            "moves found applied after a lost answer": ledger.transitions_found_applied,
            "registrations replayed by Idempotency-Key": ledger.replayed_registrations,
            "load seconds": round(load_seconds, 1), "total seconds": round(time.monotonic() - started, 1),
        },
        failures=len(problems),
    )
    assert not problems, "\n".join(problems[:50])
    assert len(faults.injected) == len(injections)


async def show_progress(run: Run, schedule: Schedule, faults: Faults, systems: CaseSystems) -> None:
    """A line every few seconds (pytest shows it when the test fails): where the load and the faults are."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(5)
        tally = systems.tally
        print(f"{time.monotonic() - started:6.0f} s: {run.finished}/{run.started} referrals done/started, "
              f"{schedule.started} faults started, {tally.requests} requests, {tally.server_errors} 5xx, "
              f"{tally.no_answer} unanswered; {faults.injected[-1:]}", flush=True)


async def warm_up(systems: CaseSystems, ledger: Ledger) -> None:
    """Right after start, referral's read model of the registry may still be filling ("recipient not known"):
    wait until one referral of each route goes through, so that the load measures faults, not start-up.
    These referrals are checked with the others."""
    for index in range(len(ROUTES)):
        probe = Run(systems, ledger, run_id=f"warm-{uuid.uuid4().hex[:6]}")
        deadline = time.monotonic() + 60
        while True:
            before = len(systems.tally.unexpected)
            await probe.referral(plan(index))
            if len(systems.tally.unexpected) == before:
                break
            assert time.monotonic() < deadline, f"no referral could be made within 60 s: {systems.tally.unexpected}"
            del systems.tally.unexpected[before:]
            await asyncio.sleep(1)


async def check_network(stack: Stack, systems: CaseSystems, ledger: Ledger, problems: list[str]) -> dict[str, Any]:
    records = [r for r in ledger.referrals if r.referral_id]
    by_id = {r.referral_id: r for r in records}

    # 1. Referral states, from the senders' API.
    semaphore = asyncio.Semaphore(16)

    async def fetch(record: ReferralRecord) -> dict[str, Any]:
        async with semaphore:
            outcome = await systems.call(record.plan.route.sender, "GET", "referral",
                                         f"/referrals/{record.referral_id}", done=lambda r: r.status_code == 200,
                                         what="read referral")
            assert outcome.response.status_code == 200, outcome.response.status_code
            return dict(outcome.response.json())

    views = await asyncio.gather(*(fetch(r) for r in records))
    for record, view in zip(records, views, strict=True):
        problems += legal_history(record, view)
    for sender in sorted({r.plan.route.sender for r in ledger.referrals}):
        ids = await sent_referrals(systems, sender)
        ours = {r.referral_id for r in records if r.plan.route.sender == sender}
        if ids - ours:
            problems.append(f"{sender}: {len(ids - ours)} referrals the clients were never told of (a create "
                            "applied twice?)")

    # Cases: a registration retried after a lost answer may have registered the person twice.
    extra_cases = 0
    for sender in sorted({r.plan.route.sender for r in ledger.referrals}):
        ours = {r.case_id for r in ledger.referrals if r.plan.route.sender == sender}
        extra_cases += len(await own_cases(systems, sender) - ours)
    if extra_cases:
        problems.append(f"{extra_cases} cases registered that the clients were never told of (a registration "
                        "applied twice after a lost answer)")

    # The pull feed: each party's feed holds every move of its referrals once, in order (dedupe on id).
    for name in sorted({n for r in records for n in (r.plan.route.sender, r.plan.route.recipient)}):
        agency = systems.agency(name)
        feed = await pull_feed(systems, name)
        for record in records:
            if agency in (record.sender, record.recipient) and feed.get(record.referral_id, []) != [
                    event_type(s) for s in record.acknowledged]:
                problems.append(f"pull feed of {name}: referral {record.referral_id} has "
                                f"{feed.get(record.referral_id, [])}, expected {record.acknowledged}")

    # 2. Topics: each party's delivery topic and the referral topic hold every move once, in order.
    topics = [*sorted(topics_of(records)), REFERRAL_EVENTS]
    expected = {(topic, r.referral_id): types for r in records for topic, types in expected_on_topics(r).items()}

    def complete(got: list[TopicRecord]) -> bool:
        sequences, _ = topic_sequences(got)
        return all(len(sequences.get(key, ())) >= len(types) for key, types in expected.items())

    got = await read_topics(stack.bootstrap, topics, complete, SETTLE_SECONDS)
    print(f"topics read: {len(got)} records", flush=True)
    sequences, duplicates = topic_sequences(got)
    wrong = [key for key, types in expected.items() if sequences.get(key, []) != types]
    for topic, referral_id in wrong[:20]:
        problems.append(f"{topic}: referral {referral_id} has {sequences.get((topic, referral_id), [])}, "
                        f"expected {expected[(topic, referral_id)]}")
    if wrong:
        problems.append(f"{len(wrong)} (topic, referral) sequences differ from the acknowledged moves")
    dead = await read_topics(stack.bootstrap, [dlq_topic(t) for t in ALL_TOPICS], lambda _: True, 5)
    if dead:
        problems.append(f"{len(dead)} messages in dead-letter topics: "
                        f"{Counter((r.topic, r.ce_type, r.error) for r in dead).most_common(5)}")

    # 3. The audit log: every event once, every read once, a log that verifies.
    audit = AuditLog(systems)
    referral_event_ids = {r.ce_id for r in got if r.topic == REFERRAL_EVENTS and r.subject in by_id}
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        entries = await audit.refresh()
        logged = {e["event_id"] for e in entries}
        missing = referral_event_ids - logged
        reads_short = read_shortfall(ledger, entries)
        if (not missing and not reads_short) or time.monotonic() > deadline:
            break
        print(f"audit log: {len(entries)} entries, {len(missing)} referral events and {len(reads_short)} cases' "
              f"reads not in it yet", flush=True)
        await asyncio.sleep(2)
    if missing:
        problems.append(f"{len(missing)} referral events never reached the audit log")
    problems += reads_short
    problems += read_excess(ledger, entries)
    twice = [k for k, n in Counter((e["source_service"], e["event_id"]) for e in entries).items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} events logged more than once, e.g. {twice[:3]}")
    if [e["index"] for e in entries] != list(range(len(entries))):
        problems.append("the audit log's indexes are not 0..n-1")
    problems += await check_log_integrity(systems, audit)

    reads = ledger.reads.values()
    return {
        "events on topics (distinct)": len({(r.topic, r.ce_id) for r in got}),
        "redelivered copies dropped by dedupe": duplicates,
        "case reads granted": sum(r.granted for r in reads), "case reads refused (read model behind)":
            sum(r.denied for r in reads), "case reads unanswered": sum(r.unknown for r in reads),
        "audit entries": len(audit.entries),
    }


def legal_history(record: ReferralRecord, view: dict[str, Any]) -> list[str]:
    """The referral holds exactly the moves its clients were acknowledged, each one the lifecycle allows."""
    rid = record.referral_id
    moves = [h["to"] for h in view["history"]]
    found: list[str] = []
    if moves != record.acknowledged:
        found.append(f"referral {rid}: history {moves}, clients were acknowledged {record.acknowledged}")
    if view["status"] != record.acknowledged[-1]:
        found.append(f"referral {rid}: status {view['status']}, clients were told {record.acknowledged[-1]}")
    for hop in view["history"][1:]:
        try:
            domain.decide_transition(domain.Status(hop["from"]), hop["to"], domain.Party(hop["by"]),
                                     hop["reason_code"])
        except domain.TransitionRefused as refused:
            found.append(f"referral {rid}: illegal move in history: {refused}")
    if view["history"][0]["to"] != "requested" or view["history"][0]["from"] is not None:
        found.append(f"referral {rid}: history does not start at requested")
    return found


async def listed_ids(systems: CaseSystems, agency: str, service: str, path: str, what: str) -> set[str]:
    """Every id a paged list answers (`items`, `next_cursor`), page after page."""
    ids: set[str] = set()
    cursor = ""
    while True:
        outcome = await systems.call(agency, "GET", service, f"{path}&limit=500{cursor}" if "?" in path
                                     else f"{path}?limit=500{cursor}", done=lambda r: r.status_code == 200,
                                     what=what)
        page = outcome.response.json()
        ids |= {item["id"] for item in page["items"]}
        if page["next_cursor"] is None:
            return ids
        cursor = f"&cursor={page['next_cursor']}"


async def sent_referrals(systems: CaseSystems, sender: str) -> set[str]:
    return await listed_ids(systems, sender, "referral", "/referrals?role=sent", "work queue")


async def own_cases(systems: CaseSystems, owner: str) -> set[str]:
    return await listed_ids(systems, owner, "intake", "/cases", "own cases")


async def pull_feed(systems: CaseSystems, agency: str) -> dict[str, list[str]]:
    """The agency's pull feed from the start: referral id -> event types, after dedupe on the event id."""
    seen: set[str] = set()
    types: dict[str, list[str]] = defaultdict(list)
    after = "0"
    while True:
        outcome = await systems.call(agency, "GET", "referral", f"/events?after={after}&limit=500",
                                     done=lambda r: r.status_code == 200, what="pull feed")
        page = outcome.response.json()
        for item in page["items"]:
            if item["id"] not in seen:
                seen.add(item["id"])
                types[item["subject"]].append(item["type"])
        if not page["items"]:
            return types
        after = page["next_cursor"]


def _case_reads(entries: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for e in entries:
        if e["action"] == "case.read" and e["case_id"]:
            counts[(e["case_id"], e["agency"], e["outcome"])] += 1
    return counts


def read_shortfall(ledger: Ledger, entries: list[dict[str, Any]]) -> list[str]:
    """Reads the clients saw answered that the log does not (yet) hold."""
    counts = _case_reads(entries)
    found = []
    for record in ledger.referrals:
        reads = ledger.reads.get(record.case_id)
        if reads is None:
            continue
        granted = counts[(record.case_id, record.recipient, "success")]
        denied = counts[(record.case_id, record.recipient, "denied")]
        if granted < reads.granted or denied < reads.denied:
            found.append(f"case {record.case_id}: the log holds {granted} granted and {denied} refused reads by "
                         f"the recipient; the client saw {reads.granted} and {reads.denied}")
    return found


def read_excess(ledger: Ledger, entries: list[dict[str, Any]]) -> list[str]:
    """Reads in the log beyond those the clients made (each unanswered attempt may be one)."""
    counts = _case_reads(entries)
    found = []
    for record in ledger.referrals:
        reads = ledger.reads.get(record.case_id)
        if reads is None:
            continue
        logged = sum(counts[(record.case_id, record.recipient, o)] for o in ("success", "denied", "error"))
        if logged > reads.granted + reads.denied + reads.unknown:
            found.append(f"case {record.case_id}: {logged} reads by the recipient in the log, the client made "
                         f"{reads.granted + reads.denied + reads.unknown}")
    return found


async def check_log_integrity(systems: CaseSystems, audit: AuditLog) -> list[str]:
    found: list[str] = []

    async def get(path: str) -> dict[str, Any]:
        outcome = await systems.call("oversight", "GET", "audit", path, done=lambda r: r.status_code == 200)
        assert outcome.response.status_code == 200, (path, outcome.response.status_code)
        return dict(outcome.response.json())

    # The checkpoint first: the log may still grow (a late access record), so a verification asked for afterwards
    # covers at least what this checkpoint signed, while one asked for before may fall a checkpoint short.
    checkpoint = await get("/audit/checkpoint")
    verify = await get("/audit/verify")
    if not verify.get("ok"):
        found.append(f"/audit/verify: {verify}")
    key = await get("/audit/public-key")
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])).verify(
            base64.b64decode(checkpoint["signature"]), checkpoint["body"].encode())
    except InvalidSignature:
        found.append("the checkpoint's signature does not verify with /audit/public-key")
    size = int(checkpoint["tree_size"])
    entries = await audit.refresh()
    if size > len(entries):
        found.append(f"checkpoint of {size} entries, the log lists {len(entries)}")
        return found
    root = merkle_root(entries[:size])
    if root.hex() != checkpoint["root_hash"]:
        found.append("the checkpoint's root is not the root of the listed entries")
    if checkpoint["body"] != f"{checkpoint['origin']}\n{size}\n{base64.b64encode(root).decode()}\n":
        found.append("the checkpoint body does not name that root and size")
    with contextlib.suppress(KeyError):
        if int(verify["tree_size"]) < size:
            found.append(f"/audit/verify checked {verify['tree_size']} entries, fewer than the checkpoint's {size}")
    return found

