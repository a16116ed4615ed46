"""Referral's events say on whose authentication their acting user is named (issue 20): ``attested_by`` beside
``acting_user``, left out when nobody is named -- so those payloads, and the audit leaves made from them, are
exactly as before. Audit keeps it in the entry's details."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.audit.domain import draft_from_event
from services.audit.leaf import entry_json, leaf_bytes
from services.audit.merkle import hash_leaf, verify_inclusion
from services.referral.events import ReferralEvent
from shared.envelope import Event
from tests.support.merkle_tree import MerkleTree

T0 = datetime(2026, 11, 22, 9, 30, 1, 123456, tzinfo=UTC)
CASE = "case-" + "0123456789abcdef" * 2
RID = "fedcba9876543210" * 2
PERSON = "person-" + "ab" * 16

# A referral event as referral emitted it before issue 20, and its audit entry's leaf (pinned: the bytes the log
# holds, not this code's opinion of them).
OLD = {"referral_id": RID, "case_id": CASE, "from_agency": "agy_iom", "to_agency": "agy_shelter",
       "status": "received", "pathway": "protection", "service_type": "shelter", "priority": "urgent",
       "shared_categories": ["identity", "protection_needs"], "consent_id": "consent-" + "12" * 16,
       "reason_code": None, "due_at": "2026-11-23T09:30:01.123456Z", "agency": "agy_shelter",
       "acting_user": "intake-desk"}
OLD_LEAF = (
    b'{"acting_user":"intake-desk","action":"referral.received","agency":"agy_shelter","case_id":"case-0123456789abc'
    b'def0123456789abcdef","client_id":null,"details":{"consent_id":"consent-12121212121212121212121212121212","due_'
    b'at":"2026-11-23T09:30:01.123456Z","from_agency":"agy_iom","pathway":"protection","priority":"urgent","reason_c'
    b'ode":null,"service_type":"shelter","shared_categories":["identity","protection_needs"],"status":"received","to_'
    b'agency":"agy_shelter"},"event_id":"ev-old-r1","index":11,"occurred_at":"2026-11-22T09:30:01.123456Z","outcome'
    b'":"success","purpose":null,"recorded_at":"2026-11-22T09:30:01.123456Z","resource_id":"fedcba9876543210fedcba9'
    b'876543210","resource_type":"Referral","source_service":"referral"}'
)
OLD_LEAF_HASH = "7046ccdda7242e2340967f7828145beb13959faf58a62d11dff95b9dea572b15"


def entry(data: dict[str, Any], id: str, index: int = 11) -> dict[str, Any]:
    event = Event(id=id, source="/refnet/referral", type="org.refnet.referral.received.v1", subject=RID,
                  partition_key=CASE, time=T0, data=data)
    return entry_json(index=index, recorded_at=T0, draft=draft_from_event(event))


def emitted(acting_user: str | None, attested_by: str | None) -> dict[str, Any]:
    """The payload referral emits now for OLD's move."""
    fields: dict[str, Any] = {**OLD, "due_at": T0 + timedelta(days=1), "acting_user": acting_user,
                              "attested_by": attested_by}
    return ReferralEvent(**fields).payload()


def test_an_old_event_keeps_its_leaf() -> None:
    old = entry(OLD, "ev-old-r1")
    assert "attested_by" not in old["details"]
    assert leaf_bytes(old) == OLD_LEAF
    assert hash_leaf(OLD_LEAF).hex() == OLD_LEAF_HASH == hashlib.sha256(b"\x00" + OLD_LEAF).hexdigest()
    # An old payload is still a valid referral event (attested_by unknown), and reads back the same.
    assert ReferralEvent.model_validate(OLD).payload() == OLD


def test_a_system_act_with_nobody_named_emits_the_payload_as_before() -> None:
    payload = emitted(None, None)
    assert "attested_by" not in payload
    assert payload == {**OLD, "acting_user": None}


def test_an_asserted_user_emits_the_old_shape_plus_system() -> None:
    payload = emitted("intake-desk", "system")
    assert payload == {**OLD, "attested_by": "system"}
    new = entry(payload, "ev-new-r2", 12)
    assert (new["acting_user"], new["details"]["attested_by"]) == ("intake-desk", "system")


def test_a_persons_act_is_audited_on_the_tokens_authentication() -> None:
    payload = emitted(PERSON, "token")
    new = entry(payload, "ev-new-r1", 12)
    assert (new["acting_user"], new["details"]["attested_by"]) == (PERSON, "token")
    # The only difference from the old entry's details is the attestation.
    old = entry(OLD, "ev-old-r1")
    assert {k: v for k, v in new["details"].items() if k != "attested_by"} == old["details"]
    # Old and new entries prove in one log.
    entries = [old, entry(payload, "ev-new-r1", 12), entry(emitted("intake-desk", "system"), "ev-new-r2", 13)]
    tree = MerkleTree(leaf_bytes(e) for e in entries)
    for index, e in enumerate(entries):
        assert verify_inclusion(hash_leaf(leaf_bytes(e)), index, tree.size, tree.inclusion_proof(index), tree.root())


@pytest.mark.parametrize("value", ["registry", "TOKEN", ""])
def test_an_attestation_that_is_not_token_or_system_is_no_referral_event(value: str) -> None:
    with pytest.raises(ValidationError):
        ReferralEvent(**{**OLD, "attested_by": value})
