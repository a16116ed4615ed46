"""The risk-to-life override as two people's authenticated act (docs/domain.md rule 6, issue 20): requested by one
person with a justification, pending and without effect until a different supervisor of the same agency
approves with their own token, in force for a bounded time, revocable -- and every step an audit entry naming
its person. A system's token alone can do none of it (the attack of issue 20: one system token, X-Acting-User
x1, "approver": "x2")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from services.intake.store import OverrideRow
from shared.db import unit_of_work
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.intake.conftest import Intake, agency, case_body, consent_body, topic_events
from tests.support.issuer import new_person

JUSTIFICATION = "credible threat to life reported by shelter staff tonight"


class Agency:
    """One agency's people: two caseworkers and two supervisors, each with their own tokens."""

    def __init__(self, intake: Intake, name: str | None = None) -> None:
        self.intake, self.id = intake, name or agency()
        self.alice, self.carol, self.sam, self.sue = new_person(), new_person(), new_person(), new_person()

    def caseworker(self, person: str | None = None, **options: Any) -> dict[str, str]:
        return self.intake.issuer.person_headers(person or self.alice, self.id, ("caseworker",), **options)

    def supervisor(self, person: str | None = None, **options: Any) -> dict[str, str]:
        return self.intake.issuer.person_headers(person or self.sam, self.id, ("supervisor",), **options)

    def system(self, scope: str = "cases:read cases:write consent:write overrides:approve",
               acting_user: str | None = "x1") -> dict[str, str]:
        return self.intake.headers(self.id, scope, acting_user=acting_user)


async def _request(intake: Intake, case_id: str, headers: dict[str, str], recipient: str) -> httpx.Response:
    return await intake.client.post(f"/cases/{case_id}/overrides", headers=headers,
                                    json={"recipient_agency": recipient, "justification": JUSTIFICATION})


def _slug(response: httpx.Response) -> str:
    return str(response.json()["type"]).rsplit(":", 1)[-1]


async def _case_referred_without_consent(intake: Intake, owner: Agency, recipient: str) -> str:
    created = await intake.register(owner.id, case_body())
    await intake.refer(created["id"], owner.id, recipient, ["contact"], consent_id=None)
    return str(created["id"])


async def test_a_system_token_alone_can_neither_request_nor_approve(intake: Intake) -> None:
    """Issue 20's attack: one agency's system token, X-Acting-User x1, "approver": "x2". Before, the override
    beat the person's missing consent and the recipient read the case for 72 hours."""
    owner, recipient = Agency(intake), agency()
    case_id = await _case_referred_without_consent(intake, owner, recipient)
    attack = await intake.client.post(f"/cases/{case_id}/overrides", headers=owner.system(), json={
        "recipient_agency": recipient, "justification": JUSTIFICATION, "approver": "x2"})
    assert attack.status_code in (403, 422), attack.text
    request = await _request(intake, case_id, owner.system(), recipient)
    assert (request.status_code, _slug(request)) == (403, "person-token-required"), request.text
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404

    # Nor can a system approve what a person requested -- even holding the approval scope.
    pending = await _request(intake, case_id, owner.caseworker(), recipient)
    assert pending.status_code == 201, pending.text
    approval = await intake.client.post(f"/cases/{case_id}/overrides/{pending.json()['id']}/approval",
                                        headers=owner.system())
    assert (approval.status_code, _slug(approval)) == (403, "person-token-required"), approval.text
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404


