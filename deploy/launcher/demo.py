"""``refnet demo``: one referral along the SOP's main pathway (IOM -> UNHCR), against the running stack,
narrated step by step -- so a newcomer sees the network work in one command after ``make run``.

Every step goes through the public APIs and topics, with the demo agencies' credentials, by ``refnet_client``
(the client RefNet publishes for integrators; the same calls README.md's walkthrough makes with curl). The
person is fictional and says so.

Acknowledgement: if a case system for UNHCR is running (``examples/case_system/``), it hears of the referral
and acknowledges it (``received``); the demo waits ``--ack-timeout`` seconds for that and otherwise
acknowledges as UNHCR itself. ``--no-complete`` stops once the referral is delivered, leaving it to whoever
acknowledges it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.table import Table

from deploy.launcher.stack import StackState, probe
from refnet_client import (
    Access,
    AsyncRefNet,
    Case,
    CaseAccess,
    Checkpoint,
    Credentials,
    Endpoints,
    Referral,
    RefNetError,
)
from refnet_client.auth import LOCAL_PORTS
from refnet_client.models import DataCategory
from services.audit.domain import leaf_bytes, parse_checkpoint_body
from services.audit.merkle import hash_leaf, verify_inclusion
from services.audit.signing import verify_signature
from services.intake.domain import CATEGORY_FIELDS
from shared import contract
from shared.auth import DEFAULT_ALGORITHMS
from shared.envelope import full_type
from shared.kafka import client_options
from shared.times import utc_text
from shared.topics import delivery_topic

T = TypeVar("T")

REQUESTED = full_type(contract.referral_state_type("requested"))
IOM_USER = "demo.iom.caseworker"
UNHCR_USER = "demo.unhcr.caseworker"
CHECKLIST = ("purpose_explained", "use_explained", "research_use_explained", "access_right_explained",
             "retention_explained", "withdrawal_explained")
SHARED_CATEGORIES: list[DataCategory] = ["identity", "demographics", "protection_needs"]

#: A made-up adult: reserved fictional phone number and domain, and a name that says what it is.
FICTIONAL_PERSON = {
    "given_name": "Fictional", "family_name": "Demo-Person", "birth_date": "1996-05-17", "gender": "feminine",
    "citizenship": "ER", "languages": ["ti", "ar"], "phone": "+15555550123",
    "email": "fictional.person@example.org", "documents": ["none"],
}
SCREENING = {
    "trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "LY",
    "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage", "confiscated_documents"],
    "recruiter_relation": "other", "migration_status": "asylum_seeker", "fear_of_return": True,
    "needs": ["shelter", "protection.rsd"], "risk_level": "high",
    "notes": "Fictional record made by `refnet demo`; not a real person.",
}


class DemoFailed(Exception):
    """A step did not do what the pathway needs; the message says why (never personal data)."""


@dataclass
class Agency:
    """A demo agency as the demo acts for it: its RefNet client (its credentials file) and its token's claims."""

    name: str
    client: AsyncRefNet
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.client.agency_id)


