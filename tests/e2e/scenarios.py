"""The SOP scenarios, end to end: each goes through the public REST APIs and the Kafka topics only, as partner
agencies, their case systems and an auditor would, and asserts what they rely on as it goes.

Each scenario is ``async def <name>(net: Network, people: People) -> Outcome``. It makes its own cases and
referrals, so scenarios depend neither on their order nor on each other's data and may run concurrently. The
personal data comes from ``people``: ``People.default()`` for the e2e tests, ``People.marked("ZQXMARKER")`` to
put a marker into every personal field intake accepts (the leak scan then looks for ``people.needles()`` in
every topic, log and database). Run them against ``running_stack(home, SCENARIO_ENV)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks import Webhook

from tests.e2e.network import CHECKLIST, Network, WebhookReceiver, ce_headers, eventually
from tests.e2e.staff import Staff
from tests.e2e.transparency import (
    Checkpoint,
    consistent,
    leaf_hash,
    root_from_inclusion_proof,
    verified_checkpoint,
)

#: What the scenarios need of the stack beyond `make run`'s defaults: an emergency referral is overdue 4 s
#: after it was made (not 24 h), and the deadline scheduler looks twice a second. Only `overdue_referral`
#: makes emergency referrals.
EMERGENCY_ACKNOWLEDGE_WITHIN = timedelta(seconds=4)
SCENARIO_ENV = {
    "REFNET_REFERRAL_ACKNOWLEDGE_EMERGENCY_WITHIN": f"PT{int(EMERGENCY_ACKNOWLEDGE_WITHIN.total_seconds())}S",
    "REFNET_REFERRAL_DEADLINE_INTERVAL_SECONDS": "0.5",
}

REQUESTED, RECEIVED, ACCEPTED, IN_PROGRESS, COMPLETED, CANCELLED, OVERDUE = (
    f"org.refnet.referral.{s}.v1"
    for s in ("requested", "received", "accepted", "in_progress", "completed", "cancelled", "overdue"))

# Fields of the case view by data category (docs/contract.md), to check what a recipient is shown.
PERSON_FIELDS = {"identity": {"given_name", "family_name", "other_names", "birth_date", "estimated_age"},
                 "contact": {"phone", "email", "address"}, "demographics": {"gender", "citizenship", "languages"},
                 "documents": {"documents"}}
SCREENING_FIELDS = {
    "trafficking_experience": {"trafficking_status", "identified_by", "country_of_exploitation",
                               "exploitation_types", "means_of_control", "recruiter_relation"},
    "protection_needs": {"needs", "fear_of_return", "risk_level", "migration_status", "bia_completed_at",
                         "bid_completed_at"},
    "notes": {"notes"}}


# --- the people -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Everything personal that intake accepts about one person (docs/domain.md: encrypted at rest, never in an
    event, a log line or the audit log): the case's person and notes, and the free text of consent,
    withdrawal and override bodies."""

    given_name: str
    family_name: str
    other_names: tuple[str, ...]
    birth_date: date
    phone: str
    email: str
    address: str  # given later, by a PATCH
    notes: str  # screening notes
    follow_up_notes: str  # notes replaced by a PATCH
    witness: str  # consent
    capacity_note: str  # consent
    withdrawal_reason: str
    justification: str  # risk-to-life override
    referral_reason: str  # referral: sealed under referral's case key
    transition_note: str  # referral: a note on a move, sealed likewise

    def person_body(self, *, gender: str, citizenship: str, languages: list[str],
                    documents: list[str]) -> dict[str, Any]:
        return {"given_name": self.given_name, "family_name": self.family_name,
                "other_names": list(self.other_names), "birth_date": self.birth_date.isoformat(),
                "gender": gender, "citizenship": citizenship, "languages": languages, "phone": self.phone,
                "email": self.email, "documents": documents}

    def texts(self) -> list[str]:
        """Every personal value, as it would appear if it leaked."""
        return [self.given_name, self.family_name, *self.other_names, self.birth_date.isoformat(), self.phone,
                self.email, self.address, self.notes, self.follow_up_notes, self.witness, self.capacity_note,
                self.withdrawal_reason, self.justification, self.referral_reason, self.transition_note]


def _years_ago(years: int, days: int = 0) -> date:
    today = datetime.now(UTC).date()
    try:
        then = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        then = today.replace(year=today.year - years, day=28)
    return then - timedelta(days=days)


def _fictional(given: str, family: str, other: str, birth: date, phone: str, city: str,
               story: str) -> Person:
    handle = f"{given}.{family}".lower()
    return Person(
        given_name=given, family_name=family, other_names=(other,), birth_date=birth, phone=phone,
        email=f"{handle}@example.org", address=f"Via dei Mille 14, {city}",
        notes=f"{given} says {story}", follow_up_notes=f"{given} moved to {city}; a cousin knows the address",
        witness=f"Sister {given[0]}. Okoro, interpreter", capacity_note=f"{given} understood each item, in {given}'s "
        "own language", withdrawal_reason=f"{given} fears the family will learn where {given} lives",
        justification=f"{given} was found unconscious, needs urgent care, and the recruiter is searching {city}",
        referral_reason=f"{given} {story}; needs protection in {city}",
        transition_note=f"Spoke with {given} by phone; staying with a friend in {city}")


