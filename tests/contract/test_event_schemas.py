"""Payloads built with the services' own models validate against the committed JSON Schemas, and the schemas
have teeth: a payload missing a field, with a field too many, or of the wrong type is refused.

The committed files are read (not a fresh rendering), so this is what an integrator validates against.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from deploy import contract as generator
from shared import contract
from shared.envelope import full_type
from tests.support.contract import FORMAT_CHECKER

REPO = generator.REPO
EXAMPLES = generator.example_payloads()

# Names of personal data (docs/domain.md, docs/contract.md "Bodies"): none may be a payload field anywhere.
PERSONAL = {"given_name", "family_name", "other_names", "birth_date", "estimated_age", "phone", "email",
            "address", "documents", "notes", "note", "reason", "justification", "witness", "capacity_note"}

# JSON Schema keywords that mean the same in draft-07 (what AsyncAPI 3.0 schema tooling reads) and 2020-12,
# plus the 2020-12 containers pydantic uses. A schema needing more would be misread by AsyncAPI tools.
PORTABLE_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "examples", "default", "type", "properties",
    "required", "additionalProperties", "items", "anyOf", "allOf", "oneOf", "enum", "const", "format",
    "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "uniqueItems", "propertyNames", "patternProperties", "readOnly", "writeOnly",
    "deprecated",
}
NAMED = ("properties", "patternProperties", "$defs")  # their keys are names or patterns, not keywords


def committed_schema(type_: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((REPO / generator.schema_path(type_)).read_text(encoding="utf-8"))
    return schema


def validator(type_: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(committed_schema(type_), format_checker=FORMAT_CHECKER)


def _keywords(node: Any, inside_properties: bool = False) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if not inside_properties:
                found.add(key)
            if key != "examples":  # examples are data
                found |= _keywords(value, inside_properties=key in NAMED and not inside_properties)
    elif isinstance(node, list):
        for item in node:
            found |= _keywords(item)
    return found


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_committed_schema_is_a_valid_2020_12_schema_naming_its_type(type_: str) -> None:
    schema = committed_schema(type_)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:refnet:schema:{full_type(type_)}"
    assert schema["title"] == full_type(type_)
    for topic in [t for t, types in contract.TYPES_BY_TOPIC.items() if type_ in types]:
        assert f"`{topic}`" in schema["description"], "the description names the topic that carries the type"


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_the_model_built_example_validates_against_the_committed_schema(type_: str) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator(type_).iter_errors(EXAMPLES[type_])]
    assert not errors, f"{type_}: {errors} (run `refnet contract export` if the model changed)"
    assert committed_schema(type_)["examples"] == [EXAMPLES[type_]]


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_a_broken_payload_is_refused(type_: str) -> None:
    check = validator(type_)
    schema = committed_schema(type_)
    required = schema["required"]
    assert required, f"{type_}: a payload with no required field says nothing"

    missing = copy.deepcopy(EXAMPLES[type_])
    del missing[required[0]]
    assert not check.is_valid(missing)

    extra = {**EXAMPLES[type_], "given_name": "x"}  # closed: an unknown field, e.g. a name, is refused
    assert not check.is_valid(extra)

    wrong = {**EXAMPLES[type_], required[0]: {"not": "a scalar"}}
    assert not check.is_valid(wrong)


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_no_payload_field_is_personal_data(type_: str) -> None:
    def field_names(node: Any) -> set[str]:
        names: set[str] = set()
        if isinstance(node, dict):
            names |= set(node.get("properties", {}))
            for value in node.values():
                names |= field_names(value)
        elif isinstance(node, list):
            for item in node:
                names |= field_names(item)
        return names

    schema = committed_schema(type_)
    assert not field_names({k: v for k, v in schema.items() if k != "examples"}) & PERSONAL


@pytest.mark.parametrize("type_", contract.ALL_TYPES)
def test_schemas_use_only_keywords_asyncapi_tools_read_alike(type_: str) -> None:
    unknown = _keywords(committed_schema(type_)) - PORTABLE_KEYWORDS
    assert not unknown, f"{type_} uses {sorted(unknown)}: check AsyncAPI 3.0 tools read it, then allow it here"


def test_timestamps_are_checked_as_rfc3339() -> None:
    check = validator(contract.CONSENT_GRANTED)
    good = EXAMPLES[contract.CONSENT_GRANTED]
    assert check.is_valid({**good, "valid_from": "2026-05-04T09:30:00.123456+00:00"})
    for bad in ("2026-05-04", "2026-05-04T09:30:00", "2026-02-30T09:30:00Z", "soon"):
        assert not check.is_valid({**good, "valid_from": bad}), bad


def test_examples_hold_no_personal_data() -> None:
    text = json.dumps(EXAMPLES)
    for word in ("Amina", "Tesfay", "1999-04-02", "+249", "@"):
        assert word not in text


def test_schema_files_are_where_the_asyncapi_messages_point() -> None:
    asyncapi = (REPO / generator.ASYNCAPI_FILE).read_text(encoding="utf-8")
    for type_ in contract.ALL_TYPES:
        assert f"$ref: ./events/{type_}.schema.json" in asyncapi, type_
