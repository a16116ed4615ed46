"""Partner agencies' case systems under load: concurrent clients that register cases, refer them and move the
referrals through their lifecycle, the way an integrator's client should behave when parts of RefNet fail.

Client behaviour (what a careful integrator does, and what the contract promises it can do):
- every request that got no answer (connection refused or cut) or a 5xx is retried after a short backoff;
  a create (a case's registration, a referral) carries an ``Idempotency-Key``, so its retry returns what
  the lost attempt made;
- a transition retried after a lost answer may find it was already applied: a 409 ``invalid-transition``
  whose ``current_state`` is the state asked for is that success, not a refusal;
- a recipient reads the case it was referred (``X-Purpose: referral``) once it has accepted (or received)
  the referral; intake learns of the referral by event, so a 404 then is its read model catching up: read
  again, a little later each time.

Everything the clients were told is kept in a ``Ledger``: the checks afterwards compare RefNet's public APIs,
topics and audit log with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.client_auth import ClientCredentials, TokenUnavailable
from tests.e2e.network import CHECKLIST

SHARED = ["identity", "demographics", "protection_needs"]
#: How long one operation keeps retrying before the client gives up (longer than any fault we inject).
PATIENCE_SECONDS = 180.0


# --- who refers whom ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One pair of agencies and the SOP pathway between them."""

    sender: str
    recipient: str
    pathway: str
    service_type: str


ROUTES = (
    Route("iom", "unhcr", "protection", "protection.rsd"),
    Route("unhcr", "iom", "assistance", "case_management"),
    Route("iom", "shelter", "service", "shelter"),
    Route("shelter", "clinic", "service", "health.medical"),
    Route("unhcr", "legalaid", "service", "legal.counselling"),
)

# The recipient's (and, for a cancellation, the sender's) moves after ``requested``, with a reason code where
# the contract requires one. Every path ends in a terminal state, so the final state is known in advance.
Step = tuple[str, str, str | None]  # (party, to, reason_code)
RECEIVED: tuple[Step, ...] = (("recipient", "received", None),)
STARTED: tuple[Step, ...] = (*RECEIVED, ("recipient", "accepted", None), ("recipient", "in_progress", None))
COMPLETED: tuple[Step, ...] = (*STARTED, ("recipient", "completed", None))
#: The mix of outcomes: most referrals complete, the others take each other way the lifecycle allows.
PATHS: tuple[tuple[str, tuple[Step, ...]], ...] = (
    ("completed", COMPLETED),
    ("completed", COMPLETED),
    ("completed", COMPLETED),
    ("completed", COMPLETED),
    ("completed", COMPLETED),
    ("on hold and back", (*STARTED, ("recipient", "on_hold", "awaiting-person"), ("recipient", "in_progress", None),
                          ("recipient", "completed", None))),
    ("rejected", (*RECEIVED, ("recipient", "rejected", "no-capacity"))),
    ("failed", (*STARTED, ("recipient", "failed", "lost-contact"))),
    ("cancelled by the sender", (*RECEIVED, ("sender", "cancelled", "referred-elsewhere"))),
    ("cancelled before receipt", (("sender", "cancelled", "no-longer-needed"),)),
)


@dataclass(frozen=True)
class Plan:
    """What the clients will do with the ``index``-th referral of the run."""

    index: int
    route: Route
    kind: str
    steps: tuple[Step, ...]

    @property
    def read_after(self) -> str | None:
        """The move after which the recipient reads the case: once it accepted the referral, or, on a path
        that ends before that, once it received it (intake learns of both by event, so a later read is less
        often ahead of intake's read model)."""
        moves = [to for _, to, _ in self.steps]
        return next((m for m in ("accepted", "received") if m in moves), None)