@dataclass(frozen=True)
class People:
    """The personal data of each scenario's person (one per scenario, so scenarios share none)."""

    adult: Person  # main_pathway: IOM identifies her and refers her to UNHCR
    refugee: Person  # reverse_pathway: UNHCR refers him to IOM, then to a shelter
    child: Person  # child_safeguards: 14 years old
    withdrawing: Person  # consent_withdrawal
    endangered: Person  # risk_to_life_override
    waiting: Person  # overdue_referral
    erased: Person  # erasure
    marker: str | None = None

    @classmethod
    def default(cls) -> People:
        return cls(
            adult=_fictional("Amina", "Tesfay", "Amna", date(1999, 4, 2), "+249912000001", "Palermo",
                             "she was made to work in a workshop in Tripoli for two years"),
            refugee=_fictional("Yonas", "Haile", "Johnny", date(1992, 11, 17), "+393331000002", "Palermo",
                               "he was sold to a farm owner after the crossing"),
            child=_fictional("Joy", "Okafor", "Joyce", _years_ago(14, 40), "+393331000003", "Rome",
                             "a woman promised her school in Italy"),
            withdrawing=_fictional("Grace", "Mensah", "Gigi", date(1996, 6, 21), "+393331000004", "Turin",
                                   "her passport is kept by the madam"),
            endangered=_fictional("Lina", "Haddad", "Lulu", date(2001, 1, 9), "+302101000005", "Athens",
                                  "she was beaten when she tried to leave"),
            waiting=_fictional("Mariam", "Diallo", "Mimi", date(1988, 9, 30), "+302101000006", "Athens",
                               "her debt grew every month"),
            erased=_fictional("Elena", "Popescu", "Lena", date(1994, 2, 14), "+393331000007", "Rome",
                              "she wants nothing of this kept"),
        )

    @classmethod
    def marked(cls, marker: str) -> People:
        """People whose every personal text holds `marker`; phone numbers and birth dates cannot, so they are
        derived from it (see `needles`)."""
        assert marker.isalnum(), "the marker goes into names and e-mail addresses: letters and digits only"

        def person(role: str, age: int) -> Person:
            digest = hashlib.sha256(f"{marker}/{role}".encode()).digest()
            digits = "".join(str(b % 10) for b in digest[:9])
            text = f"{marker} {role}"
            return Person(
                given_name=f"{marker}Given{role.title()}", family_name=f"{marker}Family{role.title()}",
                other_names=(f"{marker}Alias{role.title()}",), birth_date=_years_ago(age, digest[9] % 200),
                phone=f"+39{digits}", email=f"{marker}.{role}@example.org", address=f"{text} address, Palermo",
                notes=f"{text} notes", follow_up_notes=f"{text} follow-up notes", witness=f"{text} witness",
                capacity_note=f"{text} capacity note", withdrawal_reason=f"{text} withdrawal reason",
                justification=f"{text} risk-to-life justification, written by the caseworker",
                referral_reason=f"{text} referral reason", transition_note=f"{text} transition note")

        return cls(adult=person("adult", 27), refugee=person("refugee", 33), child=person("child", 14),
                   withdrawing=person("withdrawing", 29), endangered=person("endangered", 24),
                   waiting=person("waiting", 37), erased=person("erased", 31), marker=marker)

    def persons(self) -> list[Person]:
        return [getattr(self, f.name) for f in fields(self) if f.name != "marker"]

    def needles(self) -> list[str]:
        """Strings that must never appear outside intake's and referral's encrypted stores: the marker (if
        any), and every personal value of every person."""
        found = [self.marker] if self.marker else []
        for person in self.persons():
            found += person.texts()
        return sorted(set(found))


# --- outcomes ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a scenario made, for callers that look further (the leak scan)."""

    scenario: str
    case_ids: list[str] = field(default_factory=list)
    referral_ids: list[str] = field(default_factory=list)


# --- the APIs, as partner agencies call them -----------------------------------------------------------


def _in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def permit(agency_id: str | None, *categories: str) -> dict[str, Any]:
    return {"purpose": "referral", "recipient_agency": agency_id, "data_categories": list(categories),
            "decision": "permit"}


def consent_body(person: Person, *provisions: dict[str, Any], grantor: str = "self",
                 child_assent: bool | None = None, language: str = "en") -> dict[str, Any]:
    body: dict[str, Any] = {
        "grantor": grantor, "method": "written", "language": language, "interpreter_used": True,
        "provisions": list(provisions), "valid_until": _in_days(365), "witness": person.witness,
        "capacity_note": person.capacity_note, "checklist": dict.fromkeys(CHECKLIST, True)}
    if child_assent is not None:
        body["child_assent"] = child_assent
    return body


def screening_body(person: Person, **facts: Any) -> dict[str, Any]:
    return {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "LY",
            "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage", "confiscated_documents"],
            "recruiter_relation": "other", "migration_status": "asylum_seeker", "fear_of_return": False,
            "needs": ["shelter"], "risk_level": "medium", **facts, "notes": person.notes}


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).removeprefix("urn:refnet:problem:")


def _try_again(response: httpx.Response) -> bool:
    """503 with Retry-After: right after start-up referral's read model of the registry may still be loading
    (seconds), or intake may be briefly unreachable."""
    return response.status_code == 503 and "retry-after" in response.headers


@dataclass(frozen=True)
class Access:
    """One read of case data a scenario made (or a write whose answer carried the case), as the auditor must
    find it."""

    action: str
    agency: str
    outcome: str
    purpose: str | None


