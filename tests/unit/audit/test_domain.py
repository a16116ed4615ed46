"""Pure rules of the audit log: event -> entry mapping, refusal of anything that may be personal data,
the leaf bytes, the consent in force at a read, and the checkpoint text."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from services.audit.domain import (
    PERSONAL_FIELDS,
    NotAuditable,
    action_for,
    checkpoint_body,
    consents_in_force,
    detail_value_ok,
    draft_from_event,
    parse_checkpoint_body,
)
from services.audit.leaf import entry_json, format_time, leaf_bytes
from services.audit.signing import CheckpointSigner, key_hash, verify_signature
from shared.envelope import Event

T0 = datetime(2026, 11, 22, 9, 30, 1, 123456, tzinfo=UTC)


def event(type: str, data: dict[str, Any], source: str = "/refnet/intake", id: str = "ev-1") -> Event:
    return Event(id=id, source=source, type=f"org.refnet.{type}", subject=None, partition_key="k", time=T0,
                 data=data)


@pytest.mark.parametrize(("short", "action"), [
    ("consent.granted.v1", "consent.grant"), ("consent.withdrawn.v1", "consent.withdraw"),
    ("consent.overridden.v1", "consent.override"), ("case.registered.v1", "case.create"),
    ("case.updated.v1", "case.update"), ("case.erased.v1", "case.erase"), ("case.closed.v1", "case.close"),
    ("referral.in_progress.v1", "referral.in_progress"), ("referral.overdue.v1", "referral.overdue"),
    ("service.capacity_changed.v1", "service.capacity_changed"), ("agency.registered.v2", "agency.registered"),
])
def test_actions(short: str, action: str) -> None:
    assert action_for(short) == action


def test_a_referral_event_becomes_an_entry() -> None:
    draft = draft_from_event(event("referral.rejected.v1", {
        "case_id": "c-1", "referral_id": "r-1", "agency": "unhcr", "acting_user": "u@unhcr", "from_agency": "iom",
        "to_agency": "unhcr", "reason_code": "no-capacity", "pathway": "protection", "overdue": False,
        "shared_categories": ["identity", "demographics"], "attempt": 2,
    }, source="/refnet/referral"))
    assert (draft.action, draft.outcome, draft.source_service) == ("referral.rejected", "success", "referral")
    assert (draft.resource_type, draft.resource_id, draft.case_id) == ("Referral", "r-1", "c-1")
    assert draft.agency == "unhcr" and draft.acting_user == "u@unhcr"
    assert draft.details == {"from_agency": "iom", "to_agency": "unhcr", "reason_code": "no-capacity",
                             "pathway": "protection", "overdue": False,
                             "shared_categories": ["identity", "demographics"], "attempt": 2}
    assert draft.occurred_at == T0


def test_flat_records_of_identifiers_pass() -> None:
    provisions = [{"purpose": "referral", "recipient_agency": None, "data_categories": ["identity"],
                   "decision": "permit"}]
    draft = draft_from_event(event("consent.granted.v1", {
        "case_id": "c-1", "agency": "iom", "client_id": "cl", "acting_user": None, "consent_id": "k-1",
        "consent_version": 2, "grantor": "self", "provisions": provisions,
        "valid_from": "2026-11-22T13:58:12.193771+00:00", "valid_until": None}))
    assert draft.details["provisions"] == provisions and draft.resource_id == "k-1"


def test_registry_public_profile_text_is_left_out() -> None:
    draft = draft_from_event(event("service.published.v1", {
        "service_id": "svc-1", "agency_id": "ag-1", "taxonomy": "shelter", "status": "active",
        "countries": ["LY"], "languages": ["ar"], "accepts_children": True,
        "capacity": {"available": 3, "total": 10, "status": "accepting"},
        "location": {"lat": 32.9, "lon": 13.2}}, source="/refnet/registry"))
    assert "location" not in draft.details and draft.details["capacity"]["total"] == 10
    agency = draft_from_event(event("agency.registered.v1", {
        "agency_id": "ag-1", "client_id": "cl-1", "name": "Shelter of Hope Tripoli", "kind": "ngo", "country": "LY",
        "status": "active", "scopes": ["cases:read"]}, source="/refnet/registry"))
    assert "name" not in agency.details and agency.resource_id == "ag-1"
    # Only registry's: anyone else's "name" is refused as usual.
    with pytest.raises(NotAuditable):
        draft_from_event(event("case.updated.v1", {"case_id": "c", "name": "Amina Tesfay"}))


def test_a_case_event_is_about_the_case() -> None:
    draft = draft_from_event(event("case.registered.v1", {"case_id": "c-1", "agency": "iom", "is_minor": True,
                                                          "age_band": "9-17"}))
    assert (draft.resource_type, draft.resource_id, draft.action) == ("Case", "c-1", "case.create")
    assert draft.details == {"is_minor": True, "age_band": "9-17"}


def test_an_access_record_keeps_its_own_action_and_outcome() -> None:
    draft = draft_from_event(event("access.recorded.v1", {
        "action": "token.refused", "outcome": "denied", "client_id": "cli_1", "details": {"reason": "expired"}},
        source="/refnet/registry"))
    assert (draft.action, draft.outcome, draft.client_id, draft.details) == (
        "token.refused", "denied", "cli_1", {"reason": "expired"})


@pytest.mark.parametrize("data", [
    {"case_id": "c", "given_name": "Amina Tesfay"},
    {"case_id": "c", "notes": "free text; personal"},
    {"case_id": "c", "person": {"given_name": "Amina"}},
    {"case_id": "c", "phones": ["+249 912 000 000"]},
    {"case_id": "c", "nested": [["a"]]},
    {"case_id": "c", "phone": "249912000000"},  # looks like an id; the name says what it is
    {"case_id": "c", "provisions": [{"purpose": "referral", "given_name": "x"}]},
    {"case_id": "c", "deep": {"a": {"b": 1}}},
    {"case_id": "c", "deep": [{"a": [{"b": 1}]}]},
    {"case_id": "c", "records": [{"k": "v"}] * 17},
    {"case_id": "c", "location": {"lat": 32.9, "lon": 13.2}},
    {"case_id": "c", "long": "x" * 200},
    {"case_id": "c", "big": 10**12},
    {"case_id": "c", "ratio": 0.5},
    {"case_id": "Amina Tesfay"},
    {"case_id": "c", "agency": "IOM Libya office"},
    {"case_id": "c", "outcome": "fine, thanks"},
    {"case_id": "c", "bad key": "x"},
    {"case_id": "c", **{f"f{i}": i for i in range(40)}},
])
def test_anything_that_may_be_personal_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(NotAuditable) as refused:
        draft_from_event(event("case.updated.v1", data))
    for value in ("Amina", "Tesfay", "249", "free text"):
        assert value not in str(refused.value)


@pytest.mark.parametrize("data", [
    {"action": "case.read", "outcome": "success", "birth_date": "1999-04-02"},
    {"action": "case.read", "outcome": "maybe"},
    {"action": "case read", "outcome": "success"},
    {"action": "case.read", "outcome": "success", "details": {"note": "said her name"}},
    {"outcome": "success"},
])
def test_access_records_outside_the_schema_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(NotAuditable) as refused:
        draft_from_event(event("access.recorded.v1", data))
    assert "1999" not in str(refused.value) and "her name" not in str(refused.value)


@pytest.mark.parametrize("source", ["https://evil.example/x y", "", "/refnet/" + "x" * 200])
def test_foreign_sources_are_refused(source: str) -> None:
    with pytest.raises(NotAuditable):
        draft_from_event(event("case.updated.v1", {"case_id": "c"}, source=source))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=8))
def test_only_tokens_small_ints_and_bools_pass_as_details(value: Any) -> None:
    import re

    token = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")

    def scalar_ok(v: Any) -> bool:
        return isinstance(v, bool) or (isinstance(v, int) and abs(v) < 2**31) or (
            isinstance(v, str) and bool(token.fullmatch(v)))

    def flat_ok(v: Any) -> bool:
        return v is None or scalar_ok(v) or (isinstance(v, list) and all(scalar_ok(x) for x in v))

    def record_ok(v: Any) -> bool:
        return isinstance(v, dict) and all(
            isinstance(k, str) and token.fullmatch(k) and k not in PERSONAL_FIELDS and flat_ok(x)
            for k, x in v.items())

    expected = flat_ok(value) or record_ok(value) or (
        isinstance(value, list) and all(record_ok(v) for v in value))
    assert detail_value_ok(value) == expected
    if isinstance(value, str) and " " in value:
        assert not detail_value_ok(value)


def test_the_leaf_is_the_canonical_json_of_the_entry_as_shown() -> None:
    draft = draft_from_event(event("consent.granted.v1", {"case_id": "c-1", "consent_id": "k-1",
                                                          "consent_version": 3, "agency": "iom"}))
    shown = entry_json(index=7, recorded_at=T0 + timedelta(seconds=1), draft=draft)
    assert list(shown) == ["index", "recorded_at", "occurred_at", "action", "outcome", "agency", "client_id",
                           "acting_user", "purpose", "resource_type", "resource_id", "case_id", "source_service",
                           "event_id", "details"]
    assert shown["recorded_at"] == "2026-11-22T09:30:02.123456Z"
    assert shown["occurred_at"] == "2026-11-22T09:30:01.123456Z"
    assert leaf_bytes(shown) == rfc8785.dumps(shown)
    assert leaf_bytes(shown).startswith(b'{"acting_user":null,"action":"consent.grant","agency":"iom"')
    # A stored copy read back in another order and time zone is the same leaf.
    columns = {k: shown[k] for k in shown if k not in ("index", "recorded_at")}
    columns["occurred_at"] = T0.astimezone(timezone(timedelta(hours=3)))
    again = entry_json(index=7, recorded_at=(T0 + timedelta(seconds=1)).astimezone(UTC), **columns)
    assert leaf_bytes(again) == leaf_bytes(shown)


def test_times_have_one_spelling() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def _e(index: int, action: str, **fields: Any) -> dict[str, Any]:
    return {"index": index, "occurred_at": f"2026-01-01T00:00:{index:02d}.000000Z", "action": action,
            "agency": fields.pop("agency", None), "resource_type": fields.pop("resource_type", None),
            "resource_id": fields.pop("resource_id", None), "details": fields}


def test_consent_in_force_at_each_read() -> None:
    history = [
        _e(0, "case.read", agency="unhcr"),
        _e(1, "consent.grant", resource_type="Consent", resource_id="c1", consent_version=1),
        _e(2, "case.read", agency="unhcr"),
        _e(3, "consent.grant", resource_type="Consent", resource_id="c2", consent_version=2),
        _e(4, "case.read", agency="unhcr"),
        _e(5, "consent.withdraw", resource_type="Consent", resource_id="c2"),
        _e(6, "case.read", agency="unhcr"),
        _e(7, "case.read", agency="unhcr", consent_id="c9", consent_version=9),
        _e(8, "consent.withdraw", resource_type="Consent", resource_id="c1"),
        _e(9, "consent.override", recipient_agency="clinic"),
        _e(10, "access.denied", agency="unhcr"),
        _e(11, "case.read", agency="clinic"),
        _e(12, "consent.read", agency="unhcr", consent_id="c1", consent_version=1),
    ]
    found = consents_in_force(history)
    assert {i: (c.consent_id, c.consent_version, c.basis) for i, c in found.items()} == {
        0: (None, None, "none"), 2: ("c1", 1, "log"), 4: ("c2", 2, "log"), 6: ("c1", 1, "log"),
        7: ("c9", 9, "recorded"), 10: (None, None, "none"), 11: (None, None, "override"),
        12: ("c1", 1, "recorded"),
    }


def test_a_read_intake_made_under_an_override_names_the_override_not_the_consent_in_force() -> None:
    history = [
        _e(0, "consent.grant", resource_type="Consent", resource_id="c1", consent_version=1),
        _e(1, "consent.override", recipient_agency="clinic"),
        _e(2, "case.read", agency="clinic", override_id="ovr-1"),
    ]
    assert consents_in_force(history)[2].basis == "override"


def test_checkpoint_text_round_trips_and_signs() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    root = bytes(range(32))
    body = checkpoint_body("refnet.local/audit", 42, root)
    assert body == f"refnet.local/audit\n42\n{base64.b64encode(root).decode()}\n"
    parsed = parse_checkpoint_body(body)
    assert (parsed.origin, parsed.tree_size, parsed.root) == ("refnet.local/audit", 42, root)
    b64 = base64.b64encode(root).decode()
    short = base64.b64encode(root[:31]).decode()
    for bad in ("", "o\n1\n", "o\n01\nAAAA\n", f"o\nx\n{b64}\n", f"o\n1\n{short}\n", f"\n1\n{b64}\n",
                f"o\n1\n{b64}"):
        with pytest.raises(ValueError):
            parse_checkpoint_body(bad)
    with pytest.raises(ValueError):
        checkpoint_body("two\nlines", 1, root)

    signer = CheckpointSigner(Ed25519PrivateKey.generate(), "refnet.local/audit")
    signature = signer.sign(body)
    assert verify_signature(signer.public_key, body, signature)
    assert not verify_signature(signer.public_key, body.replace("42", "43"), signature)
    assert not verify_signature(b"short", body, signature)
    note = signer.signed_note(body, signature)
    stamp = base64.b64decode(note.rsplit(" ", 1)[1])
    assert note.startswith(body + "\n\u2014 refnet.local/audit ")
    assert stamp[:4] == key_hash("refnet.local/audit", signer.public_key) and stamp[4:] == signature
    assert signer.key_id == stamp[:4].hex()


def test_a_write_whose_answer_carried_the_case_is_an_access() -> None:
    from services.audit.domain import is_access

    assert is_access("case.create", "case_management") and is_access("case.update", "case_management")
    assert not is_access("case.create")  # an event that names no purpose disclosed nothing
    assert not is_access("case.erase", "case_management") and not is_access("consent.grant", "case_management")
    assert is_access("case.read") and is_access("consent.read")


def test_a_write_that_answered_with_the_case_gets_its_consent_in_force() -> None:
    from services.audit.domain import consents_in_force

    entries = [
        {"index": 0, "occurred_at": "2026-01-01T00:00:00Z", "action": "consent.grant", "resource_type": "Consent",
         "resource_id": "c1", "details": {"consent_version": 1}, "purpose": None, "agency": "a"},
        {"index": 1, "occurred_at": "2026-01-01T00:00:01Z", "action": "case.update", "resource_type": "Case",
         "resource_id": "k", "details": {}, "purpose": "case_management", "agency": "a"},
    ]
    assert consents_in_force(entries)[1].consent_id == "c1"


def test_an_override_entry_names_the_override_as_its_resource() -> None:
    """The override's event is its one entry (intake records no access beside it): it names the override."""
    from services.audit.domain import draft_from_event

    draft = draft_from_event(event("consent.overridden.v1", {
        "case_id": "case-1", "agency": "iom", "override_id": "override-1", "recipient_agency": "clinic"}))
    assert (draft.resource_type, draft.resource_id) == ("Override", "override-1")
    assert draft.details == {"recipient_agency": "clinic"}