async def until_answered(call: Callable[[], Awaitable[T]], statuses: Collection[int], seconds: float,
                         every: float = 0.25) -> T:
    """Parts of the network learn of each other by events (seconds): ask again while RefNet answers with one
    of ``statuses``; after ``seconds`` its refusal stands."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except RefNetError as refused:
            if refused.status not in statuses or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(every)


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 20,
                     every: float = 0.25) -> T:
    """Parts of the network learn of each other by events (seconds): poll until ``ok``, return the last."""
    deadline = time.monotonic() + seconds
    value = await probe()
    while not ok(value) and time.monotonic() < deadline:
        await asyncio.sleep(every)
        value = await probe()
    return value


class DeliveryWatch:
    """Reads an agency's delivery topic from where it ends now, as its case system would see new events.

    No consumer group: the demo must not take partitions from a case system's group.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        # Metadata refreshed every second: the topic appears with the agency's first referral, maybe just now.
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         metadata_max_age_ms=1000, **client_options())
        self.start_offsets: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> DeliveryWatch:
        try:
            await asyncio.wait_for(self.consumer.start(), 20)
            partitions = self._partitions()
            if partitions:
                self.start_offsets = await asyncio.wait_for(self.consumer.end_offsets(partitions), 20)
        except (KafkaError, TimeoutError) as exc:
            await self.consumer.stop()
            raise DemoFailed(f"the broker at {self.bootstrap} does not answer ({type(exc).__name__})") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.consumer.partitions_for_topic(self.topic) or ())]

    async def find(self, key: str, event_type: str, seconds: float) -> Any:
        """The first record with this key and CloudEvents type, or None after ``seconds``."""
        deadline = time.monotonic() + seconds
        assigned: list[TopicPartition] = []
        while time.monotonic() < deadline:
            partitions = self._partitions()
            if not partitions:  # the topic appears with the agency's first referral; getmany would block
                await asyncio.sleep(0.5)
                continue
            if partitions != assigned:
                assigned = partitions
                self.consumer.assign(assigned)
                for tp in assigned:  # a partition unknown at the start: read it from its beginning
                    self.consumer.seek(tp, self.start_offsets.get(tp, 0))
            batch = await self.consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                headers = {name: value.decode() for name, value in record.headers}
                if record.key == key.encode() and headers.get("ce_type") == event_type:
                    return record
        return None


