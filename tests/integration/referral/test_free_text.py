"""The referral's free text -- its reason and the notes of its transitions -- is personal data (issue 16,
findings 5 and 7): refused with control characters, sealed under the case's data key, shown to the recipient
only as need-to-know and consent allow, and gone with the key when the case is erased."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from tests.conftest import Infra
from tests.integration.referral.conftest import Service, body, running_referral
from tests.support.issuer import LocalIssuer


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1bb", "a\rb"])
async def test_control_characters_in_reason_or_note_are_refused_with_422(svc: Service, bad: str) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient)
    refused = await svc.refer(sender, body(case_id, recipient, reason=f"Needs shelter {bad}"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "reason"]
    assert "shelter" not in refused.text
    made = await svc.refer(sender, body(case_id, recipient, reason="Needs shelter\n\tand an interpreter"))
    assert made.status_code == 201, made.text
    moved = await svc.move(recipient, made.json()["id"], "received", note=f"Called back {bad}")
    assert moved.status_code == 422, moved.text
    assert moved.json()["errors"][0]["loc"] == ["body", "note"]


# --- sealed under the case's key, shown as need-to-know and consent allow, shredded on erasure ------------


@asynccontextmanager
async def database(svc: Service) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(svc.database_url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


async def stored_text(svc: Service) -> str:
    """Every row of the tables a referral's free text could sit in, as text (what a dump would show)."""
    async with database(svc) as engine, engine.connect() as conn:
        rows = [
            *(await conn.execute(text("SELECT row_to_json(r)::text FROM referrals r"))).scalars(),
            *(await conn.execute(text("SELECT row_to_json(t)::text FROM referral_transitions t"))).scalars(),
            *(await conn.execute(text("SELECT row_to_json(f)::text FROM referral_feed f"))).scalars(),
            *(await conn.execute(text("SELECT row_to_json(o)::text FROM outbox o"))).scalars(),
        ]
    return "\n".join(rows)


async def get(svc: Service, agency: str, rid: str) -> dict[str, Any]:
    shown = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(agency))
    assert shown.status_code == 200, shown.text
    return dict(shown.json())


async def test_reason_and_notes_are_stored_only_sealed(svc: Service) -> None:
    marker, key = "ZQ" + uuid.uuid4().hex[:10].upper(), "key-" + uuid.uuid4().hex
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient, categories={"identity", "notes"})
    made = await svc.refer(sender, body(case_id, recipient, reason=f"{marker} hides at her cousin's",
                                        shared_categories=["identity", "notes"], idempotency_key=key))
    assert made.status_code == 201, made.text
    assert made.json()["reason"] == f"{marker} hides at her cousin's"
    rid = made.json()["id"]
    moved = await svc.move(recipient, rid, "received", note=f"{marker} called, safe for now")
    assert moved.status_code == 200, moved.text

    assert marker not in await stored_text(svc)
    shown = await get(svc, sender, rid)
    assert (shown["reason"], shown["free_text"]) == (f"{marker} hides at her cousin's", "shown")
    assert shown["history"][-1]["note"] == f"{marker} called, safe for now"
    # a retry with the same key is still recognised (the fingerprint is an HMAC under the case's key)
    again = await svc.refer(sender, body(case_id, recipient, reason=f"{marker} hides at her cousin's",
                                         shared_categories=["identity", "notes"], idempotency_key=key))
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["reason"] == f"{marker} hides at her cousin's"
    other = await svc.refer(sender, body(case_id, recipient, reason="something else",
                                         shared_categories=["identity", "notes"], idempotency_key=key))
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")