def plan(index: int) -> Plan:
    # Routes turn fastest, paths once per round of routes: every route meets every path.
    kind, steps = PATHS[(index // len(ROUTES)) % len(PATHS)]
    return Plan(index, ROUTES[index % len(ROUTES)], kind, steps)


# --- what the clients were told -------------------------------------------------------------------------


@dataclass
class ReferralRecord:
    plan: Plan
    case_id: str
    sender: str  # agency ids
    recipient: str
    referral_id: str = ""
    acknowledged: list[str] = field(default_factory=list)  # states the API confirmed, in order


@dataclass
class Reads:
    """A recipient's reads of one case, by what the client learnt of each attempt."""

    granted: int = 0  # 200
    denied: int = 0  # 404 (intake had not yet heard of the referral)
    unknown: int = 0  # no answer or a 5xx: the read may or may not have happened (and been recorded)


@dataclass
class Ledger:
    referrals: list[ReferralRecord] = field(default_factory=list)
    reads: dict[str, Reads] = field(default_factory=dict)  # by case id
    replayed_registrations: int = 0  # 201 with Idempotent-Replayed: true (the lost attempt had registered it)
    transitions_found_applied: int = 0  # 409 current_state == asked, after an unanswered attempt
    replayed_creates: int = 0  # 201 with Idempotent-Replayed: true


# --- talking to RefNet ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Every request the clients sent and how it was answered."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    no_answer: int = 0  # connection refused, reset or timed out
    server_errors: int = 0  # 5xx answers
    retried_operations: int = 0  # operations that met a 5xx or no answer ...
    retried_to_success: int = 0  # ... and then succeeded
    given_up: list[str] = field(default_factory=list)  # operations that never succeeded (a failure)
    unexpected: list[str] = field(default_factory=list)  # answers no careful client can act on (a failure)

    @property
    def answers_500(self) -> int:
        return self.statuses[500]


class GaveUp(Exception):
    pass


@dataclass
class Outcome:
    response: httpx.Response
    unanswered: int  # earlier attempts that got no answer or a 5xx: each may have taken effect unseen

    @property
    def uncertain(self) -> bool:
        return self.unanswered > 0


class CaseSystems:
    """The demo agencies' case systems, sharing one HTTP connection pool and one token per agency."""

    def __init__(self, home: Path, urls: dict[str, str], *, connections: int = 64) -> None:
        self.home = home
        self.urls = urls
        self.tally = Tally()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0),
                                       limits=httpx.Limits(max_connections=connections))
        self._tokens: dict[str, ClientCredentials] = {}

    def credentials(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.home / "credentials" / f"{name}.json").read_text()))

    def agency(self, name: str) -> str:
        return str(self.credentials(name)["agency_id"])

    async def token(self, name: str) -> str:
        source = self._tokens.get(name)
        if source is None:
            creds = self.credentials(name)
            source = self._tokens[name] = ClientCredentials(creds, scope=" ".join(creds["scopes"]),
                                                            refresh_margin_seconds=120)
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                return await source.token()
            except TokenUnavailable:  # the registry is down or restarting: its clients wait
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        await self._http.aclose()
        for source in self._tokens.values():
            await source.aclose()

    async def call(self, agency: str, method: str, service: str, path: str, *, done: Callable[[httpx.Response], bool],
                   json: Any = None, headers: dict[str, str] | None = None, what: str = "") -> Outcome:
        """Send until an answer below 500 (``done`` says whether it is the success the caller wanted);
        retry no answer and 5xx. Returns the last answer and how many attempts before it went unanswered.
        """
        unanswered = 0
        backoff = 0.1
        deadline = time.monotonic() + PATIENCE_SECONDS
        label = what or f"{method} {service}{path.split('?')[0]}"
        while True:
            token = await self.token(agency)
            self.tally.requests += 1
            try:
                response = await self._http.request(
                    method, self.urls[service] + path, json=json,
                    headers={"Authorization": f"Bearer {token}", "X-Acting-User": f"{agency}.caseworker",
                             **(headers or {})})
            except httpx.TransportError:
                self.tally.no_answer += 1
                response = None
            if response is not None:
                self.tally.statuses[response.status_code] += 1
                if response.status_code == 401:
                    # Our token expired while its issuer was away, or was issued before a restart; a new one.
                    self._tokens[agency].invalidate()
                elif response.status_code < 500:
                    if unanswered:
                        self.tally.retried_operations += 1
                        if done(response):
                            self.tally.retried_to_success += 1
                    return Outcome(response, unanswered)
                else:
                    self.tally.server_errors += 1
            if response is None or response.status_code >= 500:
                unanswered += 1
            if time.monotonic() > deadline:
                self.tally.given_up.append(label)
                raise GaveUp(label)
            retry_after = response.headers.get("retry-after", "") if response is not None else ""
            await asyncio.sleep(min(float(retry_after), 2.0) if retry_after.isdigit() else backoff)
            backoff = min(backoff * 2, 2.0)

    def unexpected(self, what: str, response: httpx.Response) -> None:
        # Only the status and the problem type: a response body could carry personal data into test output.
        kind = ""
        with contextlib.suppress(ValueError, AttributeError):
            kind = str(response.json().get("type", ""))
        self.tally.unexpected.append(f"{what}: {response.status_code} {kind}".strip())


# --- one referral, start to end -------------------------------------------------------------------------


def case_body(index: int, recipient: str) -> dict[str, Any]:
    return {
        "person": {"given_name": "Load", "family_name": f"Tester{index}", "birth_date": "1994-03-01",
                   "gender": "feminine", "citizenship": "NG", "languages": ["en"], "phone": None, "email": None,
                   "documents": ["none"]},
        "screening": {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "IT",
                      "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage"],
                      "recruiter_relation": "other", "migration_status": "asylum_seeker", "fear_of_return": False,
                      "needs": ["shelter"], "risk_level": "medium"},
        "initial_consent": {
            "grantor": "self", "method": "written", "language": "en", "interpreter_used": False,
            "provisions": [{"purpose": "referral", "recipient_agency": recipient, "data_categories": SHARED,
                            "decision": "permit"}],
            "valid_until": "2035-01-01T00:00:00Z", "checklist": dict.fromkeys(CHECKLIST, True)},
    }


