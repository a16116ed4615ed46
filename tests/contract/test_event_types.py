"""One list of event types (shared/contract.py), and the code, the documents and the outbox all agree on it.

- every contract type has a payload model, a schema file, a summary and a message on its channel in the
  committed AsyncAPI document, and the document lists no type the code does not have;
- no module spells a type string of its own: the names come from shared/contract.py;
- the outbox refuses to write an event whose type is not documented for its topic.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import contract as generator
from services.referral import domain as referral_domain
from shared import contract
from shared.envelope import full_type
from shared.outbox import add_event
from shared.topics import ALL_TOPICS, AUDIT_ACCESS, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS, delivery_topic

REPO = generator.REPO
ASYNCAPI = yaml.safe_load((REPO / generator.ASYNCAPI_FILE).read_text(encoding="utf-8"))


def _documented_types_by_address() -> dict[str, set[str]]:
    messages = ASYNCAPI["components"]["messages"]
    found: dict[str, set[str]] = {}
    for channel in ASYNCAPI["channels"].values():
        names = {messages[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in channel["messages"].values()}
        found[channel["address"]] = {name for name in names if name.startswith("org.refnet.")}
    return found


def test_the_list_has_no_duplicates_and_every_topic_is_listed() -> None:
    assert len(contract.ALL_TYPES) == len(set(contract.ALL_TYPES))
    assert set(contract.TYPES_BY_TOPIC) == set(ALL_TOPICS)
    assert set(contract.SUMMARIES) == set(contract.ALL_TYPES)
    for type_ in contract.ALL_TYPES:
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+\.v[0-9]+", type_), type_


def test_every_type_has_a_payload_model_and_every_model_a_type() -> None:
    assert set(generator.PAYLOAD_MODELS) == set(contract.ALL_TYPES)


def test_referral_types_follow_the_state_machine() -> None:
    assert {state.value for state in referral_domain.Status} == set(contract.REFERRAL_STATES)
    assert contract.referral_state_type("accepted") == "referral.accepted.v1"
    with pytest.raises(ValueError, match="not a referral state"):
        contract.referral_state_type("overdue")  # a flag with its own type, not a state


def test_the_committed_asyncapi_documents_exactly_the_contract_types() -> None:
    documented = _documented_types_by_address()
    expected = {topic: {full_type(t) for t in types} for topic, types in contract.TYPES_BY_TOPIC.items()}
    expected[delivery_topic("{agency_id}")] = {full_type(t) for t in contract.REFERRAL_TYPES}
    assert {address: types for address, types in documented.items() if types} == expected
    # The dead-letter channels carry no contract type; every other channel does.
    assert {address for address, types in documented.items() if not types} == {f"{t}.dlq" for t in ALL_TOPICS}


def test_every_type_has_a_committed_schema_file_and_no_file_is_extra() -> None:
    files = {path.name for path in (REPO / generator.EVENTS_DIR).glob("*" + generator.SCHEMA_SUFFIX)}
    assert files == {generator.schema_path(t).name for t in contract.ALL_TYPES}


def test_types_for_topic() -> None:
    assert contract.types_for_topic(REGISTRY_EVENTS) == contract.REGISTRY_TYPES
    assert contract.types_for_topic(INTAKE_EVENTS) == contract.INTAKE_TYPES
    assert contract.types_for_topic(REFERRAL_EVENTS) == contract.REFERRAL_TYPES
    assert contract.types_for_topic(AUDIT_ACCESS) == (contract.ACCESS_RECORDED,)
    assert contract.types_for_topic(delivery_topic("agy_1")) == contract.REFERRAL_TYPES
    assert contract.types_for_topic("refnet.delivery.") == ()
    assert contract.types_for_topic("refnet.intake.events.dlq") == ()


# --- nobody spells a type string of their own ------------------------------------------------------------------

TYPE_LIKE = re.compile(r"^(org\.refnet\.)?[a-z_]+\.[a-z_]+\.v[0-9]+$")
SOURCES = [*sorted((REPO / "services").rglob("*.py")), *sorted((REPO / "shared").glob("*.py")),
           *sorted((REPO / "deploy").rglob("*.py"))]


def _spelled_types(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and TYPE_LIKE.match(node.value):
            found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr):  # f"referral.{state}.v1" rebuilds a type name just the same
            last = node.values[-1] if node.values else None
            if isinstance(last, ast.Constant) and re.search(r"\.v[0-9]+$", str(last.value)):
                found.append(f"{node.lineno}: f-string ending {last.value!r}")
    return found


def test_type_names_are_spelled_only_in_shared_contract() -> None:
    offenders = {str(path.relative_to(REPO)): found for path in SOURCES
                 if path != REPO / "shared" / "contract.py" and (found := _spelled_types(path))}
    assert not offenders, f"import event type names from shared/contract.py instead: {offenders}"


def test_the_scan_sees_a_spelled_type(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('A = "case.closed.v1"\nB = f"referral.{s}.v1"\nC = "consent.grant"\n', encoding="utf-8")
    assert _spelled_types(module) == ["1: 'case.closed.v1'", "2: f-string ending '.v1'"]


# --- the outbox refuses an undocumented type ----------------------------------------------------------------


class RecordingSession:
    """Stands in for an AsyncSession: add_event's only use of it is one execute (an INSERT of its rows)."""

    def __init__(self) -> None:
        self.executed: list[dict[str, Any]] = []

    async def execute(self, _statement: object, rows: list[dict[str, Any]]) -> None:
        self.executed.extend(rows)


async def _add(session: RecordingSession, topic: str, type_: str) -> None:
    await add_event(session, source="/refnet/test", topic=topic, type=type_,  # type: ignore[arg-type]
                    aggregate_type="Case", aggregate_id="case-1", payload={})


@pytest.mark.parametrize(("topic", "type_"), [
    (INTAKE_EVENTS, "case.registered.v1"),
    (INTAKE_EVENTS, "org.refnet.case.registered.v1"),
    (REFERRAL_EVENTS, "referral.overdue.v1"),
    (delivery_topic("agy_1"), "referral.accepted.v1"),
    (AUDIT_ACCESS, "access.recorded.v1"),
    ("test.harness", "test.happened.v1"),  # outside the refnet. namespace: not the contract's business
])
async def test_the_outbox_takes_a_documented_type(topic: str, type_: str) -> None:
    session = RecordingSession()
    await _add(session, topic, type_)
    assert session.executed[0]["type"] == full_type(type_)
    assert session.executed[0]["topic"] == topic


@pytest.mark.parametrize(("topic", "type_"), [
    (INTAKE_EVENTS, "case.reopened.v1"),  # not in the contract at all
    (INTAKE_EVENTS, "case.registered.v2"),  # a version nobody documented
    (REFERRAL_EVENTS, "case.registered.v1"),  # documented, but for another topic
    (delivery_topic("agy_1"), "consent.granted.v1"),  # delivery topics carry referral events only
    ("refnet.intake.event", "case.registered.v1"),  # a misspelt RefNet topic
    (f"{INTAKE_EVENTS}.dlq", "case.registered.v1"),  # dead letters are written by consumers, never the outbox
])
async def test_the_outbox_refuses_an_undocumented_type(topic: str, type_: str) -> None:
    session = RecordingSession()
    with pytest.raises(ValueError, match=r"not in the event contract.*refnet contract export"):
        await _add(session, topic, type_)
    assert session.executed == []

