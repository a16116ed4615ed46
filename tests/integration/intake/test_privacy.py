"""Issue 16, intake's part: a write's answer is an access, one act is one audit entry, ids are checked before
anything is recorded, a recipient's purpose is checked against its consent, trafficking facts die with the
case key."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.audit.domain import draft_from_event, is_access
from services.intake import domain, service
from services.intake.crypto import Keyring, MasterKey, new_data_key, open_sealed, seal, wrap
from services.intake.store import CaseKeyRow, CaseRow
from shared.migrations import upgrade
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.intake.conftest import (
    Intake,
    access_records,
    agency,
    case_body,
    consent_body,
    topic_events,
)

TRAFFICKING_FACTS = {"identified_by": "ngo", "country_of_exploitation": "LY", "exploitation_types": ["forced_labour"],
                     "means_of_control": ["debt_bondage", "confiscated_documents"], "recruiter_relation": "other",
                     "migration_status": "asylum_seeker", "risk_level": "high"}


# --- finding 9: a write's answer is an access; one act, one entry -------------------------------------


async def test_writes_that_answer_with_the_case_name_a_purpose(intake: Intake) -> None:
    owner = agency()
    unnamed = await intake.client.post("/cases", json=case_body(), headers=intake.headers(owner))
    assert unnamed.status_code == 400 and unnamed.json()["type"].endswith("purpose-required")
    created = await intake.register(owner)
    patched = await intake.client.patch(f"/cases/{created['id']}", headers=intake.headers(owner),
                                        json={"status": "follow_up"})
    assert patched.status_code == 400 and patched.json()["type"].endswith("purpose-required")
    assert "person" not in patched.text
    # The consent history holds witnesses' names and capacity notes: a read like any other.
    history = await intake.client.get(f"/cases/{created['id']}/consents", headers=intake.headers(owner))
    assert history.status_code == 400 and history.json()["type"].endswith("purpose-required")


async def test_a_write_is_one_audit_entry_and_an_access_with_its_purpose(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner)
    case_id = created["id"]
    patched = await intake.client.patch(f"/cases/{case_id}", headers=intake.writer(owner),
                                        json={"bia_completed_at": "2026-01-02"})
    assert patched.status_code == 200 and patched.json()["person"]["given_name"]  # the person came back

    events = await topic_events(intake.bootstrap, INTAKE_EVENTS, lambda e: e.partition_key == case_id, expect=2)
    assert [e.short_type for e in events] == ["case.registered.v1", "case.updated.v1"]
    # What audit makes of each: an access entry naming the purpose and the categories the answer carried.
    for event in events:
        entry = draft_from_event(event)
        assert is_access(entry.action, entry.purpose), entry.action
        assert entry.purpose == "case_management" and entry.case_id == case_id and entry.agency == owner
        assert set(entry.details["data_categories"]) == set(domain.ALL_CATEGORIES)
    # ... and no access record beside them: audit ingests both topics, so that would be a second entry.
    assert await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(case_id), expect=1, timeout=4) == []


# --- finding 10: what a caller types is not recorded ---------------------------------------------------


@pytest.mark.parametrize("typed", ["AminaTesfay1999", "case-AminaTesfay", "case-" + "0" * 31 + "G"])
async def test_a_malformed_case_id_is_a_404_recorded_without_the_string(intake: Intake, typed: str) -> None:
    stranger, user = agency(), f"probe{secrets.token_hex(4)}"
    response = await intake.client.get(f"/cases/{typed}",
                                       headers=intake.headers(stranger, acting_user=user, purpose="referral"))
    assert response.status_code == 404
    [record] = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("acting_user") == user)
    assert record.data["action"] == "case.read" and record.data["outcome"] == "denied"
    assert record.data["case_id"] is None and record.data["resource_id"] is None
    assert record.data["details"]["reason"] == "malformed-id"
    assert typed not in str(record.data) and typed not in (record.subject or "")


async def test_an_unknown_case_of_the_right_format_is_recorded_as_asked(intake: Intake) -> None:
    stranger, user = agency(), f"probe{secrets.token_hex(4)}"
    unknown = "case-" + secrets.token_hex(16)
    response = await intake.client.get(f"/cases/{unknown}",
                                       headers=intake.headers(stranger, acting_user=user, purpose="referral"))
    assert response.status_code == 404
    [record] = await topic_events(intake.bootstrap, AUDIT_ACCESS, lambda e: e.data.get("acting_user") == user)
    assert record.data["case_id"] == unknown and record.data["details"]["reason"] == "not-a-party"


async def test_a_malformed_acting_user_is_refused(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner)
    headers = intake.headers(owner, purpose="case_management") | {"X-Acting-User": "Amina Tesfay"}
    response = await intake.client.get(f"/cases/{created['id']}", headers=headers)
    assert response.status_code == 400 and response.json()["type"].endswith("invalid-acting-user")
    assert "Amina" not in response.text


# --- finding 14: a recipient's purpose is one its consent permits ----------------------------------------


async def test_a_recipient_reads_only_for_a_purpose_the_consent_permits(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient, ["identity"])))
    case_id = created["id"]
    await intake.refer(case_id, owner, recipient, ["identity"])
    assert (await intake.read(case_id, recipient, "referral")).status_code == 200
    for claimed in ("case_management", "audit", "law_enforcement"):
        refused = await intake.read(case_id, recipient, claimed)
        assert refused.status_code == 404, (claimed, refused.text)
    records = await topic_events(
        intake.bootstrap, AUDIT_ACCESS,
        lambda e: e.data.get("case_id") == case_id and e.data.get("agency") == recipient, expect=4)
    refusals = {r.data["purpose"]: r.data for r in records if r.data["outcome"] == "denied"}
    assert set(refusals) == {"case_management", "audit", "law_enforcement"}
    assert {r["details"]["reason"] for r in refusals.values()} == {"purpose-not-permitted"}

    # A consent that permits case management to this recipient too makes that purpose a lawful one.
    both = consent_body(recipient, ["identity"])
    both["provisions"].append({"purpose": "case_management", "recipient_agency": recipient,
                               "data_categories": ["identity"], "decision": "permit"})
    granted = await intake.client.post(f"/cases/{case_id}/consents", headers=intake.headers(owner), json=both)
    assert granted.status_code == 201, granted.text
    assert (await intake.read(case_id, recipient, "case_management")).status_code == 200


# --- finding 13: trafficking facts are sealed and die with the key ---------------------------------------


async def _row(intake: Intake, case_id: str) -> CaseRow:
    async with intake.app.state.runtime.sessions() as session:
        row = (await session.execute(select(CaseRow).where(CaseRow.id == case_id))).scalar_one()
        return row


async def test_trafficking_facts_are_sealed_and_erased_with_the_case(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner, case_body(**TRAFFICKING_FACTS))
    case_id = created["id"]
    assert {k: created["screening"][k] for k in TRAFFICKING_FACTS} == TRAFFICKING_FACTS
    row = await _row(intake, case_id)
    assert set(row.facts) == set(domain.CLEAR_FACTS)  # nothing else in clear
    assert (row.gender, row.citizenship, row.age_band) == (None, None, None)  # quasi-identifiers: sealed
    assert (created["person"]["gender"], created["person"]["citizenship"]) == ("feminine", "ER")
    assert created["age_band"] not in (None, "unknown")
    patched = await intake.client.patch(f"/cases/{case_id}", headers=intake.writer(owner),
                                        json={"risk_level": "medium", "migration_status": "refugee"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["screening"]["risk_level"] == "medium"
    assert set((await _row(intake, case_id)).facts) == set(domain.CLEAR_FACTS)
    read = (await intake.read(case_id, owner)).json()["screening"]
    assert read["migration_status"] == "refugee" and read["exploitation_types"] == ["forced_labour"]

    assert (await intake.client.post(f"/cases/{case_id}/erase", headers=intake.headers(owner))).status_code == 202
    erased = (await intake.read(case_id, owner)).json()
    after = erased["screening"]
    assert not set(TRAFFICKING_FACTS) & set(after)
    assert set(after) == {*domain.CLEAR_FACTS, "bia_completed_at", "bid_completed_at"}
    assert erased["person"] == {} and erased["age_band"] is None


async def test_facts_stored_in_clear_before_are_dropped_if_erased_and_sealed_by_intake(
    new_database: Callable[[str], str], tmp_path: Path,
) -> None:
    """intake_0005 drops the clear facts of erased cases (no key needed); intake's sweep seals the others with
    their case key (the migration job holds no master key; older replicas keep working meanwhile)."""
    url = new_database("intake_mig")
    await asyncio.to_thread(upgrade, "intake", url, "intake_0004")
    key = MasterKey.generate()
    data_key = new_data_key()
    live, erased = "case-" + secrets.token_hex(16), "case-" + secrets.token_hex(16)
    facts = {"trafficking_status": "actual", "fear_of_return": True, "needs": ["shelter"], **TRAFFICKING_FACTS}
    personal = {"person": {"given_name": "X"}, "notes": None}
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for case_id, sealed in ((live, seal(data_key, personal, case_id=live, label="case")), (erased, None)):
                await conn.execute(CaseRow.__table__.insert().values(
                    id=case_id, owner_agency="agy_a", status="active" if sealed else "erased", is_minor=False,
                    age_band="30-38", gender="feminine", citizenship="ER", trafficking_status="actual",
                    facts=facts, sealed=sealed, created_by_client="c"))
            await conn.execute(CaseKeyRow.__table__.insert().values(
                case_id=live, wrapped_key=wrap(data_key, key, live), master_key_id=key.key_id))

        async def stored() -> dict[str, Any]:
            async with engine.connect() as conn:
                return {r.id: r for r in (await conn.execute(text(
                    "SELECT id, facts, sealed, gender, citizenship, age_band FROM cases"))).all()}

        await asyncio.to_thread(upgrade, "intake", url, "intake_0005")
        rows = await stored()
        assert set(rows[erased].facts) == set(domain.CLEAR_FACTS) and rows[erased].gender is None
        assert rows[live].facts == facts and rows[live].gender == "feminine"  # sealed by intake, with the key

        sealing = service.Sealing(service.Resources(sessions=async_sessionmaker(engine, expire_on_commit=False),
                                                    keys=service.MasterKeys(Keyring(key)), source="/refnet/intake"))
        assert await sealing.seal_clear_facts(batch=1) == 1
        rows = await stored()
        assert set(rows[live].facts) == set(domain.CLEAR_FACTS)
        assert (rows[live].gender, rows[live].citizenship, rows[live].age_band) == (None, None, None)
        opened = open_sealed(data_key, rows[live].sealed, case_id=live, label="case")
        assert opened == {"person": {"given_name": "X", "gender": "feminine", "citizenship": "ER"}, "notes": None,
                          "screening": TRAFFICKING_FACTS, "age_band": "30-38"}
        assert await sealing.seal_clear_facts() == 0  # nothing left
    finally:
        await engine.dispose()


async def test_an_update_or_an_erasure_takes_clear_facts_an_older_replica_left(intake: Intake) -> None:
    owner = agency()
    updated, erased = (await intake.register(owner))["id"], (await intake.register(owner))["id"]
    async with intake.app.state.runtime.sessions() as session, session.begin():
        # What a replica of the previous release writes during a rolling upgrade: the facts in clear.
        await session.execute(text("UPDATE cases SET facts = facts || CAST(:clear AS jsonb), gender = 'masculine', "
                                   "age_band = '48+' WHERE id IN (:a, :b)"),
                              {"clear": '{"risk_level": "low", "recruiter_relation": "family"}',
                               "a": updated, "b": erased})
    view = (await intake.read(updated, owner)).json()["screening"]
    assert view["risk_level"] == "high"  # what this release sealed is newer than what was left in clear
    assert (await intake.client.patch(f"/cases/{updated}", headers=intake.writer(owner),
                                      json={"notes": "moved"})).status_code == 200
    row = await _row(intake, updated)
    assert set(row.facts) == set(domain.CLEAR_FACTS) and (row.gender, row.age_band) == (None, None)
    again = (await intake.read(updated, owner)).json()
    assert again["screening"]["recruiter_relation"] == "other" and again["person"]["gender"] == "feminine"
    assert (await intake.client.post(f"/cases/{erased}/erase", headers=intake.headers(owner))).status_code == 202
    row = await _row(intake, erased)
    assert set(row.facts) == set(domain.CLEAR_FACTS) and (row.gender, row.age_band) == (None, None)
