"""Who acted, on whose authentication (issue 20, docs/domain.md rule 10): an entry names the acting user and, in its
details, ``attested_by`` -- ``token`` (the person's own verified token) or ``system`` (the agency's system
asserted it). Entries written before keep exactly their leaves, so their proofs still verify."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785

from services.audit.domain import NotAuditable, draft_from_event
from services.audit.leaf import LeafWriter, entry_json, entry_leaf, format_time, leaf_bytes
from services.audit.merkle import hash_leaf, verify_inclusion
from shared.envelope import Event
from tests.support.merkle_tree import MerkleTree

T0 = datetime(2026, 11, 22, 9, 30, 1, 123456, tzinfo=UTC)
CASE = "case-" + "0123456789abcdef" * 2
PERSON = "person-" + "ab" * 16

# An access record as intake wrote it before issue 20, and its entry's leaf as the log holds it (pinned: the
# bytes, not this code's opinion of them).
OLD_RECORD = {"action": "case.read", "outcome": "success", "agency": "agy_iom", "client_id": "cli_iom",
              "acting_user": "caseworker.1", "purpose": "case_management", "resource_type": "Case",
              "resource_id": CASE, "case_id": CASE, "details": {"data_categories": ["identity"]}}
OLD_LEAF = (
    b'{"acting_user":"caseworker.1","action":"case.read","agency":"agy_iom","case_id":"case-0123456789abcdef012345678'
    b'9abcdef","client_id":"cli_iom","details":{"data_categories":["identity"]},"event_id":"ev-old-1","index":7,'
    b'"occurred_at":"2026-11-22T09:30:01.123456Z","outcome":"success","purpose":"case_management","recorded_at":'
    b'"2026-11-22T09:30:01.123456Z","resource_id":"case-0123456789abcdef0123456789abcdef","resource_type":"Case",'
    b'"source_service":"intake"}'
)
OLD_LEAF_HASH = "a5d3cc43466289ce48c5ec855f16a068b024bb6c0dd9ce68336e7658997ead9b"


def event(type: str, data: dict[str, Any], id: str) -> Event:
    return Event(id=id, source="/refnet/intake", type=f"org.refnet.{type}", subject=None, partition_key="k",
                 time=T0, data=data)


def entry(index: int, data: dict[str, Any], id: str, type: str = "access.recorded.v1") -> dict[str, Any]:
    return entry_json(index=index, recorded_at=T0, draft=draft_from_event(event(type, data, id)))


def test_an_entry_from_before_issue_20_keeps_its_leaf() -> None:
    old = entry(7, OLD_RECORD, "ev-old-1")
    assert "attested_by" not in old["details"]
    assert leaf_bytes(old) == OLD_LEAF
    assert hash_leaf(OLD_LEAF).hex() == OLD_LEAF_HASH == hashlib.sha256(b"\x00" + OLD_LEAF).hexdigest()


def test_a_persons_act_names_the_person_on_the_tokens_authentication() -> None:
    record = {**OLD_RECORD, "acting_user": PERSON, "client_id": None, "attested_by": "token"}
    new = entry(8, record, "ev-new-1")
    assert (new["acting_user"], new["details"]["attested_by"]) == (PERSON, "token")
    system = entry(9, {**OLD_RECORD, "attested_by": "system"}, "ev-new-2")
    assert (system["acting_user"], system["details"]["attested_by"]) == ("caseworker.1", "system")
    # Every way the log writes a leaf writes these the same (the reference is RFC 8785 itself).
    for e in (new, system):
        assert leaf_bytes(e) == rfc8785.dumps(e)
        columns = {k: v for k, v in e.items() if k not in ("index", "recorded_at", "occurred_at")}
        times = format_time(T0)
        assert entry_leaf(e["index"], times, times, columns) == leaf_bytes(e)
        row = {**columns, "details": json.dumps(e["details"])}
        assert LeafWriter().leaf(e["index"], times, times, row) == leaf_bytes(e)


def test_old_and_new_entries_prove_in_one_log() -> None:
    """A log holding entries from before and after issue 20: each one's inclusion proof verifies."""
    entries = [entry(0, OLD_RECORD, "ev-old-0"),
               entry(1, {**OLD_RECORD, "acting_user": PERSON, "attested_by": "token"}, "ev-new-1"),
               entry(2, {**OLD_RECORD, "attested_by": "system"}, "ev-new-2"),
               entry(3, {"case_id": CASE, "agency": "agy_iom", "client_id": "cli_iom", "acting_user": PERSON,
                         "attested_by": "token", "override_id": "override-" + "cd" * 16,
                         "recipient_agency": "agy_clinic", "approver": PERSON, "requested_by": "person-" + "ef" * 16,
                         "valid_until": "2026-11-25T09:30:01Z"}, "ev-new-3", "consent.overridden.v1")]
    tree = MerkleTree(leaf_bytes(e) for e in entries)
    root = tree.root()
    for index, e in enumerate(entries):
        assert verify_inclusion(hash_leaf(leaf_bytes(e)), index, tree.size, tree.inclusion_proof(index), root)
    assert entries[3]["details"]["attested_by"] == "token" and entries[3]["acting_user"] == PERSON
    assert entries[3]["details"]["requested_by"] != entries[3]["acting_user"]