class Run:
    """The load: ``total`` referrals, ``workers`` at a time, each admitted by ``admit`` before it starts."""

    def __init__(self, systems: CaseSystems, ledger: Ledger, *, run_id: str) -> None:
        self.systems = systems
        self.ledger = ledger
        self.run_id = run_id
        self.started = 0
        self.finished = 0

    async def drive(self, total: int, workers: int, admit: Callable[[int], Awaitable[None]]) -> None:
        async def worker() -> None:
            while self.started < total:
                index = self.started
                self.started += 1
                await admit(index)
                await self.referral(plan(index))
                self.finished += 1

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def referral(self, p: Plan) -> None:
        s = self.systems
        sender, recipient = s.agency(p.route.sender), s.agency(p.route.recipient)

        created = await s.call(p.route.sender, "POST", "intake", "/cases", json=case_body(p.index, recipient),
                               headers={"Idempotency-Key": f"{self.run_id}-case-{p.index}",
                                        "X-Purpose": "case_management"},
                               done=lambda r: r.status_code == 201, what="register case")
        if created.response.status_code != 201:
            s.unexpected("register case", created.response)
            return
        if created.response.headers.get("idempotent-replayed") == "true":
            self.ledger.replayed_registrations += 1
        case_id = created.response.json()["id"]
        record = ReferralRecord(p, case_id, sender, recipient)
        self.ledger.referrals.append(record)

        body = {"case_id": case_id, "to_agency": recipient, "pathway": p.route.pathway,
                "service_type": p.route.service_type, "priority": "urgent", "reason": "Load test referral",
                "shared_categories": SHARED}
        referred = await s.call(p.route.sender, "POST", "referral", "/referrals", json=body,
                                headers={"Idempotency-Key": f"{self.run_id}-{p.index}"},
                                done=lambda r: r.status_code == 201, what="create referral")
        if referred.response.status_code != 201:
            s.unexpected("create referral", referred.response)
            return
        if referred.response.headers.get("idempotent-replayed") == "true":
            self.ledger.replayed_creates += 1
        record.referral_id = referred.response.json()["id"]
        record.acknowledged.append(referred.response.json()["status"])

        for party, to, reason in p.steps:
            actor = p.route.recipient if party == "recipient" else p.route.sender
            if not await self.move(record, actor, to, reason):
                return
            if to == p.read_after:
                await self.read(record, p.route.recipient)

    async def move(self, record: ReferralRecord, actor: str, to: str, reason: str | None) -> bool:
        s = self.systems
        body: dict[str, Any] = {"to": to} | ({"reason_code": reason} if reason else {})
        outcome = await s.call(actor, "POST", "referral", f"/referrals/{record.referral_id}/transitions", json=body,
                               done=lambda r: r.status_code == 200 or _already(r, to), what=f"move to {to}")
        response = outcome.response
        if response.status_code == 200 and response.json()["status"] == to:
            record.acknowledged.append(to)
            return True
        if outcome.uncertain and _already(response, to):
            # The attempt whose answer was lost had applied it (a careful client learns this from the 409).
            self.ledger.transitions_found_applied += 1
            record.acknowledged.append(to)
            return True
        s.unexpected(f"move to {to}", response)
        return False

    async def read(self, record: ReferralRecord, reader: str) -> None:
        """The recipient reads the minimised case; intake may not have heard of the referral yet."""
        s = self.systems
        reads = self.ledger.reads.setdefault(record.case_id, Reads())
        pause = 0.3
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            outcome = await s.call(reader, "GET", "intake", f"/cases/{record.case_id}",
                                   headers={"X-Purpose": "referral"},
                                   done=lambda r: r.status_code in (200, 404), what="recipient reads case")
            # Each unanswered attempt was a read that may have happened, and been recorded, unseen.
            reads.unknown += outcome.unanswered
            if outcome.response.status_code == 200:
                reads.granted += 1
                return
            if outcome.response.status_code != 404:
                s.unexpected("recipient reads case", outcome.response)
                return
            reads.denied += 1
            if time.monotonic() > deadline:
                s.tally.given_up.append("recipient reads case (never granted)")
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def _already(response: httpx.Response, to: str) -> bool:
    if response.status_code != 409:
        return False
    try:
        problem = response.json()
    except ValueError:
        return False
    return bool(problem.get("type", "").endswith(":invalid-transition") and problem.get("current_state") == to)


def topics_of(records: Sequence[ReferralRecord]) -> set[str]:
    return {f"refnet.delivery.{agency}" for r in records for agency in (r.sender, r.recipient)}