async def test_the_recipient_reads_free_text_only_when_notes_are_shared_and_consented(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, v1 = svc.intake.add_case(sender, consent_to=recipient, categories={"identity", "demographics", "notes"})
    without_notes = (await svc.refer(sender, body(case_id, recipient))).json()["id"]
    with_notes = (await svc.refer(sender, body(case_id, recipient, service_type="mhpss", reason="Sleeps badly",
                                               shared_categories=["identity", "notes"]))).json()["id"]

    withheld = await get(svc, recipient, without_notes)
    assert (withheld["reason"], withheld["free_text"]) == (None, "withheld")
    assert (await get(svc, sender, without_notes))["reason"] == "Needs a safe place tonight"
    listed = await svc.client.get("/referrals?role=received", headers=svc.headers(recipient))
    reasons = {item["id"]: item["reason"] for item in listed.json()["items"]}
    assert reasons == {without_notes: None, with_notes: "Sleeps badly"}

    assert (await get(svc, recipient, with_notes))["reason"] == "Sleeps badly"
    await svc.move(recipient, without_notes, "received", note="Bed 4 is free")
    assert (await get(svc, recipient, without_notes))["history"][-1]["note"] == "Bed 4 is free"  # its own words
    assert (await get(svc, sender, without_notes))["history"][-1]["note"] == "Bed 4 is free"

    # consent v2 no longer permits notes: the referral sharing them ends, and its text is withheld
    await svc.apply("consent.granted.v1", {
        "case_id": case_id, "consent_id": v1 + "-v2", "consent_version": 2, "valid_from": "2026-01-01T00:00:00Z",
        "provisions": [{"purpose": "referral", "recipient_agency": recipient,
                        "data_categories": ["identity", "demographics"], "decision": "permit"}]})
    ended = await get(svc, recipient, with_notes)
    assert (ended["status"], ended["reason"], ended["free_text"]) == ("cancelled", None, "withheld")
    assert (await get(svc, sender, with_notes))["reason"] == "Sleeps badly"


async def test_erasure_shreds_the_free_text_with_the_case_key(svc: Service) -> None:
    marker = "ZQ" + uuid.uuid4().hex[:10].upper()
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient)
    rid = (await svc.refer(sender, body(case_id, recipient, reason=f"{marker} reason"))).json()["id"]
    await svc.move(recipient, rid, "received", note=f"{marker} note")
    other_case, _ = svc.intake.add_case(sender, consent_to=recipient)
    kept = (await svc.refer(sender, body(other_case, recipient, reason="kept"))).json()["id"]

    await svc.apply("case.erased.v1", {"case_id": case_id})

    shown = await get(svc, sender, rid)
    assert (shown["status"], shown["reason"], shown["free_text"]) == ("cancelled", None, "erased")
    assert all(h["note"] is None for h in shown["history"])
    async with database(svc) as engine, engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM case_keys WHERE case_id = :c"),
                                   {"c": case_id})).scalar() == 0
        assert (await conn.execute(text("SELECT sealed_reason FROM referrals WHERE id = :r"),
                                   {"r": rid})).scalar() is None
    assert (await get(svc, sender, kept))["reason"] == "kept"


async def test_text_stored_in_clear_before_sealing_is_sealed_at_start_up(svc: Service) -> None:
    marker = "ZQ" + uuid.uuid4().hex[:10].upper()
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient)
    rid = (await svc.refer(sender, body(case_id, recipient))).json()["id"]
    await svc.move(recipient, rid, "received", note="placeholder")
    async with database(svc) as engine, engine.begin() as conn:  # as a row made by the previous version
        await conn.execute(text("UPDATE referrals SET reason = :m, sealed_reason = NULL, request_hash = :h "
                                "WHERE id = :r"), {"m": f"{marker} legacy reason", "r": rid,
                                                    "h": hashlib.sha256(marker.encode()).hexdigest()})
        await conn.execute(text("UPDATE referral_transitions SET note = :m, sealed_note = NULL "
                                "WHERE referral_id = :r AND note IS NULL AND sealed_note IS NOT NULL"),
                           {"m": f"{marker} legacy note", "r": rid})
        await conn.execute(text("DELETE FROM case_keys WHERE case_id = :c"), {"c": case_id})
    assert marker in await stored_text(svc)

    assert await svc.referrals.seal_clear_text() >= 1
    assert marker not in await stored_text(svc)
    async with database(svc) as engine, engine.connect() as conn:
        assert (await conn.execute(text("SELECT request_hash FROM referrals WHERE id = :r"),
                                   {"r": rid})).scalar() is None
    shown = await get(svc, sender, rid)
    assert shown["reason"] == f"{marker} legacy reason"
    assert shown["history"][-1]["note"] == f"{marker} legacy note"


async def test_without_a_master_key_free_text_is_refused_not_kept_in_clear(
        infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> None:
    async with running_referral(new_database("referral"), infra.bootstrap, issuer, master_key_file="") as bare:
        sender, recipient = await bare.agency(), await bare.agency()
        case_id, _ = bare.intake.add_case(sender, consent_to=recipient)
        refused = await bare.refer(sender, body(case_id, recipient))
        assert refused.status_code == 503 and refused.json()["type"].endswith("master-key-unavailable")