async def test_request_then_approval_by_another_supervisor(intake: Intake) -> None:
    owner, other, recipient = Agency(intake), Agency(intake), agency()
    case_id = await _case_referred_without_consent(intake, owner, recipient)
    requested = await _request(intake, case_id, owner.caseworker(), recipient)
    assert requested.status_code == 201, requested.text
    override = requested.json()
    assert (override["state"], override["requested_by"], override["approved_by"]) == ("pending", owner.alice, None)
    assert JUSTIFICATION not in requested.text
    approval_url = f"/cases/{case_id}/overrides/{override['id']}/approval"

    # Pending: no effect.
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404

    refusals = [
        # the requester, even as a supervisor
        (owner.supervisor(owner.alice), 403, "self-approval"),
        # another caseworker: not even the scope
        (owner.caseworker(owner.carol), 403, "insufficient-scope"),
        # a caseworker whose token claims the approval scope: the role is what counts
        (owner.caseworker(owner.carol, scope="cases:write overrides:approve"), 403, "supervisor-required"),
        # a supervisor signed in without a second factor
        (owner.supervisor(owner.sue, amr=("pwd",), acr="urn:refnet:acr:pwd"), 403, "second-factor-required"),
        # another agency's supervisor: the case does not exist for them
        (other.supervisor(), 404, "not-found"),
        # a header naming someone else than the token's person
        (owner.supervisor(acting_user=owner.sue), 403, "acting-user-contradicts-token"),
    ]
    for headers, status, slug in refusals:
        refused = await intake.client.post(approval_url, headers=headers)
        assert (refused.status_code, _slug(refused)) == (status, slug), refused.text
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404

    approved = await intake.client.post(approval_url, headers=owner.supervisor())
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["state"], body["requested_by"], body["approved_by"]) == ("active", owner.alice, owner.sam)
    assert body["valid_until"] is not None and body["approved_at"] is not None

    # Approved: the recipient reads what the referral shares, and the read names the override.
    read = await intake.read(case_id, recipient, "referral")
    assert read.status_code == 200, read.text
    assert set(read.json()["person"]) == {"phone", "email", "address"}
    again = await intake.client.post(approval_url, headers=owner.supervisor(owner.sue))
    assert (again.status_code, _slug(again)) == (409, "override-active")

    listed = await intake.client.get(f"/cases/{case_id}/overrides", headers=owner.caseworker())
    assert listed.status_code == 200, listed.text
    assert [(o["id"], o["requested_by"], o["approved_by"], o["state"]) for o in listed.json()["items"]] == [
        (override["id"], owner.alice, owner.sam, "active")]
    stranger = await intake.client.get(f"/cases/{case_id}/overrides", headers=other.caseworker())
    assert stranger.status_code == 404

    # The approval's event names both people, each as their token said; nothing of the justification.
    [event] = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                 lambda e: e.partition_key == case_id and "overridden" in e.type)
    assert (event.data["acting_user"], event.data["approver"], event.data["requested_by"],
            event.data["attested_by"]) == (owner.sam, owner.sam, owner.alice, "token")
    assert event.data["override_id"] == override["id"] and JUSTIFICATION not in str(event.data)
    # The request and every refusal are access records naming their person and the token that proved them.
    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("case_id") == case_id
                                 and str(e.data["action"]).startswith("consent.override"), expect=6, timeout=10)
    by_action = {(r.data["action"], r.data["outcome"], r.data["acting_user"]): r.data for r in records}
    request_record = by_action[("consent.override.request", "success", owner.alice)]
    assert request_record["attested_by"] == "token" and request_record["resource_id"] == override["id"]
    assert by_action[("consent.override", "denied", owner.alice)]["details"]["reason"] == "self-approval"
    assert by_action[("consent.override", "denied", owner.carol)]["details"]["reason"] == "supervisor-required"
    [reader] = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("case_id") == case_id
                                  and e.data.get("agency") == recipient and e.data["outcome"] == "success")
    assert reader.data["details"]["override_id"] == override["id"]


async def test_revocation_stops_disclosure_at_once(intake: Intake) -> None:
    owner, recipient = Agency(intake), agency()
    case_id = await _case_referred_without_consent(intake, owner, recipient)
    override_id = (await _request(intake, case_id, owner.caseworker(), recipient)).json()["id"]
    url = f"/cases/{case_id}/overrides/{override_id}"
    assert (await intake.client.post(f"{url}/approval", headers=owner.supervisor())).status_code == 200
    assert (await intake.read(case_id, recipient, "referral")).status_code == 200

    for headers, slug in ((owner.caseworker(owner.carol), "revoker-not-allowed"),
                          (owner.system(), "person-token-required")):
        refused = await intake.client.post(f"{url}/revocation", headers=headers)
        assert (refused.status_code, _slug(refused)) == (403, slug), refused.text
    revoked = await intake.client.post(f"{url}/revocation", headers=owner.caseworker())  # the requester
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["state"], revoked.json()["revoked_by"]) == ("revoked", owner.alice)
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404

    after = await intake.client.post(f"{url}/approval", headers=owner.supervisor(owner.sue))
    assert (after.status_code, _slug(after)) == (409, "override-revoked")
    twice = await intake.client.post(f"{url}/revocation", headers=owner.supervisor())
    assert (twice.status_code, _slug(twice)) == (409, "override-revoked")
    [record] = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("case_id") == case_id
                                  and e.data["action"] == "consent.override.revoke" and e.data["outcome"] == "success")
    assert (record.data["acting_user"], record.data["attested_by"]) == (owner.alice, "token")

    # A supervisor may revoke a pending request too.
    pending = (await _request(intake, case_id, owner.caseworker(), recipient)).json()["id"]
    by_supervisor = await intake.client.post(f"/cases/{case_id}/overrides/{pending}/revocation",
                                             headers=owner.supervisor(owner.sue))
    assert by_supervisor.status_code == 200 and by_supervisor.json()["revoked_by"] == owner.sue