def test_an_event_without_attestation_stays_as_it_was() -> None:
    # Events of a system's act with no person named carry attested_by null: nothing is added to the entry.
    draft = draft_from_event(event("case.registered.v1", {
        "case_id": CASE, "agency": "agy_iom", "client_id": "cli_iom", "acting_user": None, "attested_by": None,
        "purpose": "case_management", "status": "active"}, "ev-1"))
    assert "attested_by" not in draft.details


@pytest.mark.parametrize("value", ["registry", "TOKEN", "", 1])
def test_an_attestation_that_is_not_token_or_system_is_refused(value: object) -> None:
    with pytest.raises(NotAuditable):
        draft_from_event(event("case.registered.v1", {"case_id": CASE, "agency": "agy_iom", "client_id": "cli_iom",
                                                      "attested_by": value}, "ev-1"))
    with pytest.raises(NotAuditable):
        draft_from_event(event("access.recorded.v1", {**OLD_RECORD, "attested_by": value}, "ev-2"))


def test_an_access_record_cannot_slip_an_attestation_into_its_details() -> None:
    with pytest.raises(NotAuditable):
        draft_from_event(event("access.recorded.v1", {**OLD_RECORD, "details": {"attested_by": "token"}}, "ev-1"))


def test_a_revoked_override_is_no_basis_for_later_reads() -> None:
    from services.audit.domain import consents_in_force

    def e(index: int, action: str, agency: str = "agy_iom", outcome: str = "success", override: str | None = None,
          **details: Any) -> dict[str, Any]:
        return {"index": index, "occurred_at": f"2026-01-01T00:00:{index:02d}Z", "action": action,
                "agency": agency, "outcome": outcome, "resource_type": "Override" if override else None,
                "resource_id": override, "purpose": None, "details": details}

    one, two = "override-" + "1" * 32, "override-" + "2" * 32
    history = [
        e(0, "consent.override.request", override=one, recipient_agency="agy_clinic"),
        e(1, "case.read", agency="agy_clinic"),  # requested, not approved: no basis
        e(2, "consent.override", override=one, recipient_agency="agy_clinic"),
        e(3, "case.read", agency="agy_clinic"),
        e(4, "consent.override.revoke", outcome="denied", override=one, recipient_agency="agy_clinic"),
        e(5, "case.read", agency="agy_clinic"),
        e(6, "consent.override", override=two, recipient_agency="agy_clinic"),
        e(7, "consent.override.revoke", override=one, recipient_agency="agy_clinic"),
        e(8, "case.read", agency="agy_clinic"),  # the second override still stands
        e(9, "consent.override.revoke", override=two, recipient_agency="agy_clinic"),
        e(10, "case.read", agency="agy_clinic"),
    ]
    found = consents_in_force(history)
    assert {i: c.basis for i, c in found.items()} == {1: "none", 3: "override", 5: "override", 8: "override",
                                                      10: "none"}


def test_a_persons_record_names_the_first_party_client_they_signed_in_through() -> None:
    record = {**OLD_RECORD, "acting_user": PERSON, "client_id": "refnet-console", "attested_by": "token"}
    assert draft_from_event(event("access.recorded.v1", record, "ev-1")).client_id == "refnet-console"
    # An agency's system is a cli_ client: a record it makes names no other.
    for attested_by in ("system", None):
        with pytest.raises(NotAuditable):
            draft_from_event(event("access.recorded.v1", {**record, "attested_by": attested_by}, "ev-2"))
    with pytest.raises(NotAuditable):  # still no free text
        draft_from_event(event("access.recorded.v1", {**record, "client_id": "Example Console"}, "ev-3"))
