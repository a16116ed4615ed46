"""The clearance contract, written once: what referral relies on when it asks intake whether a case may be
referred (docs/domain.md rules 1, 2, 4, 5 and 6), as referral's ``ClearanceClient`` answers it.

Every test runs against each implementation referral is run with (the ``world`` fixture):

- ``fake``: the fake intake that referral's other tests refer cases against (``tests/support/fake_intake.py``);
- ``intake``: the real intake, its app in-process on its own database, registering cases, consents,
  overrides and erasures through its own API.

Both are reached through referral's real ``HttpClearanceClient``, so what is checked is the client's answer
(``Clearance``, ``CaseNotFound``, ``ClearanceUnavailable``). A fake that passes answers as intake does, so the
rest of referral's suite means something; a change to intake that referral's assumptions do not survive fails
here rather than in production.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import pytest

from services.intake.app import create_app as create_intake_app
from services.intake.settings import IntakeSettings
from services.referral.clearance import (
    CaseNotFound,
    Clearance,
    ClearanceClient,
    ClearanceRequest,
    ClearanceUnavailable,
    HttpClearanceClient,
)
from shared.crypto import MasterKey, write_key_file
from shared.envelope import Event, encode
from shared.kafka import make_producer
from shared.migrations import upgrade
from shared.topics import REGISTRY_EVENTS
from tests.conftest import Infra
from tests.support.fake_intake import SERVICE_TOKEN, FakeIntake
from tests.support.issuer import LocalIssuer

Age = Literal["adult", "child", "unknown"]
OverrideState = Literal["pending", "active", "revoked"]
SHARED = ["identity", "demographics"]
CONSENTED = ["identity", "demographics", "protection_needs"]


class ClearanceWorld(Protocol):
    """An intake referral can ask, and the means to put cases in the states the contract speaks of."""

    client: ClearanceClient

    async def new_case(self, owner: str, *, consent_to: str | None, age: Age = "adult",
                       fear_of_return: bool = False) -> str:
        """A case of ``owner`` with one consent for the referral purpose, to ``consent_to`` (None: to any
        agency), of ``CONSENTED``."""

    async def record_bia(self, case_id: str, owner: str) -> None: ...

    async def withdraw_consent(self, case_id: str, owner: str) -> None: ...

    async def override(self, case_id: str, owner: str, recipient: str, state: OverrideState = "active") -> None:
        """A risk-to-life disclosure to ``recipient`` without consent, requested by one person and (``state``)
        approved by a second, or revoked after approval, or still pending."""

    async def erase(self, case_id: str, owner: str) -> None: ...

    async def suspend(self, agency: str) -> None:
        """The registry suspended ``agency`` (intake may learn of it a moment later)."""

    def with_token(self, token: str) -> HttpClearanceClient:
        """This intake's client, presenting ``token``."""


class FakeWorld:
    def __init__(self) -> None:
        self.intake = FakeIntake()
        self.client = self.with_token(SERVICE_TOKEN)

    def with_token(self, token: str) -> HttpClearanceClient:
        return HttpClearanceClient("http://intake.test", token, transport=httpx.MockTransport(self.intake.handle))

    async def new_case(self, owner: str, *, consent_to: str | None, age: Age = "adult",
                       fear_of_return: bool = False) -> str:
        case_id, _ = self.intake.add_case(owner, consent_to=consent_to, categories=set(CONSENTED),
                                          is_minor={"adult": False, "child": True, "unknown": None}[age],
                                          fear_of_return=fear_of_return)
        return case_id

    async def record_bia(self, case_id: str, owner: str) -> None:
        self.intake.cases[case_id].bia_completed = True

    async def withdraw_consent(self, case_id: str, owner: str) -> None:
        self.intake.cases[case_id].consents.clear()

    async def override(self, case_id: str, owner: str, recipient: str, state: OverrideState = "active") -> None:
        if state == "active":  # a pending or revoked override is in force never: the fake knows none
            self.intake.cases[case_id].overrides[recipient] = "override-" + uuid.uuid4().hex[:12]

    async def erase(self, case_id: str, owner: str) -> None:
        self.intake.erased.add(case_id)

    async def suspend(self, agency: str) -> None:
        self.intake.suspended.add(agency)