async def _shift(intake: Intake, override_id: str, **moved: timedelta) -> None:
    """Move the override's times into the past, as if that much time had gone by."""
    async with unit_of_work(intake.app.state.runtime.sessions) as session:
        values = {name: getattr(OverrideRow, name) - delta for name, delta in moved.items()}
        await session.execute(update(OverrideRow).where(OverrideRow.id == override_id).values(values))


async def test_an_expired_override_neither_discloses_nor_can_be_approved(intake: Intake) -> None:
    owner, recipient = Agency(intake), agency()
    case_id = await _case_referred_without_consent(intake, owner, recipient)
    validity = timedelta(hours=intake.app.state.runtime.settings.override_valid_hours)

    # A request nobody approved within the validity lapses.
    stale = (await _request(intake, case_id, owner.caseworker(), recipient)).json()["id"]
    await _shift(intake, stale, created_at=validity)
    late = await intake.client.post(f"/cases/{case_id}/overrides/{stale}/approval", headers=owner.supervisor())
    assert (late.status_code, _slug(late)) == (409, "override-expired"), late.text

    # An approved one ends at its valid_until: the recipient reads no more.
    fresh = (await _request(intake, case_id, owner.caseworker(), recipient)).json()["id"]
    approved = await intake.client.post(f"/cases/{case_id}/overrides/{fresh}/approval", headers=owner.supervisor())
    assert approved.status_code == 200
    assert (await intake.read(case_id, recipient, "referral")).status_code == 200
    await _shift(intake, fresh, created_at=validity, approved_at=validity, valid_until=validity)
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404
    listed = (await intake.client.get(f"/cases/{case_id}/overrides", headers=owner.caseworker())).json()["items"]
    assert {o["id"]: o["state"] for o in listed} == {stale: "expired", fresh: "expired"}
    revoke = await intake.client.post(f"/cases/{case_id}/overrides/{fresh}/revocation", headers=owner.supervisor())
    assert (revoke.status_code, _slug(revoke)) == (409, "override-expired")


async def test_a_systems_asserted_user_is_recorded_as_asserted(intake: Intake) -> None:
    owner = Agency(intake)
    created = await intake.register(owner.id, case_body())
    purpose = {"X-Purpose": "case_management"}
    by_system = await intake.client.get(f"/cases/{created['id']}", headers=owner.system(acting_user="officer.7")
                                        | purpose)
    by_person = await intake.client.get(f"/cases/{created['id']}", headers=owner.caseworker() | purpose)
    assert by_system.status_code == by_person.status_code == 200
    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("case_id") == created["id"]
                                 and e.data["action"] == "case.read", expect=2)
    assert {(r.data["acting_user"], r.data["attested_by"]) for r in records} == {
        ("officer.7", "system"), (owner.alice, "token")}
    # A consent version says who recorded it, and on whose authentication; so does its event.
    url = f"/cases/{created['id']}/consents"
    assert (await intake.client.post(url, headers=owner.caseworker(), json=consent_body())).status_code == 201
    history = await intake.client.get(url, headers=owner.system(acting_user="officer.7") | purpose)
    assert history.status_code == 200, history.text
    assert [(c["recorded_by_user"], c["recorded_by_attested_by"]) for c in history.json()["items"]] == [
        (owner.alice, "token")]
    [granted] = await topic_events(intake.bootstrap, INTAKE_EVENTS, lambda e: e.partition_key == created["id"]
                                   and e.short_type == "consent.granted.v1")
    assert (granted.data["acting_user"], granted.data["attested_by"]) == (owner.alice, "token")
