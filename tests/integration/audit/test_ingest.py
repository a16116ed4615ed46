"""Ingest: every event becomes exactly one entry; anything that may be personal data is dead-lettered."""

from __future__ import annotations

import uuid

from shared.envelope import ERROR_HEADER
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS
from tests.integration.audit.conftest import AuditHarness


def _case() -> str:
    return f"case-{uuid.uuid4().hex}"


async def test_events_become_entries_exactly_once(audit: AuditHarness) -> None:
    case = _case()
    granted = await audit.send(INTAKE_EVENTS, "consent.granted.v1", {
        "case_id": case, "agency": "iom-ly", "acting_user": "caseworker-7", "consent_id": "cons-1",
        "consent_version": 1, "purposes": ["referral"], "data_categories": ["identity", "demographics"],
        "valid_until": "2027-12-31T00:00:00Z",
    })
    read = await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "case.read", "outcome": "success", "agency": "agy_unhcr_ly", "client_id": "cli_unhcr_ly",
        "acting_user": "officer-2", "purpose": "referral", "resource_type": "Case", "resource_id": case,
        "case_id": case, "details": {"data_categories": ["identity"], "consent_version": 1},
    }, source="/refnet/intake")
    accepted = await audit.send(REFERRAL_EVENTS, "referral.accepted.v1", {
        "case_id": case, "referral_id": "ref-9", "from_agency": "iom-ly", "to_agency": "unhcr-ly",
        "agency": "unhcr-ly", "pathway": "protection", "status": "accepted",
    }, source="/refnet/referral")
    await audit.send(REGISTRY_EVENTS, "agency.suspended.v1", {"agency_id": "ngo-x", "agency": "admin"},
                     source="/refnet/registry", key="ngo-x")
    # Redelivery: the same events again (same source and id) must not make second entries.
    await audit.send(INTAKE_EVENTS, "consent.granted.v1", {
        "case_id": case, "agency": "iom-ly", "acting_user": "caseworker-7", "consent_id": "cons-1",
        "consent_version": 1, "purposes": ["referral"], "data_categories": ["identity", "demographics"],
        "valid_until": "2027-12-31T00:00:00Z",
    }, event_id=granted)
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {"action": "case.read", "outcome": "success"},
                     event_id=read, source="/refnet/intake")
    marker = await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": case, "agency": "iom-ly"})
    # A type audit was never told about is logged all the same.
    await audit.send(REFERRAL_EVENTS, "referral.escalated.v2", {"referral_id": "r-1", "agency": "ngo-q"},
                     source="/refnet/referral")
    await audit.wait_for_size(6)

    page = (await audit.get("/audit/entries", limit=500)).json()
    entries = page["items"]
    assert [e["index"] for e in entries] == [0, 1, 2, 3, 4, 5]
    assert len({(e["source_service"], e["event_id"]) for e in entries}) == 6
    by_event = {e["event_id"]: e for e in entries}
    assert set(by_event) >= {granted, read, accepted, marker}

    grant = by_event[granted]
    assert grant["action"] == "consent.grant"
    assert grant["outcome"] == "success"
    assert grant["agency"] == "iom-ly" and grant["acting_user"] == "caseworker-7"
    assert grant["resource_type"] == "Consent" and grant["resource_id"] == "cons-1"
    assert grant["case_id"] == case and grant["source_service"] == "intake"
    assert grant["details"] == {"consent_version": 1, "purposes": ["referral"],
                                "data_categories": ["identity", "demographics"],
                                "valid_until": "2027-12-31T00:00:00Z"}

    access = by_event[read]
    assert access["action"] == "case.read" and access["purpose"] == "referral"
    assert access["client_id"] == "cli_unhcr_ly" and access["details"]["consent_version"] == 1

    referral = by_event[accepted]
    assert referral["action"] == "referral.accepted" and referral["resource_id"] == "ref-9"
    assert referral["source_service"] == "referral"
    assert by_event[marker]["action"] == "case.update"
    suspended = next(e for e in entries if e["action"] == "agency.suspended")
    assert suspended["resource_type"] == "Agency" and suspended["resource_id"] == "ngo-x"
    escalated = next(e for e in entries if e["action"] == "referral.escalated")
    assert escalated["resource_type"] == "Referral" and escalated["resource_id"] == "r-1"

    # Filters and the cursor.
    mine = (await audit.get("/audit/entries", case_id=case)).json()["items"]
    assert len(mine) == 4
    assert [e["index"] for e in (await audit.get("/audit/entries", action="case.read")).json()["items"]] == [
        access["index"]]
    assert len((await audit.get("/audit/entries", agency="iom-ly")).json()["items"]) == 2
    first = (await audit.get("/audit/entries", limit=2)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (await audit.get("/audit/entries", limit=2, cursor=first["next_cursor"])).json()
    assert [e["index"] for e in second["items"]] == [2, 3]
    rest = (await audit.get("/audit/entries", limit=2, cursor=second["next_cursor"])).json()
    assert [e["index"] for e in rest["items"]] == [4, 5] and rest["next_cursor"] is None
    upcoming = (await audit.get("/audit/entries", since="2999-01-01T00:00:00Z")).json()
    assert upcoming["items"] == []
    assert len((await audit.get("/audit/entries", until="2999-01-01T00:00:00Z")).json()["items"]) == 6


async def test_personal_data_is_dead_lettered_never_stored(audit: AuditHarness) -> None:
    case = _case()
    await audit.send(INTAKE_EVENTS, "case.registered.v1", {
        "case_id": case, "agency": "iom-ly", "given_name": "Amina Tesfay"})  # free text with a space
    await audit.send(INTAKE_EVENTS, "case.updated.v1", {
        "case_id": case, "agency": "iom-ly", "person": {"phone": "+249912000000"}})  # nested object
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "case.read", "outcome": "success", "case_id": case, "birth_date": "1999-04-02"})
    await audit.send(INTAKE_EVENTS, "consent.withdrawn.v1", {
        "case_id": case, "agency": "iom-ly", "reason": "She no longer wants her data shared"})
    await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": case, "agency": "Amina Tesfay"})
    # What a stranger typed into GET /cases/<id>: an identifier, but not an id RefNet issued.
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "access.denied", "outcome": "denied", "case_id": "AminaTesfay1999", "resource_type": "Case",
        "resource_id": "AminaTesfay1999"})
    await audit.send_raw(INTAKE_EVENTS, b"not a cloud event", [])
    ok = await audit.send(INTAKE_EVENTS, "case.closed.v1", {"case_id": case, "agency": "iom-ly"})
    await audit.wait_for_size(1)

    dead = await audit.dead_letters(INTAKE_EVENTS, 5)
    assert len(dead) == 5
    assert all(dict(r.headers).get(ERROR_HEADER) for r in dead)
    refused = await audit.dead_letters(AUDIT_ACCESS, 2)
    assert len(refused) == 2
    errors = [dict(r.headers)[ERROR_HEADER].decode() for r in [*dead, *refused]]
    assert not any("Amina" in e or "2499" in e or "1999" in e for e in errors), "an error quoted the data"

    dump = audit.sql("SELECT row_to_json(e)::text FROM audit_entries e") + audit.sql(
        "SELECT row_to_json(p)::text FROM audit_pending p")
    for value in ("Amina", "Tesfay", "249912000000", "1999-04-02", "no longer", "1999"):
        assert value not in dump
    entries = (await audit.get("/audit/entries")).json()["items"]
    assert [e["event_id"] for e in entries] == [ok]