class Api:
    """The four services' public APIs, called as the demo agencies (by short name: iom, unhcr, ...)."""

    def __init__(self, net: Network, http: httpx.AsyncClient) -> None:
        self.net = net
        self.http = http
        self.accesses: dict[str, list[Access]] = {}

    def id(self, name: str) -> str:
        return self.net.agency(name)

    def headers(self, name: str, purpose: str = "case_management", user: str = "caseworker.1") -> dict[str, str]:
        return self.net.headers(name, purpose=purpose, user=user)

    def url(self, service: str, path: str) -> str:
        return self.net.url(service) + path

    # intake

    async def register(self, owner: str, person: Person, *, person_facts: Mapping[str, Any],
                       screening: Mapping[str, Any], consent: Mapping[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"person": person.person_body(**person_facts), "screening": dict(screening)}
        if consent is not None:
            body["initial_consent"] = dict(consent)
        created = await self.http.post(self.url("intake", "/cases"), headers=self.headers(owner), json=body)
        assert created.status_code == 201, created.text
        case = dict(created.json())
        self.accesses.setdefault(case["id"], []).append(
            Access("case.create", self.id(owner), "success", "case_management"))
        assert case["status"] == "active" and case["owner_agency"] == self.id(owner)
        assert case["person"]["given_name"] == person.given_name and case["screening"]["notes"] == person.notes
        return case

    async def read(self, name: str, case_id: str, purpose: str) -> httpx.Response:
        """GET /cases/{id}: every answer, 200 or 404, is an access the auditor must find."""
        got = await self.http.get(self.url("intake", f"/cases/{case_id}"), headers=self.headers(name, purpose))
        assert got.status_code in (200, 404), got.text
        self.accesses.setdefault(case_id, []).append(
            Access("case.read", self.id(name), "success" if got.status_code == 200 else "denied", purpose))
        return got

    async def read_until(self, name: str, case_id: str, purpose: str, status: int) -> httpx.Response:
        """Intake learns of referrals from events (eventually consistent): read until the answer is `status`."""
        got = await eventually(lambda: self.read(name, case_id, purpose), lambda r: r.status_code == status)
        assert got.status_code == status, got.text
        return got

    async def consents(self, owner: str, case_id: str) -> list[dict[str, Any]]:
        got = await self.http.get(self.url("intake", f"/cases/{case_id}/consents"), headers=self.headers(owner))
        assert got.status_code == 200, got.text
        self.accesses.setdefault(case_id, []).append(Access("consent.read", self.id(owner), "success",
                                                            "case_management"))
        return list(got.json()["items"])

    async def patch(self, owner: str, case_id: str, body: Mapping[str, Any]) -> httpx.Response:
        got = await self.http.patch(self.url("intake", f"/cases/{case_id}"), headers=self.headers(owner),
                                    json=dict(body))
        if got.status_code == 200:  # its answer carried the case: an access (one entry: the update's event)
            action = "case.close" if body.get("status") in ("closed", "closed_referred") else "case.update"
            self.accesses.setdefault(case_id, []).append(Access(action, self.id(owner), "success",
                                                                "case_management"))
        return got

    async def grant(self, owner: str, case_id: str, body: Mapping[str, Any]) -> httpx.Response:
        return await self.http.post(self.url("intake", f"/cases/{case_id}/consents"), headers=self.headers(owner),
                                    json=dict(body))

    # referral

    async def refer(self, sender: str, key: str | None = None, **body: Any) -> httpx.Response:
        """POST /referrals with an Idempotency-Key, so that retrying a 503 (as Retry-After asks) is safe."""
        headers = self.headers(sender) | {"Idempotency-Key": key or f"e2e-{uuid.uuid4().hex}"}
        return await eventually(
            lambda: self.http.post(self.url("referral", "/referrals"), headers=headers, json=body),
            lambda r: not _try_again(r), seconds=30)

    async def referral(self, name: str, referral_id: str) -> dict[str, Any]:
        got = await self.http.get(self.url("referral", f"/referrals/{referral_id}"), headers=self.headers(name))
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def move(self, name: str, referral_id: str, to: str, reason_code: str | None = None,
                   note: str | None = None) -> dict[str, Any]:
        body = {"to": to} | ({"reason_code": reason_code} if reason_code else {}) | ({"note": note} if note else {})
        moved = await self.http.post(self.url("referral", f"/referrals/{referral_id}/transitions"),
                                     headers=self.headers(name), json=body)
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == to
        return dict(moved.json())

    async def queue(self, name: str, **params: str) -> dict[str, dict[str, Any]]:
        """A work queue (GET /referrals), every page, by referral id."""
        found: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            query = params | {"limit": "500"} | ({"cursor": cursor} if cursor else {})
            got = await self.http.get(self.url("referral", "/referrals"), headers=self.headers(name), params=query)
            assert got.status_code == 200, got.text
            found |= {item["id"]: item for item in got.json()["items"]}
            cursor = got.json()["next_cursor"]
            if not cursor:
                return found

    async def feed(self, name: str, after: str) -> tuple[list[dict[str, Any]], str]:
        """The pull feed (GET /events) after a cursor, every page."""
        items: list[dict[str, Any]] = []
        while True:
            got = await self.http.get(self.url("referral", "/events"), headers=self.headers(name),
                                      params={"after": after, "limit": "500"})
            assert got.status_code == 200, got.text
            items += got.json()["items"]
            if got.json()["next_cursor"] == after:
                return items, after
            after = got.json()["next_cursor"]

    # audit

    async def audit(self, path: str, **params: Any) -> dict[str, Any]:
        got = await self.http.get(self.url("audit", path), headers=self.headers("oversight", purpose="audit"),
                                  params=params)
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def entries(self, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.audit("/audit/entries", **params, limit=500, **({"cursor": cursor} if cursor else {}))
            found += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return found

    async def signed_checkpoint(self, at_least: int = 1) -> Checkpoint:
        """The log's latest checkpoint of at least `at_least` entries, its signature checked with the published
        key."""
        key = await self.http.get(self.url("audit", "/audit/public-key"))
        assert key.status_code == 200, key.text
        checkpoint = await eventually(lambda: self.audit("/audit/checkpoint"),
                                      lambda cp: cp["tree_size"] >= at_least)
        return verified_checkpoint(checkpoint, key.json())

    async def audited_accesses(self, case_id: str) -> list[dict[str, Any]]:
        """The auditor's list of every access to the case: exactly the reads this scenario made, in order."""
        expected = self.accesses.get(case_id, [])
        page = await eventually(lambda: self.audit(f"/audit/cases/{case_id}/access"),
                                lambda p: len(p["items"]) >= len(expected))
        items = list(page["items"])
        found = [Access(i["action"], i["agency"], i["outcome"], i["purpose"]) for i in items]
        # Reads are access records, in order on their topic; a write's entry is its case event, on intake's
        # topic, so its place among the reads is the order audit ingested the two topics in.
        writes = {"case.create", "case.update", "case.close"}
        assert [a for a in found if a.action not in writes] == [a for a in expected if a.action not in writes]
        assert Counter(a for a in found if a.action in writes) == Counter(a for a in expected if a.action in writes)
        return items

    async def prove_included(self, case_id: str, indices: Iterable[int]) -> Checkpoint:
        """An auditor's check that each entry is in the log the service signed: the signature over a checkpoint,
        then, for each entry, the root recomputed from its leaf (its JCS bytes) and its inclusion proof."""
        wanted = sorted(set(indices))
        entries = {e["index"]: e for e in await self.entries(case_id=case_id)}
        checkpoint = await self.signed_checkpoint(at_least=wanted[-1] + 1)
        for index in wanted:
            proof = await self.audit("/audit/proofs/inclusion", index=index, tree_size=checkpoint.tree_size)
            leaf = leaf_hash(entries[index])
            assert leaf.hex() == proof["leaf_hash"], entries[index]
            path = [bytes.fromhex(h) for h in proof["path"]]
            assert root_from_inclusion_proof(index, checkpoint.tree_size, leaf, path) == checkpoint.root
            # and the check has teeth: the same entry with another outcome is not in the log
            forged = entries[index] | {"outcome": "denied" if entries[index]["outcome"] != "denied" else "success"}
            assert root_from_inclusion_proof(index, checkpoint.tree_size, leaf_hash(forged), path) != checkpoint.root
        return checkpoint


class CaseSystem:
    """An agency's case system listening on every delivery channel RefNet offers: its Kafka topic
    ``refnet.delivery.<agency>``, a webhook (Standard Webhooks signatures) and the pull feed."""

    def __init__(self, api: Api, name: str) -> None:
        self.api, self.name, self.agency_id = api, name, api.id(name)
        self.receiver = WebhookReceiver()
        self.subscription, self.secret, self.cursor = "", "", "0"

    async def __aenter__(self) -> CaseSystem:
        created = await self.api.http.post(self.api.url("referral", "/subscriptions"),
                                           headers=self.api.headers(self.name), json={"url": self.receiver.url})
        assert created.status_code == 201, created.text
        self.subscription, self.secret = created.json()["id"], created.json()["secret"]
        _, self.cursor = await self.api.feed(self.name, "0")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.api.http.delete(self.api.url("referral", f"/subscriptions/{self.subscription}"),
                                       headers=self.api.headers(self.name))
        finally:
            self.receiver.close()

    async def from_topic(self, referral_id: str, until: Callable[[list[str]], bool]) -> list[dict[str, Any]]:
        def mine(records: list[Any]) -> list[dict[str, Any]]:
            seen: dict[str, dict[str, Any]] = {}  # at least once: deduplicate on the event id
            for r in records:
                if r.key == referral_id.encode():
                    headers = ce_headers(r)
                    seen.setdefault(headers["ce_id"], {"type": headers["ce_type"], "data": json.loads(r.value)})
            return list(seen.values())

        records = await self.api.net.topic(f"refnet.delivery.{self.agency_id}", until=lambda rs: until(
            [e["type"] for e in mine(rs)]))
        return mine(records)

    def from_webhook(self, referral_id: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for headers, body in list(self.receiver.received):
            event = json.loads(body)
            if event.get("subject") == referral_id:
                Webhook(self.secret).verify(body, {k: headers[k] for k in
                                                   ("webhook-id", "webhook-timestamp", "webhook-signature")})
                assert headers["webhook-id"] == event["id"]
                seen.setdefault(event["id"], event)
        return list(seen.values())

    async def from_feed(self, referral_id: str) -> list[dict[str, Any]]:
        items, _ = await self.api.feed(self.name, self.cursor)
        return [i for i in items if i["subject"] == referral_id]

    async def heard(self, referral_id: str, *types: str) -> None:
        """Each channel carries exactly `types` for the referral, in order (waiting for them to arrive)."""
        expected = list(types)

        def done(got: list[str]) -> bool:
            return got == expected

        on_topic = await self.from_topic(referral_id, done)
        assert [e["type"] for e in on_topic] == expected, f"delivery topic of {self.name}"
        assert all(e["data"]["referral_id"] == referral_id for e in on_topic)

        async def webhook() -> list[str]:
            return [e["type"] for e in self.from_webhook(referral_id)]

        # A webhook is pushed by referral's dispatcher (it polls its feed every second, then POSTs): on two busy
        # cores with six test workers that can take longer than a read model's catching up. What is checked is
        # what arrives, in order and once; delivery latency is measured by `make bench`.
        got = await eventually(webhook, done, 60)
        assert got == expected, f"webhook of {self.name}: {got}, expected {expected}"

        async def feed() -> list[str]:
            return [i["type"] for i in await self.from_feed(referral_id)]

        assert await eventually(feed, done) == expected, f"pull feed of {self.name}"


def assert_minimised(view: Mapping[str, Any], shared: Iterable[str]) -> None:
    """A recipient sees the fields of the shared categories and nothing else (the case id, status, owner and
    creation time are always visible; age band and minority go with demographics)."""
    categories = set(shared)
    person_allowed = set().union(*(PERSON_FIELDS.get(c, set()) for c in categories))
    screening_allowed = set().union(*(SCREENING_FIELDS.get(c, set()) for c in categories))
    top = {"id", "status", "owner_agency", "created_at"} | ({"age_band", "is_minor"}
                                                           if "demographics" in categories else set())
    assert set(view) - {"person", "screening"} == top, view
    assert set(view.get("person", {})) <= person_allowed, view
    assert set(view.get("screening", {})) <= screening_allowed, view
    if "identity" in categories:
        assert {"given_name", "family_name", "birth_date"} <= set(view["person"])
    if "contact" in categories:
        assert {"phone", "email"} <= set(view["person"])


async def _with_api(net: Network, body: Callable[[Api], Awaitable[Outcome]]) -> Outcome:
    async with httpx.AsyncClient(timeout=30) as http:
        return await body(Api(net, http))


# --- the scenarios ---------------------------------------------------------------------------------------


async def main_pathway(net: Network, people: People) -> Outcome:
    """The SOP's main pathway: IOM identifies an adult who fears return, records her consent and refers her
    to UNHCR for protection; UNHCR's case system hears of it on every channel; UNHCR reads the minimised
    case, accepts, starts and completes; IOM's queue shows each step; the auditor lists every access to the
    case and checks each against a signed checkpoint."""
    amina = people.adult

    async def run(api: Api) -> Outcome:
        unhcr_id = api.id("unhcr")
        async with CaseSystem(api, "unhcr") as unhcr_system:
            shared = ["identity", "demographics", "protection_needs"]
            case = await api.register(
                "iom", amina,
                person_facts={"gender": "feminine", "citizenship": "ER", "languages": ["ti", "ar"],
                              "documents": ["none"]},
                screening=screening_body(amina, fear_of_return=True, needs=["shelter", "protection.rsd"],
                                         risk_level="high"),
                consent=consent_body(amina, permit(unhcr_id, *shared), language="ti"))
            case_id = case["id"]
            assert case["is_minor"] is False and case["age_band"] not in ("0-8", "9-17")
            consent_id = (await api.consents("iom", case_id))[0]["id"]

            # Before any referral UNHCR cannot even learn that the case exists.
            assert (await api.read("unhcr", case_id, "referral")).status_code == 404
            assert (await api.read("iom", case_id, "case_management")).json()["person"]["phone"] == amina.phone

            created = await api.refer("iom", case_id=case_id, to_agency=unhcr_id, pathway="protection",
                                      service_type="protection.rsd", priority="urgent",
                                      reason=amina.referral_reason, shared_categories=shared)
            assert created.status_code == 201, created.text
            referral = created.json()
            referral_id = referral["id"]
            assert (referral["status"], referral["from_agency"], referral["to_agency"], referral["consent_id"]) == (
                "requested", api.id("iom"), unhcr_id, consent_id)
            made = datetime.fromisoformat(referral["history"][0]["at"])
            assert datetime.fromisoformat(referral["due_at"]) - made == timedelta(hours=72)  # urgent
            await unhcr_system.heard(referral_id, REQUESTED)
            requested = unhcr_system.from_webhook(referral_id)[0]["data"]
            assert (requested["case_id"], requested["pathway"], requested["priority"]) == (
                case_id, "protection", "urgent")

            view = (await api.read_until("unhcr", case_id, "referral", 200)).json()
            assert_minimised(view, shared)
            assert (view["person"]["given_name"], view["person"]["family_name"]) == (
                amina.given_name, amina.family_name)
            assert view["screening"]["fear_of_return"] is True

            steps = [RECEIVED, ACCEPTED, IN_PROGRESS, COMPLETED]
            for step in ("received", "accepted", "in_progress", "completed"):
                await api.move("unhcr", referral_id, step, note=amina.transition_note if step == "received" else None)
                sent = await api.queue("iom", role="sent", pathway="protection")
                assert sent[referral_id]["status"] == step, "IOM's queue shows each step"
            shown = await api.referral("iom", referral_id)
            assert [(h["to"], h["by"]) for h in shown["history"]] == [
                ("requested", "sender"), ("received", "recipient"), ("accepted", "recipient"),
                ("in_progress", "recipient"), ("completed", "recipient")]
            assert (await api.queue("unhcr", role="received", status="completed"))[referral_id]["case_id"] == case_id
            await unhcr_system.heard(referral_id, REQUESTED, *steps)

            # A completed referral no longer opens the case to UNHCR (once intake has heard it completed).
            await api.read_until("unhcr", case_id, "referral", 404)

        accesses = await api.audited_accesses(case_id)
        granted = [a for a in accesses if a["agency"] == unhcr_id and a["outcome"] == "success"]
        assert granted and all(
            a["purpose"] == "referral" and sorted(a["data_categories"]) == sorted(shared)
            and a["consent"] == {"consent_id": consent_id, "consent_version": 1, "basis": "recorded"}
            for a in granted), granted
        await api.prove_included(case_id, [a["index"] for a in accesses])
        return Outcome("main_pathway", [case_id], [referral_id])

    return await _with_api(net, run)


async def reverse_pathway(net: Network, people: People) -> Outcome:
    """UNHCR identifies a refugee as a victim of trafficking and refers him to IOM for assistance; then, with
    a new consent, to a shelter it chose from the suggestions."""
    yonas = people.refugee

    async def run(api: Api) -> Outcome:
        iom_id = api.id("iom")
        to_iom = ["demographics", "trafficking_experience", "protection_needs"]
        case = await api.register(
            "unhcr", yonas,
            person_facts={"gender": "masculine", "citizenship": "SD", "languages": ["ar", "en"],
                          "documents": ["refugee_id"]},
            screening=screening_body(yonas, trafficking_status="actual", identified_by="other_government",
                                     exploitation_types=["forced_labour"], migration_status="refugee",
                                     fear_of_return=True, needs=["case_management", "shelter", "mhpss"]),
            consent=consent_body(yonas, permit(iom_id, *to_iom), language="ar"))
        case_id = case["id"]
        async with CaseSystem(api, "iom") as iom_system:
            created = await api.refer("unhcr", case_id=case_id, to_agency=iom_id, pathway="assistance",
                                      service_type="case_management", priority="urgent",
                                      reason=yonas.referral_reason, shared_categories=to_iom)
            assert created.status_code == 201, created.text
            to_iom_id = created.json()["id"]
            await iom_system.heard(to_iom_id, REQUESTED)
            await api.move("iom", to_iom_id, "received")
            await api.move("iom", to_iom_id, "accepted")
            view = (await api.read_until("iom", case_id, "referral", 200)).json()
            assert_minimised(view, to_iom)
            assert view["screening"]["trafficking_status"] == "actual" and "given_name" not in view["person"]

        # A shelter in Italy near Palermo, speaking his languages; IOM (already working with him) left out.
        # Referral's copy of the directory is fed by the registry's events: right after start-up it may still
        # be filling, so ask until the shelters are there.
        found = await eventually(
            lambda: api.http.get(api.url("referral", "/referrals/suggestions"), headers=api.headers("unhcr"),
                                 params={"service_type": "shelter", "case_id": case_id, "languages": "ar,en",
                                         "country": "IT", "near": "38.1157,13.3615"}),
            lambda r: r.status_code != 200 or bool(r.json()["items"]))
        assert found.status_code == 200, found.text
        suggestions = found.json()["items"]
        assert suggestions and iom_id not in {s["agency_id"] for s in suggestions}
        chosen = next(s for s in suggestions if "accepting" in s["reasons"])
        assert chosen["taxonomy"] == "shelter" and "IT" in chosen["countries"], chosen
        shelter_id = chosen["agency_id"]
        assert shelter_id == api.id("shelter"), chosen  # Casa Sicura, the only shelter network in Italy

        to_shelter = ["identity", "contact", "protection_needs"]
        granted = await api.grant("unhcr", case_id, consent_body(
            yonas, permit(iom_id, *to_iom), permit(shelter_id, *to_shelter), language="ar"))
        assert granted.status_code == 201, granted.text
        assert (granted.json()["version"], granted.json()["witness"]) == (2, yonas.witness)
        async with CaseSystem(api, "shelter") as shelter_system:
            created = await api.refer("unhcr", case_id=case_id, service_id=chosen["service_id"], pathway="service",
                                      priority="urgent", reason="Needs a safe place to stay",
                                      shared_categories=to_shelter)
            assert created.status_code == 201, created.text
            to_shelter_id = created.json()["id"]
            assert (created.json()["to_agency"], created.json()["service_type"]) == (shelter_id, "shelter")
            await api.move("shelter", to_shelter_id, "received")
            await api.move("shelter", to_shelter_id, "accepted")
            await shelter_system.heard(to_shelter_id, REQUESTED, RECEIVED, ACCEPTED)
            view = (await api.read_until("shelter", case_id, "referral", 200)).json()
            assert_minimised(view, to_shelter)
            assert (view["person"]["given_name"], view["person"]["phone"]) == (yonas.given_name, yonas.phone)

        # The new consent still covers IOM's referral; UNHCR's queue holds both, each accepted.
        assert (await api.read("iom", case_id, "referral")).status_code == 200
        sent = await api.queue("unhcr", role="sent")
        assert {(sent[r]["pathway"], sent[r]["status"]) for r in (to_iom_id, to_shelter_id)} == {
            ("assistance", "accepted"), ("service", "accepted")}
        await api.audited_accesses(case_id)
        return Outcome("reverse_pathway", [case_id], [to_iom_id, to_shelter_id])

    return await _with_api(net, run)


async def child_safeguards(net: Network, people: People) -> Outcome:
    """A 14-year-old: consent by a guardian with her assent; a referral refused without a best-interests
    assessment and made after one; avrr refused without a best-interests determination, then refused while
    a protection referral is open (non-refoulement), and possible once it is closed."""
    joy = people.child

    async def run(api: Api) -> Outcome:
        iom_id, unhcr_id = api.id("iom"), api.id("unhcr")
        shared = ["demographics", "protection_needs"]
        case = await api.register(
            "shelter", joy,
            person_facts={"gender": "feminine", "citizenship": "NG", "languages": ["en"], "documents": ["none"]},
            screening=screening_body(joy, country_of_exploitation="IT", exploitation_types=["sexual_exploitation"],
                                     means_of_control=["threats", "isolation"], recruiter_relation="friend",
                                     migration_status="irregular_migrant",
                                     needs=["shelter", "child_protection.bia_bid", "avrr"], risk_level="high"),
            consent=consent_body(joy, permit(iom_id, *shared), permit(unhcr_id, *shared), grantor="guardian",
                                 child_assent=True))
        case_id = case["id"]
        assert (case["is_minor"], case["age_band"]) == (True, "9-17")
        # Her own consent, without a guardian, is refused.
        refused = await api.grant("shelter", case_id, consent_body(joy, permit(iom_id, *shared)))
        assert refused.status_code == 422 and refused.json()["errors"][0]["loc"][-1] == "grantor", refused.text

        protection = {"case_id": case_id, "to_agency": unhcr_id, "pathway": "protection",
                      "service_type": "protection.rsd", "priority": "urgent", "reason": "Child; may need protection",
                      "shared_categories": shared}
        refused = await api.refer("shelter", key=f"e2e-protection-{case_id}", **protection)
        assert (refused.status_code, problem_type(refused)) == (409, "child-bia-missing"), refused.text
        assert refused.json()["guard"] == "child-bia-missing"
        patched = await api.patch("shelter", case_id, {"bia_completed_at": datetime.now(UTC).date().isoformat()})
        assert patched.status_code == 200, patched.text
        created = await api.refer("shelter", key=f"e2e-protection-{case_id}", **protection)
        assert created.status_code == 201, created.text
        protection_id = created.json()["id"]

        avrr = {"case_id": case_id, "to_agency": iom_id, "pathway": "avrr", "service_type": "avrr",
                "priority": "normal", "reason": "Return requested by her guardian", "shared_categories": shared}
        refused = await api.refer("shelter", **avrr)
        assert (refused.status_code, problem_type(refused)) == (409, "child-bid-missing"), refused.text
        patched = await api.patch("shelter", case_id, {"bid_completed_at": datetime.now(UTC).date().isoformat()})
        assert patched.status_code == 200, patched.text
        refused = await api.refer("shelter", **avrr)
        assert (refused.status_code, problem_type(refused)) == (409, "non-refoulement"), refused.text

        # UNHCR finds no claim to pursue; with no protection referral open, return may be considered.
        await api.move("unhcr", protection_id, "received")
        await api.move("unhcr", protection_id, "rejected", reason_code="not-eligible")
        created = await api.refer("shelter", **avrr)
        assert created.status_code == 201, created.text
        assert created.json()["pathway"] == "avrr"
        return Outcome("child_safeguards", [case_id], [protection_id, created.json()["id"]])

    return await _with_api(net, run)


async def consent_withdrawal(net: Network, people: People) -> Outcome:
    """Consent withdrawn mid-referral: the recipient's next read is refused, the referral is cancelled, the
    recipient's case system is told on every channel, and the auditor sees the refused read."""
    grace = people.withdrawing

    async def run(api: Api) -> Outcome:
        unhcr_id = api.id("unhcr")
        shared = ["demographics", "protection_needs"]
        async with CaseSystem(api, "unhcr") as unhcr_system:
            case = await api.register(
                "iom", grace,
                person_facts={"gender": "feminine", "citizenship": "NG", "languages": ["en"],
                              "documents": ["passport"]},
                screening=screening_body(grace, country_of_exploitation="IT", fear_of_return=True,
                                         needs=["protection.rsd"]),
                consent=consent_body(grace, permit(unhcr_id, *shared)))
            case_id = case["id"]
            consent_id = (await api.consents("iom", case_id))[0]["id"]
            created = await api.refer("iom", case_id=case_id, to_agency=unhcr_id, pathway="protection",
                                      service_type="protection.rsd", priority="urgent",
                                      reason=grace.referral_reason, shared_categories=shared)
            assert created.status_code == 201, created.text
            referral_id = created.json()["id"]
            await api.move("unhcr", referral_id, "received", note=grace.transition_note)
            await api.read_until("unhcr", case_id, "referral", 200)

            withdrawn = await api.http.post(
                api.url("intake", f"/cases/{case_id}/consents/{consent_id}/withdraw"), headers=api.headers("iom"),
                json={"reason": grace.withdrawal_reason})
            assert withdrawn.status_code == 201, withdrawn.text
            assert (withdrawn.json()["kind"], withdrawn.json()["withdraws"]) == ("withdrawal", consent_id)
            # Not one read later: intake decides on the consent at the moment of the read.
            assert (await api.read("unhcr", case_id, "referral")).status_code == 404

            async def state() -> dict[str, Any]:
                return await api.referral("iom", referral_id)

            cancelled = await eventually(state, lambda s: s["status"] == "cancelled", seconds=30)
            assert (cancelled["status"], cancelled["history"][-1]["reason_code"], cancelled["history"][-1]["by"]) == (
                "cancelled", "consent-withdrawn", "system")
            await unhcr_system.heard(referral_id, REQUESTED, RECEIVED, CANCELLED)
            told = [e for e in unhcr_system.from_webhook(referral_id) if e["type"] == CANCELLED]
            assert told[0]["data"]["reason_code"] == "consent-withdrawn"
            assert (await api.queue("unhcr", role="received", status="cancelled"))[referral_id]

        history = await api.consents("iom", case_id)
        assert [(c["kind"], c["status"]) for c in history] == [("grant", "withdrawn"), ("withdrawal", "withdrawal")]
        assert history[1]["reason"] == grace.withdrawal_reason
        accesses = await api.audited_accesses(case_id)
        assert accesses[-2]["agency"] == unhcr_id and accesses[-2]["outcome"] == "denied"
        # The consent history, pseudonymous: granted, then withdrawn (each seen by intake and by its event).
        consents = (await api.audit(f"/audit/cases/{case_id}/consents"))["items"]
        changes = [c["action"] for c in consents if c["action"] != "consent.read"]
        assert list(dict.fromkeys(changes)) == ["consent.grant", "consent.withdraw"], consents
        assert all(c["resource_id"] == consent_id for c in consents if c["action"] == "consent.withdraw")
        await api.prove_included(case_id, [accesses[-2]["index"]])
        return Outcome("consent_withdrawal", [case_id], [referral_id])

    return await _with_api(net, run)


async def risk_to_life_override(net: Network, people: People) -> Outcome:
    """A threat to life: with no consent for the clinic, IOM discloses under an override that a second person
    approved; the clinic can then read what the referral shares, and auditors find the override listed."""
    lina = people.endangered

    async def run(api: Api) -> Outcome:
        clinic_id = api.id("clinic")
        shared = ["identity", "demographics", "protection_needs"]
        case = await api.register(
            "iom", lina,
            person_facts={"gender": "feminine", "citizenship": "SY", "languages": ["ar"], "documents": ["none"]},
            screening=screening_body(lina, country_of_exploitation="GR", exploitation_types=["sexual_exploitation"],
                                     means_of_control=["physical_abuse", "threats"], needs=["health.medical"],
                                     risk_level="high"),
            consent=consent_body(lina, permit(api.id("unhcr"), "demographics"), language="ar"))
        case_id = case["id"]
        to_clinic = {"case_id": case_id, "to_agency": clinic_id, "pathway": "service",
                     "service_type": "health.medical", "priority": "urgent", "reason": "Urgent medical care",
                     "shared_categories": shared}
        refused = await api.refer("iom", **to_clinic)
        assert (refused.status_code, problem_type(refused)) == (409, "consent-missing"), refused.text

        # Two people of IOM, each signed in as themselves at the registry (issue 20): a caseworker asks -- one who is
        # a supervisor too, so that approving their own request is refused for being theirs -- and another
        # supervisor approves.
        staff = Staff(net)
        requester, approver = ("caseworker", "supervisor"), ("supervisor",)
        asking = await asyncio.to_thread(staff.headers, "iom", requester)
        approving = await asyncio.to_thread(staff.headers, "iom", approver, name="approver")
        caseworker, supervisor = staff.person("iom", requester).id, staff.person("iom", approver, "approver").id
        url = api.url("intake", f"/cases/{case_id}/overrides")
        body = {"recipient_agency": clinic_id, "justification": lina.justification}
        by_system = await api.http.post(url, headers=api.headers("iom"), json=body)
        assert (by_system.status_code, problem_type(by_system)) == (403, "person-token-required"), by_system.text
        override = await api.http.post(url, headers=asking, json=body)
        assert override.status_code == 201, override.text
        assert (override.json()["state"], override.json()["requested_by"]) == ("pending", caseworker)
        approval = api.url("intake", f"/cases/{case_id}/overrides/{override.json()['id']}/approval")
        alone = await api.http.post(approval, headers=asking)
        assert (alone.status_code, problem_type(alone)) == (403, "self-approval"), alone.text
        approved = await api.http.post(approval, headers=approving)
        assert approved.status_code == 200, approved.text
        assert (approved.json()["state"], approved.json()["approved_by"]) == ("active", supervisor)

        created = await api.refer("iom", **to_clinic)
        assert created.status_code == 201, created.text
        assert created.json()["consent_id"] is None
        referral_id = created.json()["id"]
        view = (await api.read_until("clinic", case_id, "referral", 200)).json()
        assert_minimised(view, shared)

        # Auditors list every override (and the refused self-approval) with who asked and who approved.
        async def overrides() -> list[dict[str, Any]]:
            return await api.entries(action="consent.override", case_id=case_id)

        listed = await eventually(overrides, lambda es: {e["outcome"] for e in es} == {"success", "denied"})
        approved_entries = [e for e in listed if e["outcome"] == "success"]
        assert [(e["acting_user"], e["details"].get("reason"), e["details"].get("attested_by"))
                for e in listed if e["outcome"] == "denied"] == [(caseworker, "self-approval", "token")], listed
        requests = await api.entries(action="consent.override.request", case_id=case_id)
        assert sorted((e["outcome"], e["acting_user"]) for e in requests) == sorted(
            [("denied", "caseworker.1"), ("success", caseworker)]), requests
        assert approved_entries and all(
            e["agency"] == api.id("iom") and e["acting_user"] == e["details"].get("approver") == supervisor
            and e["details"].get("requested_by") == caseworker and e["details"].get("attested_by") == "token"
            for e in approved_entries), listed
        assert any(e["resource_id"] == override.json()["id"] for e in approved_entries), listed
        everywhere = await api.entries(action="consent.override")
        assert {e["index"] for e in listed} <= {e["index"] for e in everywhere}
        consents = await api.audit(f"/audit/cases/{case_id}/consents")
        assert "consent.override" in [c["action"] for c in consents["items"]]
        accesses = await api.audited_accesses(case_id)
        clinic_reads = {a["index"] for a in accesses if a["agency"] == clinic_id and a["outcome"] == "success"}
        recorded = [e for e in await api.entries(case_id=case_id, action="case.read") if e["index"] in clinic_reads]
        assert recorded and all(e["details"].get("override_id") == override.json()["id"] for e in recorded), recorded
        await api.prove_included(case_id, [*clinic_reads, *(e["index"] for e in approved_entries)])
        return Outcome("risk_to_life_override", [case_id], [referral_id])

    return await _with_api(net, run)


async def overdue_referral(net: Network, people: People) -> Outcome:
    """An emergency referral nobody acknowledges becomes overdue: flagged once, announced to both parties'
    case systems, and shown in the sender's and the recipient's work queues."""
    mariam = people.waiting

    async def run(api: Api) -> Outcome:
        iom_id, legal_id = api.id("iom"), api.id("legalaid")
        shared = ["demographics", "trafficking_experience"]
        case = await api.register(
            "iom", mariam,
            person_facts={"gender": "feminine", "citizenship": "ML", "languages": ["fr"], "documents": ["none"]},
            screening=screening_body(mariam, country_of_exploitation="GR", needs=["legal.counselling"]),
            consent=consent_body(mariam, permit(legal_id, *shared), language="fr"))
        case_id = case["id"]
        created = await api.refer("iom", case_id=case_id, to_agency=legal_id, pathway="service",
                                  service_type="legal.counselling", priority="emergency",
                                  reason=mariam.referral_reason, shared_categories=shared)
        assert created.status_code == 201, created.text
        referral = created.json()
        referral_id = referral["id"]
        window = datetime.fromisoformat(referral["due_at"]) - datetime.fromisoformat(referral["history"][0]["at"])
        assert window == EMERGENCY_ACKNOWLEDGE_WITHIN, (
            f"emergency referrals are due after {window}: start the stack with SCENARIO_ENV")

        async def flagged() -> dict[str, Any]:
            return await api.referral("iom", referral_id)

        shown = await eventually(flagged, lambda r: r["overdue_at"] is not None, seconds=30)
        assert (shown["status"], shown["overdue"]) == ("requested", True), shown
        for name, role in (("iom", "sent"), ("legalaid", "received")):
            late = await api.queue(name, role=role, overdue="true")
            assert late[referral_id]["overdue"] is True, f"{name}'s {role} queue"
            assert referral_id not in await api.queue(name, role=role, overdue="false")
        for agency_id in (iom_id, legal_id):
            records = await net.topic(f"refnet.delivery.{agency_id}", until=lambda rs: any(
                r.key == referral_id.encode() and ce_headers(r)["ce_type"] == OVERDUE for r in rs))
            overdue = [r for r in records if r.key == referral_id.encode() and ce_headers(r)["ce_type"] == OVERDUE]
            assert len({ce_headers(r)["ce_id"] for r in overdue}) == 1, f"one overdue event for {agency_id}"

        # Acknowledged late, it leaves the open state; the flag stays, for the statistics.
        moved = await api.move("legalaid", referral_id, "received")
        assert moved["overdue"] is True
        return Outcome("overdue_referral", [case_id], [referral_id])

    return await _with_api(net, run)


async def erasure(net: Network, people: People) -> Outcome:
    """The person asks to be forgotten: after erasure nothing personal is readable through any API, the
    referral relying on the case is cancelled, and the audit trail still verifies -- the log before the
    erasure is a prefix of the log after (a consistency proof between two signed checkpoints)."""
    elena = people.erased

    async def run(api: Api) -> Outcome:
        unhcr_id = api.id("unhcr")
        shared = ["identity", "contact", "demographics", "protection_needs"]
        case = await api.register(
            "iom", elena,
            person_facts={"gender": "feminine", "citizenship": "RO", "languages": ["ro", "it"],
                          "documents": ["national_id"]},
            screening=screening_body(elena, country_of_exploitation="IT", migration_status="other",
                                     fear_of_return=True, needs=["protection.rsd", "mhpss"]),
            consent=consent_body(elena, permit(unhcr_id, *shared), language="ro"))
        case_id = case["id"]
        patched = await api.patch("iom", case_id, {"person": {"address": elena.address},
                                                   "notes": elena.follow_up_notes})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["person"]["address"], patched.json()["screening"]["notes"]) == (
            elena.address, elena.follow_up_notes)
        created = await api.refer("iom", case_id=case_id, to_agency=unhcr_id, pathway="protection",
                                  service_type="protection.rsd", priority="urgent", reason=elena.referral_reason,
                                  shared_categories=shared)
        assert created.status_code == 201, created.text
        referral_id = created.json()["id"]
        assert (await api.read_until("unhcr", case_id, "referral", 200)).json()["person"]["email"] == elena.email
        await api.audited_accesses(case_id)  # the log holds everything so far
        before = await api.signed_checkpoint()

        erased = await api.http.post(api.url("intake", f"/cases/{case_id}/erase"), headers=api.headers("iom"))
        assert (erased.status_code, erased.json()["status"]) == (202, "erased"), erased.text

        # Nothing personal is left to read, for the owner or anyone.
        own = (await api.read("iom", case_id, "case_management")).json()
        assert own["status"] == "erased"
        assert set(own["person"]) <= {"gender", "citizenship"}, own
        assert own["screening"].get("notes") is None, own
        assert (await api.read("unhcr", case_id, "referral")).status_code == 404
        history = await api.consents("iom", case_id)
        assert history and not any({"witness", "capacity_note", "reason"} & set(c) for c in history), history
        # referral destroys the case's key when it hears of the erasure: the reason goes with it
        shredded = await eventually(lambda: api.http.get(api.url("referral", f"/referrals/{referral_id}"),
                                                         headers=api.headers("iom")),
                                    lambda r: r.status_code == 200 and r.json()["free_text"] == "erased")
        assert (shredded.json()["reason"], shredded.json()["status"]) == (None, "cancelled"), shredded.text
        listed = await api.http.get(api.url("intake", "/cases"), headers=api.headers("iom"),
                                    params={"status": "erased", "limit": 500})
        assert case_id in {c["id"] for c in listed.json()["items"]}
        changed = await api.patch("iom", case_id, {"notes": elena.notes})
        assert (changed.status_code, problem_type(changed)) == (409, "case-erased")
        regranted = await api.grant("iom", case_id, consent_body(elena, permit(unhcr_id, "demographics")))
        assert (regranted.status_code, problem_type(regranted)) == (409, "case-erased")
        again = await api.refer("iom", case_id=case_id, to_agency=unhcr_id, pathway="protection",
                                service_type="protection.rsd", priority="urgent", reason="Fears return",
                                shared_categories=["demographics"])
        assert again.status_code == 404, again.text

        async def state() -> dict[str, Any]:
            return await api.referral("iom", referral_id)

        cancelled = await eventually(state, lambda s: s["status"] == "cancelled", seconds=30)
        assert cancelled["history"][-1]["reason_code"] == "case-erased"

        # The pseudonymous trail stays, holds nothing personal, and still verifies.
        async def trail() -> list[dict[str, Any]]:
            return await api.entries(case_id=case_id)

        entries = await eventually(trail, lambda es: "case.erase" in {e["action"] for e in es})
        text = json.dumps(entries)
        assert not [n for n in elena.texts() if n in text], "personal data in the audit log"
        verified = await api.audit("/audit/verify")
        assert verified["ok"] is True, verified
        after = await api.signed_checkpoint(at_least=max(e["index"] for e in entries) + 1)
        assert after.tree_size > before.tree_size
        proof = await api.audit("/audit/proofs/consistency", first=before.tree_size, second=after.tree_size)
        assert (proof["first_root_hash"], proof["second_root_hash"]) == (before.root.hex(), after.root.hex())
        path = [bytes.fromhex(h) for h in proof["path"]]
        assert consistent(before.tree_size, after.tree_size, before.root, after.root, path)
        assert not consistent(before.tree_size, after.tree_size, bytes(32), after.root, path)
        await api.audited_accesses(case_id)
        return Outcome("erasure", [case_id], [referral_id])

    return await _with_api(net, run)


ALL_SCENARIOS: list[Callable[[Network, People], Awaitable[Outcome]]] = [
    main_pathway, reverse_pathway, child_safeguards, consent_withdrawal, risk_to_life_override, overdue_referral,
    erasure,
]
