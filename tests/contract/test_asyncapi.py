"""docs/asyncapi.yaml is a valid AsyncAPI 3.0.0 document and what it says about the wire is what goes on it.

Validity is checked with the AsyncAPI Initiative's own JSON Schema of the 3.0.0 specification (vendored in
tests/data/asyncapi, see its README): no maintained AsyncAPI 3 validator is installable from PyPI. That
schema checks structure and bindings; the references, channel/operation links and address parameters it
cannot see are checked here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from deploy import contract as generator
from shared import contract, envelope
from shared.topics import delivery_topic
from tests.support.contract import FORMAT_CHECKER

REPO = generator.REPO
DOCUMENT_PATH = REPO / generator.ASYNCAPI_FILE
DOCUMENT: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))
SPEC_SCHEMA = json.loads((REPO / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text())


def spec_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SPEC_SCHEMA)
    return [f"{error.json_path}: {error.message[:200]}" for error in validator.iter_errors(document)]


def _refs(node: Any, where: str = "#") -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.append((where, node["$ref"]))
        for key, value in node.items():
            if key != "examples":
                found += _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _refs(item, f"{where}/{i}")
    return found


def _pointer(document: dict[str, Any], ref: str) -> Any:
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def test_it_is_asyncapi_3_0_0_with_kafka_servers() -> None:
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert DOCUMENT["info"]["title"] and DOCUMENT["info"]["version"]
    assert {server["protocol"] for server in DOCUMENT["servers"].values()} == {"kafka"}
    for word in ("binary", "ce_id", "ce_source", "deduplicate", "Kafka key", "docs/events/"):
        assert word in DOCUMENT["info"]["description"], f"the how-to-read guide should mention {word!r}"


def test_it_validates_against_the_official_asyncapi_3_0_0_schema() -> None:
    assert spec_errors(DOCUMENT) == []


@pytest.mark.parametrize("breakage", ["version", "unknown field", "binding version", "parameter schema"])
def test_the_official_schema_catches_a_broken_document(breakage: str) -> None:
    broken = copy.deepcopy(DOCUMENT)
    if breakage == "version":
        broken["asyncapi"] = "3.0.1"
    elif breakage == "unknown field":
        broken["channels"]["intakeEvents"]["adress"] = "refnet.intake.events"
    elif breakage == "binding version":
        broken["components"]["messages"]["case.registered.v1"]["bindings"]["kafka"]["bindingVersion"] = "9.9.9"
    else:  # AsyncAPI 3 parameters have no schema (2.x had): a document written the old way is invalid
        broken["channels"]["delivery"]["parameters"]["agency_id"]["schema"] = {"type": "string"}
    assert spec_errors(broken), breakage


def test_every_reference_resolves() -> None:
    for where, ref in _refs(DOCUMENT):
        if ref.startswith("#/"):
            _pointer(DOCUMENT, ref)  # KeyError names the dangling part
        else:
            assert (DOCUMENT_PATH.parent / ref).is_file(), f"{where}: {ref} does not exist"


def test_operations_send_the_messages_of_their_channel() -> None:
    operated = set()
    for name, operation in DOCUMENT["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        operated.add(channel_ref)
        assert operation["messages"], name
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), (name, message)
    assert operated == {f"#/channels/{channel}" for channel in DOCUMENT["channels"]}, "a channel nobody uses"


def test_channel_parameters_match_the_address() -> None:
    for name, channel in DOCUMENT["channels"].items():
        assert channel["messages"], name
        placeholders = set(re.findall(r"\{([^{}]+)\}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), name


def test_messages_name_their_type_and_key() -> None:
    for message_id, message in DOCUMENT["components"]["messages"].items():
        if message_id == "deadLetter":
            continue
        assert message["name"] == envelope.full_type(message["title"])
        assert message["headers"]["allOf"][1]["properties"]["ce_type"] == {"const": message["name"]}
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert message["payload"] == {"$ref": f"./events/{message['title']}.schema.json"}


# --- the headers the envelope really writes match the documented headers ---------------------------------------


def _header_validator(message_id: str) -> jsonschema.Draft7Validator:
    # AsyncAPI schemas are draft-07 supersets; the document is the resource the header $refs point into.
    resource = referencing.Resource.from_contents(DOCUMENT, default_specification=referencing.jsonschema.DRAFT7)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource("urn:refnet:asyncapi", resource)
    schema = {"$ref": f"urn:refnet:asyncapi#/components/messages/{message_id}/headers"}
    return jsonschema.Draft7Validator(schema, registry=registry, format_checker=FORMAT_CHECKER)


def _channel_of(topic: str) -> str:
    if contract.is_delivery_topic(topic):
        return "delivery"
    return next(name for name, channel in DOCUMENT["channels"].items() if channel["address"] == topic)


@pytest.mark.parametrize("message_id", [m for m in DOCUMENT["components"]["messages"] if m != "deadLetter"])
def test_message_examples_match_their_headers_and_payload(message_id: str) -> None:
    message = DOCUMENT["components"]["messages"][message_id]
    for example in message["examples"]:
        errors = [f"{e.json_path}: {e.message}" for e in _header_validator(message_id).iter_errors(example["headers"])]
        assert not errors, errors
        assert example["payload"] == generator.example_payloads()[message["title"]]


@pytest.mark.parametrize(("topic", "type_", "source", "key"), [
    ("refnet.registry.events", contract.AGENCY_SUSPENDED, "/refnet/registry", "agy_1"),
    ("refnet.intake.events", contract.CONSENT_GRANTED, "/refnet/intake", "case-1"),
    ("refnet.referral.events", contract.REFERRAL_OVERDUE, "/refnet/referral", "case-1"),
    (delivery_topic("agy_1"), "referral.accepted.v1", "/refnet/referral", "ref-1"),
    ("refnet.audit.access", contract.ACCESS_RECORDED, "/refnet/registry", "agy_1"),
])
def test_the_envelope_writes_the_documented_headers(topic: str, type_: str, source: str, key: str) -> None:
    event = envelope.Event(id="0b5e0c1e-3c1a-4d5e-9f7a-2b8c6d4e0f13", source=source, type=type_, subject="s-1",
                           partition_key=key, time=datetime(2026, 5, 4, 9, 30, tzinfo=UTC), data={})
    wire_key, _value, headers = envelope.encode(event)
    as_text = {name: value.decode() for name, value in headers}
    channel = _channel_of(topic)
    message_id = DOCUMENT["channels"][channel]["messages"][type_]["$ref"].rsplit("/", 1)[1]
    errors = [f"{e.json_path}: {e.message}" for e in _header_validator(message_id).iter_errors(as_text)]
    assert not errors, errors
    assert wire_key.decode() == as_text["ce_partitionkey"] == key


def test_a_wrong_header_is_refused() -> None:
    validator = _header_validator("case.registered.v1")
    good = DOCUMENT["components"]["messages"]["case.registered.v1"]["examples"][0]["headers"]
    assert validator.is_valid(good)
    for name, value in (("ce_type", "org.refnet.case.closed.v1"), ("ce_source", "/refnet/referral"),
                        ("ce_specversion", "0.3"), ("content-type", "application/cloudevents+json"),
                        ("ce_time", "yesterday")):
        assert not validator.is_valid({**good, name: value}), name
    assert not validator.is_valid({k: v for k, v in good.items() if k != "ce_subject"})


def test_vendored_spec_schema_is_the_published_one() -> None:
    readme = (REPO / "tests" / "data" / "asyncapi" / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256((REPO / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json").read_bytes())
    assert digest.hexdigest() in readme
    assert Path(REPO / "tests" / "data" / "asyncapi" / "LICENSE").is_file()