_CASE = "case-" + "0123456789abcdef" * 2


@pytest.mark.parametrize(("field", "value"), [
    ("case_id", "any-string-a-stranger-typed"),  # GET /cases/<any string> at intake
    ("case_id", "case-123"),
    ("resource_id", "etc/passwd"),  # an identifier to the old schema, not an id RefNet issues
    ("agency", "IOM-Libya"),
    ("client_id", "someone@example.org"),
    ("acting_user", "Amina/Tesfay"),  # not the identifier syntax of X-Acting-User
])
def test_access_records_whose_ids_are_not_refnet_ids_are_refused(field: str, value: str) -> None:
    valid = {"action": "case.read", "outcome": "success", "case_id": _CASE, "resource_type": "Case",
             "resource_id": _CASE, "agency": "agy_iom", "client_id": "cli_iom", "acting_user": "officer-1"}
    assert draft_from_event(event("access.recorded.v1", valid)).case_id == _CASE
    with pytest.raises(NotAuditable) as refused:
        draft_from_event(event("access.recorded.v1", {**valid, field: value}))
    assert field in str(refused.value) and value not in str(refused.value)


def test_intake_s_access_records_pass() -> None:
    """What intake records (services/intake/service/common.py ``access``), shapes and formats included."""
    consent, override = "consent-" + "ab" * 16, "override-" + "cd" * 16
    for record in (
        {"action": "case.read", "outcome": "denied", "case_id": _CASE, "resource_type": "Case", "resource_id": _CASE,
         "agency": "agy_referral_service", "client_id": "cli_unhcr", "acting_user": "officer.2@unhcr"},
        {"action": "consent.read", "outcome": "success", "case_id": _CASE, "resource_type": "Consent",
         "resource_id": _CASE, "agency": "agy_3f9c2b7e1d4a6058"},
        {"action": "consent.grant", "outcome": "success", "case_id": _CASE, "resource_type": "Consent",
         "resource_id": consent, "agency": "agy_iom"},
        {"action": "consent.override", "outcome": "denied", "case_id": _CASE, "resource_type": "Override",
         "resource_id": _CASE, "agency": "agy_iom"},
        {"action": "consent.override", "outcome": "success", "case_id": _CASE, "resource_type": "Override",
         "resource_id": override, "agency": "agy_iom"},
        {"action": "case.list", "outcome": "success", "resource_type": "Case", "agency": "agy_iom"},
        {"action": "token.issue", "outcome": "success", "resource_type": "Token", "resource_id": "ef" * 16,
         "agency": "agy_iom", "client_id": "cli_iom"},
    ):
        assert draft_from_event(event("access.recorded.v1", record)).action == record["action"]
    with pytest.raises(NotAuditable):  # the case id must still be one
        draft_from_event(event("access.recorded.v1", {"action": "consent.read", "outcome": "success",
                                                      "case_id": "x1", "resource_type": "Consent",
                                                      "resource_id": "x1"}))


def test_refnet_ids_are_accepted_by_kind() -> None:
    from shared.ids import is_refnet_id, resource_id_ok

    assert is_refnet_id(_CASE, "case") and not is_refnet_id(_CASE, "consent")
    assert resource_id_ok("Consent", "override-" + "ab" * 16) and not resource_id_ok("Consent", _CASE)
    assert resource_id_ok("Referral", "ab" * 16) and resource_id_ok("Token", "ab" * 16)
    assert is_refnet_id("agy_3f9c2b7e1d4a6058", "agency") and is_refnet_id("cli_referral_service", "client")
    assert not is_refnet_id(_CASE + "\x00", "case") and not is_refnet_id("case-" + "a" * 10_000)