class Demo:
    def __init__(self, console: Console, state: StackState, home: Path, *, ack_timeout: float,
                 complete: bool) -> None:
        self.console = console
        self.state = state
        self.home = home
        self.ack_timeout = ack_timeout
        self.complete = complete
        self.referral = state.services["referral"]
        self.endpoints = Endpoints(**{name: url for name, url in state.services.items() if name in LOCAL_PORTS})
        self.clients: list[AsyncRefNet] = []

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    # -- narration ---------------------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str) -> Iterator[list[str | RenderableType]]:
        """One line per step: ✓ and what it showed, or ✗ and why. The body appends details to show."""
        shown: list[str | RenderableType] = []
        try:
            yield shown
        except (DemoFailed, RefNetError) as exc:  # RefNetError: RefNet refused, its problem in a line
            self.console.print(f"[red]✗[/red] {title}: {exc}")
            raise DemoFailed(f"stopped at: {title}") from exc
        except httpx.HTTPError as exc:  # a service went away mid-demo
            self.console.print(f"[red]✗[/red] {title}: {type(exc).__name__} {exc}")
            raise DemoFailed(f"stopped at: {title}") from exc
        notes = [s for s in shown if isinstance(s, str)]
        self.console.print(f"[green]✓[/green] {title}" + (f"  [dim]{'; '.join(notes)}[/dim]" if notes else ""))
        for renderable in shown:
            if not isinstance(renderable, str):
                self.console.print(renderable)

    def section(self, title: str) -> None:
        self.console.rule(f"[bold]{title}[/bold]", align="left")

    # -- the pathway -------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.console.print(Panel(
            "One referral along the SOP's main pathway: IOM identifies a person who fears return, records her "
            "consent, and refers her to UNHCR for protection; UNHCR's case system hears of it, reads only what is "
            "shared, and works the referral to completion; an auditor checks who saw what.\n"
            "[dim]The person is fictional. Every step is a public API call made with a demo agency's "
            "credentials.[/dim]", title="refnet demo"))
        self.check_stack()
        iom, unhcr = await self.tokens()

        self.section("1. IOM registers the case and records consent")
        case_id = await self.register_case(iom)
        await self.record_consent(iom, unhcr, case_id)
        await self.recipient_cannot_see_yet(unhcr, case_id)

        self.section("2. IOM refers her to UNHCR")
        async with DeliveryWatch(self.state.broker, delivery_topic(unhcr.id)) as watch:
            referral_id = await self.refer(iom, unhcr, case_id)
            await self.observe_delivery(watch, referral_id)
        if not self.complete:
            self.console.print(Panel(
                f"Referral {referral_id} is delivered; the demo leaves the rest to UNHCR. A case system for UNHCR "
                "(examples/case_system/) acknowledges it; by hand, with UNHCR's token (`refnet token --as unhcr`): "
                f"POST {self.referral}/referrals/{referral_id}/transitions {{\"to\": \"received\"}}",
                title="stopped before UNHCR acts (--no-complete)"))
            return

        self.section("3. UNHCR acknowledges, reads what is shared, and works the referral")
        await self.acknowledgement(unhcr, referral_id)
        await self.read_minimised_case(iom, unhcr, case_id)
        for to, title in (("accepted", "UNHCR accepts the referral"),
                          ("in_progress", "UNHCR starts work (in_progress)"),
                          ("completed", "UNHCR completes the referral")):
            with self.step(title) as shown:
                moved = await unhcr.client.transition(referral_id, to)
                shown.append(f"status {moved.status}")
        await self.sender_queue(iom, referral_id)

        self.section("4. The auditor checks who saw the case")
        oversight = await self.agency_token("oversight")
        read_index = await self.access_log(oversight, case_id, unhcr)
        await self.verify_inclusion(oversight, case_id, read_index)

        self.console.print(Panel(
            f"[green]The main pathway worked.[/green] Case {case_id}, referral {referral_id}: requested, received, "
            "accepted, in_progress, completed. UNHCR saw only the shared categories, and the audit log proves who "
            "read the case. The same calls with curl: README.md, 'Walkthrough'.", title="done"))
        self.point_at_console()

    def point_at_console(self) -> None:
        """Where to do the same in a browser: the console, and the demo people to sign in as (their secrets stay
        in their files)."""
        url = self.state.services.get("console")
        people = self.home / "credentials" / "people"
        if not url or not people.is_dir():
            return
        table = Table(title=f"The same in a browser: the console at {url}")
        for column in ("sign in as (login)", "agency", "role"):
            table.add_column(column)
        for path in sorted(people.glob("*.json")):
            try:
                person = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(person, dict):
                table.add_row(str(person.get("login")), str(person.get("agency")),
                              ", ".join(str(r) for r in person.get("roles") or []))
        self.console.print(table)
        self.console.print(f"  each one's password and TOTP secret (for an authenticator app): {people}/<login>.json;"
                           " the current code without one: refnet staff code <login>")

    def check_stack(self) -> None:
        with self.step("The stack is running") as shown:
            states = {name: probe(url) for name, url in self.state.services.items()}
            down = [f"{name} is {state}" for name, state in states.items() if state != "ready"]
            if down:
                raise DemoFailed(", ".join(down) + " (see `refnet status`)")
            shown.append(", ".join(f"{name} {url}" for name, url in self.state.services.items()))

    async def agency_token(self, name: str, acting_user: str | None = None) -> Agency:
        path = self.home / "credentials" / f"{name}.json"
        try:
            credentials = Credentials.load(path)
        except (OSError, ValueError, TypeError) as exc:
            raise DemoFailed(f"no readable credentials at {path}") from exc
        client = AsyncRefNet(credentials, self.endpoints, acting_user=acting_user)
        self.clients.append(client)
        agency = Agency(name, client)
        with self.step(f"{name.upper()} gets an access token") as shown:
            agency.claims = await self.verified_claims(client, await client.token())
            shown.append(f"client credentials + private_key_jwt; agency {agency.claims.get('agency')}")
        return agency

    async def verified_claims(self, client: AsyncRefNet, token: str) -> dict[str, Any]:
        """The token's claims, after checking its signature against the issuer's published keys."""
        published: Any = await client.jwks()  # a JWKS document, as joserfc reads it
        keys = KeySet.import_key_set(published)
        try:
            return dict(jwt.decode(token, keys, algorithms=list(DEFAULT_ALGORITHMS)).claims)
        except JoseError as exc:
            raise DemoFailed(f"the token does not verify against the issuer's keys ({type(exc).__name__})") from exc

    async def tokens(self) -> tuple[Agency, Agency]:
        self.section("0. Each agency gets a token with its own key")
        iom = await self.agency_token("iom", IOM_USER)
        unhcr = await self.agency_token("unhcr", UNHCR_USER)
        table = Table(title="access token claims (RFC 9068 JWT, verified against the issuer's JWKS)")
        table.add_column("claim")
        table.add_column("IOM")
        table.add_column("UNHCR")
        for claim in ("iss", "aud", "sub", "agency", "scope", "exp"):
            values = [iom.claims.get(claim), unhcr.claims.get(claim)]
            if claim == "exp":
                values = [f"in {int(v) - int(time.time())} s" if isinstance(v, int) else v for v in values]
            table.add_row(claim, *(str(v).replace(" ", "\n") if claim == "scope" else str(v) for v in values))
        self.console.print(table)
        return iom, unhcr

    async def register_case(self, iom: Agency) -> str:
        with self.step("IOM registers an adult case (a fictional person)") as shown:
            case = await iom.client.create_case(FICTIONAL_PERSON, SCREENING, purpose="case_management")
            shown.append(f"case {case.id}, age band {case.age_band}, minor: {case.is_minor}; "
                         "personal data encrypted with a key of its own")
        return case.id

    async def record_consent(self, iom: Agency, unhcr: Agency, case_id: str) -> None:
        with self.step("IOM records her consent to a referral to UNHCR") as shown:
            consent = await iom.client.record_consent(case_id, {
                "grantor": "self", "method": "written", "language": "ti", "interpreter_used": True,
                "provisions": [{"purpose": "referral", "recipient_agency": unhcr.id,
                                "data_categories": SHARED_CATEGORIES, "decision": "permit"}],
                "valid_until": "2030-12-31T00:00:00Z", "checklist": dict.fromkeys(CHECKLIST, True)})
            shown.append(f"consent {consent.id} v{consent.version}: referral to {unhcr.id} of "
                         f"{', '.join(SHARED_CATEGORIES)}")

    async def recipient_cannot_see_yet(self, unhcr: Agency, case_id: str) -> None:
        with self.step("UNHCR cannot see the case before a referral") as shown:
            try:
                await unhcr.client.read_case(case_id, purpose="referral")
            except RefNetError as refused:
                if refused.status != 404:
                    raise DemoFailed(f"expected 404, got {refused}") from refused
            else:
                raise DemoFailed("expected 404, got the case")
            shown.append("404, not 403: not even its existence leaks; the refused read is audited")

    async def refer(self, iom: Agency, unhcr: Agency, case_id: str) -> str:
        with self.step("IOM refers the case to UNHCR on the protection pathway") as shown:
            key = f"demo-{uuid.uuid4().hex}"  # a retry with the same key returns the first result
            # Right after start-up the broker's copy of the registry may still be filling: retry briefly.
            referral = await until_answered(lambda: iom.client.create_referral(
                case_id, to_agency=unhcr.id, pathway="protection", service_type="protection.rsd",
                priority="urgent", reason="Fears return; may need international protection",
                shared_categories=SHARED_CATEGORIES, idempotency_key=key), (422, 503), 30)
            due = utc_text(referral.due_at) if referral.due_at else "-"
            shown.append(f"consent and SOP guards checked; status {referral.status}, due {due}")
        self.console.print(f"  referral id: {referral.id}")
        return referral.id

    async def observe_delivery(self, watch: DeliveryWatch, referral_id: str) -> None:
        with self.step(f"UNHCR's case system is told: event on {watch.topic}") as shown:
            record = await watch.find(referral_id, REQUESTED, seconds=30)
            if record is None:
                raise DemoFailed(f"no {REQUESTED} for this referral within 30 s")
            headers = {name: value.decode() for name, value in record.headers}
            shown.append(f"{headers['ce_type']}, ce_id {headers['ce_id']}, key = referral id "
                         f"(partition {record.partition}, offset {record.offset}); also by webhook and GET /events")

    async def acknowledgement(self, unhcr: Agency, referral_id: str) -> None:
        title = "UNHCR acknowledges the referral (received)"
        with self.step(title) as shown:
            with self.console.status(f"waiting up to {self.ack_timeout:g} s for UNHCR's case system to acknowledge"):
                state = await eventually(lambda: unhcr.client.referral(referral_id),
                                         lambda s: s.status != "requested", self.ack_timeout)
            if state.status == "requested":
                try:
                    await unhcr.client.transition(referral_id, "received")
                except RefNetError as refused:
                    if refused.status != 409:
                        raise
                    # The case system got there a moment after we stopped waiting.
                    state = await unhcr.client.referral(referral_id)
                else:
                    shown.append("no case system answered, so the demo acknowledged as UNHCR")
                    return
            received = [h for h in state.history or [] if h.to == "received"]
            if not received:
                raise DemoFailed(f"the referral is {state.status}, never received")
            shown.append(f"by UNHCR's case system (acting user {received[0].acting_user})")

    async def read_minimised_case(self, iom: Agency, unhcr: Agency, case_id: str) -> None:
        with self.step("UNHCR reads the minimised case: only the shared categories") as shown:
            owner_view = sections(await iom.client.read_case(case_id, purpose="case_management"))
            # Every refused read is an audit entry, so ask once a second rather than hammer intake while it
            # learns of the referral (an event, usually well under a second).
            recipient_view = sections(await until_answered(
                lambda: unhcr.client.read_case(case_id, purpose="referral"), (404,), 20, every=1.0))
            table = Table(title="the case's fields, by data category: what UNHCR receives of what IOM holds")
            table.add_column("category")
            table.add_column("field")
            table.add_column("UNHCR (recipient)")
            category_of = {place: category for category, places in CATEGORY_FIELDS.items() for place in places}
            withheld = 0
            rows = []
            for section in ("person", "screening"):
                for name in owner_view[section]:
                    seen = name in recipient_view[section]
                    category = category_of.get((section, name), "-")
                    if seen != (category in SHARED_CATEGORIES):
                        raise DemoFailed(f"{section}.{name} ({category}) was {'' if seen else 'not '}received")
                    withheld += not seen
                    rows.append((category, f"{section}.{name}",
                                 "[green]✓ shared[/green]" if seen else "[dim]withheld[/dim]"))
            for row in sorted(rows):
                table.add_row(*row)
            leaked = [f"{s}.{n}" for s in ("person", "screening") for n in recipient_view[s]
                      if n not in owner_view[s]]
            if leaked or withheld == 0:
                raise DemoFailed("the recipient's view is not a subset of the owner's")
            shown.append(f"{withheld} fields withheld: the categories not shared (contact, documents, "
                         "trafficking_experience, health, notes)")
            shown.append(table)

    async def sender_queue(self, iom: Agency, referral_id: str) -> None:
        with self.step("IOM's queue of sent referrals shows every step") as shown:
            queue = await iom.client.referrals(role="sent", limit=100)
            mine: Referral | None = next((r for r in queue.items if r.id == referral_id), None)
            if mine is None:  # a long queue: ask for this one
                mine = await iom.client.referral(referral_id)
            if mine.status != "completed":
                raise DemoFailed(f"the referral is {mine.status}, not completed")
            history = mine.history or (await iom.client.referral(referral_id)).history or []
            table = Table(title=f"referral {referral_id}")
            for column in ("from", "to", "by", "acting user", "at (UTC)"):
                table.add_column(column)
            for h in history:
                table.add_row(str(h.from_ or "-"), h.to, h.by, str(h.acting_user), utc_text(h.at)[11:19])
            shown.append(f"status {mine.status}, {len(history)} transitions")
            shown.append(table)

    async def access_log(self, oversight: Agency, case_id: str, unhcr: Agency) -> int:
        """-> the log index of UNHCR's first read of the case."""
        with self.step("The auditor lists who read the case, why, under which consent") as shown:
            def unhcr_reads(body: CaseAccess) -> list[Access]:
                return [e for e in body.items if e.agency == unhcr.id and e.outcome == "success"]

            # The log is fed by events: the reads of the last seconds may still be on their way.
            body = await eventually(lambda: oversight.client.case_access(case_id), lambda b: bool(unhcr_reads(b)), 30)
            if not unhcr_reads(body):
                raise DemoFailed("UNHCR's read of the case did not reach the audit log within 30 s")
            table = Table(title=f"GET /audit/cases/{case_id}/access")
            for column in ("index", "action", "outcome", "agency", "purpose", "categories", "consent"):
                table.add_column(column)
            for e in body.items:
                version = e.consent.consent_version
                table.add_row(str(e.index), e.action, e.outcome, str(e.agency), str(e.purpose),
                              ", ".join(e.data_categories or []) or "-", f"v{version}" if version else "-")
            shown.append(f"{len(body.items)} entries: ids, purposes and categories, no personal data")
            shown.append(table)
        return unhcr_reads(body)[0].index

    async def verify_inclusion(self, oversight: Agency, case_id: str, index: int) -> None:
        with self.step("The auditor proves UNHCR's read is in the signed, append-only log") as shown:
            key = await oversight.client.log_key()
            signed: Checkpoint = await eventually(oversight.client.checkpoint, lambda c: c.tree_size > index, 30,
                                                  every=1.0)
            if signed.tree_size <= index:
                raise DemoFailed(f"no checkpoint covers entry {index} within 30 s")
            if not verify_signature(base64.b64decode(key.public_key), signed.body,
                                    base64.b64decode(signed.signature)):
                raise DemoFailed("the checkpoint's Ed25519 signature does not verify")
            root = parse_checkpoint_body(signed.body).root  # from the signed text, not the JSON beside it

            entries = await oversight.client.audit_entries(case_id=case_id, limit=500)
            entry = next((e for e in entries.items if e.index == index), None)
            if entry is None:
                raise DemoFailed(f"entry {index} is not among the case's entries")
            leaf = hash_leaf(leaf_bytes(entry.model_dump()))
            proof = await oversight.client.inclusion_proof(index, tree_size=signed.tree_size)
            if proof.leaf_hash != leaf.hex():
                raise DemoFailed(f"the log's leaf {index} is not the entry it returned")
            if not verify_inclusion(leaf, index, signed.tree_size, [bytes.fromhex(h) for h in proof.path], root):
                raise DemoFailed("the inclusion proof does not lead to the signed root")
            shown.append(Panel.fit(
                f"checkpoint: tree size {signed.tree_size}, root {root.hex()[:16]}..., "
                f"signed {signed.timestamp}\n"
                f"✓ Ed25519 signature verifies with the log's public key {key.key_id[:16]}...\n"
                f"✓ leaf = SHA-256(0x00 || RFC 8785 JSON of entry {index}) matches the log's leaf\n"
                f"✓ {len(proof.path)} hashes of RFC 9162 audit path lead from the leaf to the signed root",
                title="inclusion proof"))


def sections(case: Case) -> dict[str, dict[str, Any]]:
    return {"person": case.person, "screening": case.screening}


async def _run(console: Console, state: StackState, home: Path, *, ack_timeout: float, complete: bool) -> None:
    demo = Demo(console, state, home, ack_timeout=ack_timeout, complete=complete)
    try:
        await demo.run()
    finally:
        await demo.aclose()


def run(console: Console, home: Path, *, ack_timeout: float = 5.0, complete: bool = True) -> int:
    """-> the exit code: 0 if every step did what the pathway needs."""
    state = StackState.load(home)
    if state is None:
        console.print(f"[red]✗[/red] RefNet is not running here (no {home / 'state.json'}); start it with "
                      "`make run` and run `refnet demo` from another terminal.")
        return 1
    try:
        asyncio.run(_run(console, state, home, ack_timeout=ack_timeout, complete=complete))
    except DemoFailed as exc:
        console.print(f"[red]The demo failed[/red] ({exc}). Service logs: {home / 'logs'}/<service>.log")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0
