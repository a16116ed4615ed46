"""tests/support/contract.assert_event_matches_contract: what end-to-end tests call on every event they read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy import contract as generator
from shared import contract
from shared.envelope import full_type
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS, delivery_topic
from tests.support.contract import assert_event_matches_contract, documented

EXAMPLES = generator.example_payloads()


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_every_example_matches_on_its_topic_with_the_full_or_short_type(type_: str) -> None:
    topic = next(topic for topic, types in contract.TYPES_BY_TOPIC.items() if type_ in types)
    assert_event_matches_contract(topic, full_type(type_), EXAMPLES[type_])
    assert_event_matches_contract(topic, type_, EXAMPLES[type_])


@pytest.mark.parametrize("type_", contract.REFERRAL_TYPES)
def test_delivery_topics_carry_the_referral_types(type_: str) -> None:
    assert_event_matches_contract(delivery_topic("agy_3f9c2b7e1d4a6058"), full_type(type_), EXAMPLES[type_])
    assert_event_matches_contract(delivery_topic("unhcr"), type_, EXAMPLES[type_])


def test_an_access_record_matches_on_the_audit_topic() -> None:
    assert_event_matches_contract(AUDIT_ACCESS, "org.refnet.access.recorded.v1", EXAMPLES["access.recorded.v1"])


@pytest.mark.parametrize(("topic", "type_", "expected"), [
    (REFERRAL_EVENTS, "case.registered.v1", "not documented for channel 'refnet.referral.events'"),
    (delivery_topic("agy_1"), "consent.granted.v1", "not documented for channel 'refnet.delivery.{agency_id}'"),
    (INTAKE_EVENTS, "case.reopened.v1", "'org.refnet.case.reopened.v1' on 'refnet.intake.events' is not documented"),
    ("refnet.nowhere", "case.registered.v1", "'refnet.nowhere' is not a channel of docs/asyncapi.yaml"),
    ("refnet.delivery.", "referral.accepted.v1", "is not a channel"),
    (f"{INTAKE_EVENTS}.dlq", "case.registered.v1", "dead-letter topic"),
])
def test_an_undocumented_topic_or_type_is_named(topic: str, type_: str, expected: str) -> None:
    with pytest.raises(AssertionError) as raised:
        assert_event_matches_contract(topic, type_, EXAMPLES.get(type_, {}))
    assert expected in str(raised.value)


def test_an_invalid_payload_is_reported_with_the_path_of_each_error() -> None:
    payload = json.loads(json.dumps(EXAMPLES["service.capacity_changed.v1"]))
    payload["capacity"]["available"] = "three"
    payload["phone"] = "+000"
    del payload["taxonomy"]
    with pytest.raises(AssertionError) as raised:
        assert_event_matches_contract(REGISTRY_EVENTS, "service.capacity_changed.v1", payload)
    message = str(raised.value)
    assert "docs/events/service.capacity_changed.v1.schema.json" in message
    assert "at $.capacity.available: 'three' is not of type 'integer'" in message
    assert "'phone' was unexpected" in message
    assert "'taxonomy' is a required property" in message


def test_a_naive_or_impossible_timestamp_is_refused() -> None:
    for when in ("2026-05-05T09:30:00", "2026-13-01T00:00:00Z"):
        payload = {**EXAMPLES["referral.accepted.v1"], "due_at": when}
        with pytest.raises(AssertionError, match=r"at \$\.due_at: .* is not a 'date-time'"):
            assert_event_matches_contract(REFERRAL_EVENTS, "referral.accepted.v1", payload)


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(AssertionError, match="not a JSON object"):
        assert_event_matches_contract(INTAKE_EVENTS, "case.closed.v1", ["case-1"])  # type: ignore[arg-type]


def test_it_reads_the_documents_not_the_code(tmp_path: Path) -> None:
    # A copy of the docs missing one type: the type is then undocumented, whatever the code says.
    docs = tmp_path / "docs"
    for path in (generator.REPO / "docs").rglob("*"):
        if path.is_file():
            (docs / path.relative_to(generator.REPO / "docs")).parent.mkdir(parents=True, exist_ok=True)
            (docs / path.relative_to(generator.REPO / "docs")).write_bytes(path.read_bytes())
    asyncapi = (docs / "asyncapi.yaml").read_text(encoding="utf-8")
    (docs / "asyncapi.yaml").write_text(
        asyncapi.replace("      case.closed.v1:\n        $ref: '#/components/messages/case.closed.v1'\n", ""),
        encoding="utf-8")
    loaded = documented(docs)
    assert "org.refnet.case.closed.v1" not in loaded.topics[INTAKE_EVENTS]
    assert "org.refnet.case.closed.v1" in documented().topics[INTAKE_EVENTS]