@dataclass
class IntakeWorld:
    intake: httpx.AsyncClient  # intake's API, in-process
    transport: httpx.AsyncBaseTransport  # under it
    issuer: LocalIssuer
    bootstrap: str
    client: ClearanceClient

    def with_token(self, token: str) -> HttpClearanceClient:
        return HttpClearanceClient("http://intake.test", token, transport=self.transport)

    def _headers(self, agency: str, *, acting_user: str | None = None) -> dict[str, str]:
        headers = self.issuer.auth_headers(f"client-{agency}", agency, "cases:read cases:write consent:write",
                                           acting_user=acting_user)
        return headers | {"X-Purpose": "case_management"}

    async def new_case(self, owner: str, *, consent_to: str | None, age: Age = "adult",
                       fear_of_return: bool = False) -> str:
        birth = {"adult": "1990-04-12", "child": f"{datetime.now(UTC).year - 12}-04-12", "unknown": None}[age]
        consent: dict[str, Any] = {
            "grantor": "self" if age == "adult" else "guardian", "method": "written", "language": "ar",
            "interpreter_used": False,
            "provisions": [{"purpose": "referral", "recipient_agency": consent_to, "data_categories": CONSENTED,
                            "decision": "permit"}],
            "valid_until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
            "checklist": {"purpose_explained": True, "use_explained": True, "research_use_explained": True,
                          "access_right_explained": True, "retention_explained": True,
                          "withdrawal_explained": True},
        }
        if age != "adult":
            consent["child_assent"] = True
        body = {
            "person": {"given_name": "Amina", "family_name": "Tesfay", "birth_date": birth, "gender": "feminine",
                       "citizenship": "ER", "languages": ["ti", "ar"], "phone": None, "email": None,
                       "documents": ["none"]},
            "screening": {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "LY",
                          "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage"],
                          "recruiter_relation": "other", "migration_status": "asylum_seeker",
                          "fear_of_return": fear_of_return, "needs": ["shelter"], "risk_level": "high"},
            "initial_consent": consent,
        }
        created = await self.intake.post("/cases", json=body, headers=self._headers(owner))
        assert created.status_code == 201, created.text
        case_id: str = created.json()["id"]
        return case_id

    async def record_bia(self, case_id: str, owner: str) -> None:
        patched = await self.intake.patch(f"/cases/{case_id}", json={"bia_completed_at": "2024-01-02"},
                                          headers=self._headers(owner))
        assert patched.status_code == 200, patched.text

    async def withdraw_consent(self, case_id: str, owner: str) -> None:
        listed = await self.intake.get(f"/cases/{case_id}/consents", headers=self._headers(owner))
        assert listed.status_code == 200, listed.text
        consent_id = listed.json()["items"][0]["id"]
        withdrawn = await self.intake.post(f"/cases/{case_id}/consents/{consent_id}/withdraw", json={},
                                           headers=self._headers(owner))
        assert withdrawn.status_code == 201, withdrawn.text

    async def override(self, case_id: str, owner: str, recipient: str, state: OverrideState = "active") -> None:
        # Each step by a person with their own token: a caseworker asks, a supervisor approves (issue 20).
        requester = self.issuer.person_headers(agency=owner, roles=("caseworker",))
        made = await self.intake.post(
            f"/cases/{case_id}/overrides", headers=requester,
            json={"recipient_agency": recipient,
                  "justification": "credible threat to life reported by shelter staff tonight"})
        assert made.status_code == 201, made.text
        url = f"/cases/{case_id}/overrides/{made.json()['id']}"
        if state != "pending":
            approved = await self.intake.post(f"{url}/approval",
                                              headers=self.issuer.person_headers(agency=owner, roles=("supervisor",)))
            assert approved.status_code == 200, approved.text
        if state == "revoked":
            revoked = await self.intake.post(f"{url}/revocation", headers=requester)
            assert revoked.status_code == 200, revoked.text

    async def erase(self, case_id: str, owner: str) -> None:
        erased = await self.intake.post(f"/cases/{case_id}/erase", headers=self._headers(owner))
        assert erased.status_code == 202, erased.text

    async def suspend(self, agency: str) -> None:
        # Through the broker, as the registry says it: intake's own consumer applies it.
        event = Event(id=uuid.uuid4().hex, source="/refnet/registry", type="org.refnet.agency.suspended.v1",
                      subject=None, partition_key=agency, time=datetime.now(UTC),
                      data={"agency_id": agency, "name": "An agency", "kind": "ngo", "country": "SD",
                            "status": "suspended", "scopes": []})
        key, value, headers = encode(event)
        producer = make_producer(self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(REGISTRY_EVENTS, value=value, key=key, headers=headers)
        finally:
            await producer.stop()


@pytest.fixture(scope="module")
async def real_intake(infra: Infra, new_database: Callable[[str], str],
                      issuer: LocalIssuer) -> AsyncIterator[IntakeWorld]:
    url = new_database("intake")
    await asyncio.to_thread(upgrade, "intake", url)
    key_file = Path(tempfile.mkdtemp(prefix="intake-keys-")) / "master.b64"
    write_key_file(key_file, MasterKey.generate())
    app = create_intake_app(IntakeSettings(
        database_url=url, kafka_bootstrap=infra.bootstrap, log_json=False, log_level="WARNING",
        issuer=issuer.issuer, jwks_url=issuer.jwks_url, master_key_file=str(key_file), relay_poll_seconds=0.2,
        consumer_group=f"intake-contract-{uuid.uuid4().hex[:8]}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as api:
            # referral's service token, as the registry's client credentials grant would give it.
            token = issuer.mint("referral-service", "referral-service", "cases:clearance", exp_in=3600)
            client = HttpClearanceClient("http://intake.test", token, transport=transport)
            try:
                yield IntakeWorld(api, transport, issuer, infra.bootstrap, client)
            finally:
                await client.aclose()


@pytest.fixture(params=["fake", "intake"])
def world(request: pytest.FixtureRequest) -> ClearanceWorld:
    if request.param == "fake":
        return FakeWorld()
    real: IntakeWorld = request.getfixturevalue("real_intake")
    return real


def agency() -> str:
    return "agency-" + uuid.uuid4().hex[:10]


async def ask(world: ClearanceWorld, case_id: str, owner: str, to: str, categories: list[str] | None = None,
              pathway: str = "service") -> Clearance:
    return await world.client.clear(ClearanceRequest(
        case_id=case_id, requesting_agency=owner, to_agency=to, pathway=pathway,
        data_categories=sorted(categories or SHARED)))


# --- consent -------------------------------------------------------------------------------------------------


async def test_a_consented_referral_is_permitted_with_the_consent_it_rests_on(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    answer = await ask(world, case_id, owner, recipient)
    assert answer.permitted is True
    assert answer.reason is None and answer.override_id is None
    # referral records both, and compares the version with the consent events it hears of later (rule 2).
    assert answer.consent_id and answer.consent_version == 1
    assert answer.facts.status == "active"


async def test_a_category_the_consent_does_not_cover_is_consent_missing(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    answer = await ask(world, case_id, owner, recipient, ["identity", "contact"])
    assert (answer.permitted, answer.reason, answer.consent_id) == (False, "consent-missing", None)


async def test_another_recipient_than_the_consented_one_is_consent_missing(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    answer = await ask(world, case_id, owner, agency())
    assert (answer.permitted, answer.reason) == (False, "consent-missing")


async def test_a_consent_to_any_recipient_permits_each(world: ClearanceWorld) -> None:
    owner = agency()
    case_id = await world.new_case(owner, consent_to=None)
    for recipient in (agency(), agency()):
        assert (await ask(world, case_id, owner, recipient)).permitted is True


async def test_a_withdrawn_consent_permits_nothing(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    await world.withdraw_consent(case_id, owner)
    answer = await ask(world, case_id, owner, recipient)
    assert (answer.permitted, answer.reason, answer.consent_id) == (False, "consent-missing", None)


async def test_an_override_permits_without_consent_and_says_so(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=agency())  # consent to someone else only
    assert (await ask(world, case_id, owner, recipient)).permitted is False
    await world.override(case_id, owner, recipient)
    answer = await ask(world, case_id, owner, recipient)
    assert (answer.permitted, answer.reason) == (True, "override")
    # No consent behind it: referral keeps consent_id None, and consent events never cancel such a referral.
    assert answer.override_id and answer.consent_id is None and answer.consent_version is None


@pytest.mark.parametrize("state", ["pending", "revoked"])
async def test_only_an_approved_unrevoked_override_permits(world: ClearanceWorld, state: OverrideState) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=agency())
    await world.override(case_id, owner, recipient, state)
    answer = await ask(world, case_id, owner, recipient)
    assert (answer.permitted, answer.reason, answer.override_id) == (False, "consent-missing", None)


# --- who may ask about which case ------------------------------------------------------------------------------


async def test_an_unknown_case_is_not_found(world: ClearanceWorld) -> None:
    with pytest.raises(CaseNotFound):
        await ask(world, "case-" + uuid.uuid4().hex[:12], agency(), agency())


async def test_another_agencys_case_is_not_found(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    with pytest.raises(CaseNotFound):  # not "forbidden": the case's existence must not leak
        await ask(world, case_id, agency(), recipient)


async def test_a_token_intake_does_not_accept_is_unavailable_never_an_answer(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    refused = world.with_token("not-a-token-intake-accepts")
    try:
        with pytest.raises(ClearanceUnavailable):
            await refused.clear(ClearanceRequest(case_id=case_id, requesting_agency=owner, to_agency=recipient,
                                                 pathway="service", data_categories=SHARED))
    finally:
        await refused.aclose()


# --- erasure and suspension ------------------------------------------------------------------------------------


async def test_an_erased_case_is_refused_as_erased(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    await world.erase(case_id, owner)
    answer = await ask(world, case_id, owner, recipient)
    assert (answer.permitted, answer.reason, answer.consent_id) == (False, "case-erased", None)
    assert answer.facts.status == "erased"


async def test_a_suspended_recipient_is_refused_whatever_the_consent(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient)
    assert (await ask(world, case_id, owner, recipient)).permitted is True
    await world.suspend(recipient)
    deadline = asyncio.get_running_loop().time() + 30
    while (answer := await ask(world, case_id, owner, recipient)).reason != "recipient-suspended":
        assert answer.permitted is True, answer  # until intake hears of it, the consent still answers
        assert asyncio.get_running_loop().time() < deadline, "intake did not learn of the suspension in 30 s"
        await asyncio.sleep(0.2)
    assert answer.permitted is False and answer.consent_id is None


# --- the case's facts (the child safeguards and non-refoulement) ---------------------------------------------


@pytest.mark.parametrize("fear", [True, False])
async def test_an_adults_facts(world: ClearanceWorld, fear: bool) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient, fear_of_return=fear)
    facts = (await ask(world, case_id, owner, recipient, pathway="avrr")).facts
    assert (facts.is_minor, facts.bia_completed, facts.bid_completed, facts.fear_of_return) == (
        False, False, False, fear)


async def test_a_child_is_a_minor_and_its_best_interests_assessment_is_reported(world: ClearanceWorld) -> None:
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient, age="child")
    facts = (await ask(world, case_id, owner, recipient)).facts
    assert (facts.is_minor, facts.bia_completed) == (True, False)
    await world.record_bia(case_id, owner)
    facts = (await ask(world, case_id, owner, recipient)).facts
    assert (facts.is_minor, facts.bia_completed, facts.bid_completed) == (True, True, False)


async def test_a_person_of_unknown_age_is_a_minor(world: ClearanceWorld) -> None:
    """Rule 4: presumed a child, so the child guards apply; never a reason to wait for an age."""
    owner, recipient = agency(), agency()
    case_id = await world.new_case(owner, consent_to=recipient, age="unknown")
    assert (await ask(world, case_id, owner, recipient)).facts.is_minor is True
