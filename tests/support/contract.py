"""Check an event read from Kafka against the committed contract: ``docs/asyncapi.yaml`` and ``docs/events/``.

For tests that watch the running system (end-to-end scenarios) and for the contract tests themselves::

    from tests.support.contract import assert_event_matches_contract

    assert_event_matches_contract(record.topic, event.type, event.data)

It reads the documents, not the code, so what it accepts is what an integrator was promised: the type must
be one the AsyncAPI document lists for that topic (``refnet.delivery.<agency_id>`` matches the delivery
channel), and the payload must validate against that type's JSON Schema.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from shared.envelope import TYPE_PREFIX
from shared.kafka import DLQ_SUFFIX

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
ASYNCAPI = DOCS / "asyncapi.yaml"

# The stock format checker skips date-time unless an extra package is installed; payload timestamps are
# part of the contract (RFC 3339 with an offset), so check them with the standard library instead.
FORMAT_CHECKER = jsonschema.FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True  # "format" constrains strings only; the type keyword judges the rest
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("z", "Z"))  # also refuses 2026-02-30 and 25:00
    return True


@dataclass(frozen=True)
class Documented:
    """The contract as the documents state it."""

    topics: dict[str, frozenset[str]]  # exact topic -> full ce_types
    templates: list[tuple[re.Pattern[str], str, frozenset[str]]]  # (address regex, address, full ce_types)
    schemas: dict[str, tuple[Path, jsonschema.protocols.Validator]]  # full ce_type -> (file, validator)

    def types_for(self, topic: str) -> tuple[str, frozenset[str]] | None:
        """(the documented address, its types) for a concrete topic name, or None if it is not documented."""
        if topic in self.topics:
            return topic, self.topics[topic]
        for pattern, address, types in self.templates:
            if pattern.fullmatch(topic):
                return address, types
        return None


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/"), f"docs/asyncapi.yaml: only local references are expected here, not {ref!r}"
    target: Any = document
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    assert isinstance(target, dict), ref
    return target


def _address_pattern(address: str) -> re.Pattern[str]:
    # A channel parameter stands for one name segment of a Kafka topic (letters, digits, _ and -).
    parts = re.split(r"\{[^{}]+\}", address)
    return re.compile("[A-Za-z0-9_-]+".join(re.escape(part) for part in parts))


@functools.cache
def documented(docs: Path = DOCS) -> Documented:
    """Load and index the committed documents once per process (called for every event in a scenario)."""
    asyncapi_file = docs / "asyncapi.yaml"
    document = yaml.safe_load(asyncapi_file.read_text(encoding="utf-8"))
    topics: dict[str, frozenset[str]] = {}
    templates: list[tuple[re.Pattern[str], str, frozenset[str]]] = []
    schemas: dict[str, tuple[Path, jsonschema.protocols.Validator]] = {}
    for channel in document["channels"].values():
        types = set()
        for reference in channel["messages"].values():
            message = _resolve(document, reference)
            name = message.get("name", "")
            if not name.startswith(TYPE_PREFIX):
                continue  # a dead letter is not a contract event
            types.add(name)
            payload_ref = message["payload"]["$ref"]
            path = (asyncapi_file.parent / payload_ref).resolve()
            if name not in schemas:
                schema = json.loads(path.read_text(encoding="utf-8"))
                jsonschema.Draft202012Validator.check_schema(schema)
                schemas[name] = (path, jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER))
        if not types:
            continue
        address = channel["address"]
        if "{" in address:
            templates.append((_address_pattern(address), address, frozenset(types)))
        else:
            topics[address] = frozenset(types)
    return Documented(topics, templates, schemas)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def assert_event_matches_contract(topic: str, event_type: str, data: dict[str, Any]) -> None:
    """Raise AssertionError unless ``event_type`` is documented for ``topic`` and ``data`` matches its schema.

    ``event_type`` may be the full ``ce_type`` (``org.refnet.case.registered.v1``, as on the wire) or the
    short one (``case.registered.v1``). ``topic`` is the concrete Kafka topic, e.g. ``refnet.delivery.agy_1``.
    """
    contract = documented()
    if topic.endswith(DLQ_SUFFIX):
        raise AssertionError(f"{topic} is a dead-letter topic: what lands there is, by definition, not a "
                             "contract event (check dead letters separately)")
    found = contract.types_for(topic)
    if found is None:
        known = sorted([*contract.topics, *(address for _pattern, address, _types in contract.templates)])
        raise AssertionError(f"topic {topic!r} is not a channel of docs/asyncapi.yaml (documented: {', '.join(known)})")
    address, types = found
    full = event_type if event_type.startswith(TYPE_PREFIX) else TYPE_PREFIX + event_type
    if full not in types:
        raise AssertionError(f"event type {full!r} on {topic!r} is not documented for channel {address!r} in "
                             f"docs/asyncapi.yaml (documented there: {', '.join(sorted(types))})")
    if not isinstance(data, dict):
        raise AssertionError(f"{full} on {topic}: the payload is a {type(data).__name__}, not a JSON object")
    path, validator = contract.schemas[full]
    errors = sorted(validator.iter_errors(data), key=lambda error: (list(map(str, error.absolute_path)),
                                                                      error.message))
    if errors:
        shown = "\n".join(f"  at {error.json_path}: {error.message}" for error in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise AssertionError(f"{full} on {topic}: payload does not match {_shown(path)}:\n{shown}{more}")
