"""Event payloads are closed and non-identifying: no field can carry a name, a birth date, a contact or
free text."""

from __future__ import annotations

from services.intake import events

ALLOWED = {
    "case_id", "agency", "client_id", "acting_user", "status", "purpose", "data_categories", "changed",
    "consent_id", "consent_version", "grantor", "provisions", "valid_from", "valid_until", "withdrawn_version",
    "override_id", "recipient_agency", "approver", "attested_by", "requested_by", "approved_at",
}
# Quasi-identifiers: each harmless alone, together they can single a person out -- and every event stays in
# the permanent audit log, past erasure. No consumer needs them (referral asks intake's clearance).
QUASI_IDENTIFIERS = {"is_minor", "age_band", "gender", "citizenship", "trafficking_status", "fear_of_return",
                     "bia_completed", "bid_completed", "exploitation_types", "means_of_control",
                     "recruiter_relation", "migration_status", "risk_level", "country_of_exploitation",
                     "identified_by", "needs"}
PERSONAL = {"given_name", "family_name", "other_names", "birth_date", "estimated_age", "phone", "email",
            "address", "languages", "documents", "notes", "justification", "reason", "witness", "capacity_note"}


def test_every_emitted_type_has_a_closed_non_identifying_payload() -> None:
    assert set(events.EMITTED) == {
        "case.registered.v1", "case.updated.v1", "case.closed.v1", "case.erased.v1", "consent.granted.v1",
        "consent.withdrawn.v1", "consent.overridden.v1"}
    for type_, schema in events.schemas().items():
        fields = set(schema["properties"])
        assert fields <= ALLOWED, (type_, fields - ALLOWED)
        assert not fields & PERSONAL
        assert not fields & QUASI_IDENTIFIERS, (type_, fields & QUASI_IDENTIFIERS)
        assert schema.get("additionalProperties") is False, type_
        assert {"case_id", "agency", "client_id", "acting_user"} <= fields
