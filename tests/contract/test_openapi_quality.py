"""The OpenAPI documents are usable by an integrator's code generator and by a person reading them.

`test_documents_match_code` keeps `docs/openapi/*.json` equal to what the code renders; this checks what they
say: each is valid OpenAPI 3.1, every answer with a body has a schema, and every property and parameter says
what it means and shows an example. A failure lists every place at once, by JSON pointer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from deploy import contract

SERVICES = ("registry", "intake", "referral", "audit")
_NO_BODY = {"204", "205", "304"}
#: Answers whose standard says the body is empty although the status is 200.
_EMPTY_BY_STANDARD = {"POST /oauth/revoke 200"}  # RFC 7009 section 2.2


def _document(service: str) -> dict[str, Any]:
    path = contract.REPO / contract.OPENAPI_DIR / f"{service}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def _says_something(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    """A schema a generator can type: not ``{}`` and not an object with nothing said about its members."""
    schema = _resolve(document, schema)
    if not schema:
        return False
    if any(key in schema for key in ("anyOf", "oneOf", "allOf")):
        return all(_says_something(document, part) for key in ("anyOf", "oneOf", "allOf")
                   for part in schema.get(key, []))
    if schema.get("type") == "object":
        return bool(schema.get("properties")) or isinstance(schema.get("additionalProperties"), dict)
    if schema.get("type") == "array":
        return _says_something(document, schema.get("items", {}))
    return "type" in schema or "enum" in schema or "const" in schema


def _has_example(document: dict[str, Any], holder: dict[str, Any], schema: dict[str, Any]) -> bool:
    """An example beside the property or parameter, or one its type makes needless (a listed enum, a
    constant, a nested model whose own properties carry theirs)."""
    if holder.get("example") is not None or holder.get("examples"):
        return True
    if schema.get("examples") or schema.get("example") is not None:
        return True
    for part in [schema, *schema.get("anyOf", []), *schema.get("oneOf", []), *schema.get("allOf", [])]:
        if part is not schema and _has_example(document, part, part):
            return True
        if "$ref" in part:
            target = _resolve(document, part)
            if target.get("properties") or "enum" in target or target.get("examples"):
                return True
        if "enum" in part or "const" in part:
            return True
        if part.get("type") == "array" and isinstance(part.get("items"), dict) and (
                "$ref" in part["items"] or "enum" in part["items"]):
            return True
    return False


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "patch", "delete", "head", "options"}:
                yield f"{method.upper()} {path}", operation


def _faults(document: dict[str, Any]) -> list[str]:
    faults: list[str] = []
    for name, operation in _operations(document):
        for status, response in operation.get("responses", {}).items():
            if not status.startswith("2") or status in _NO_BODY:
                continue
            content = _resolve(document, response).get("content")
            if not content and f"{name} {status}" in _EMPTY_BY_STANDARD:
                continue
            if not content:
                faults.append(f"{name} {status}: no content declared")
                continue
            for media, body in content.items():
                if not _says_something(document, body.get("schema", {})):
                    faults.append(f"{name} {status} {media}: the schema says nothing")
        for parameter in operation.get("parameters", []):
            parameter = _resolve(document, parameter)
            where = f"{name} {parameter['in']} parameter {parameter['name']}"
            schema = parameter.get("schema", {})
            if not (parameter.get("description") or schema.get("description")):
                faults.append(f"{where}: no description")
            if not _has_example(document, parameter, schema):
                faults.append(f"{where}: no example")
    for model, schema in document.get("components", {}).get("schemas", {}).items():
        for prop, spec in schema.get("properties", {}).items():
            where = f"#/components/schemas/{model}/properties/{prop}"
            if not (spec.get("description") or _resolve(document, spec).get("description")):
                faults.append(f"{where}: no description")
            if not _has_example(document, spec, spec):
                faults.append(f"{where}: no example")
    return faults


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_is_valid_openapi_3_1(service: str) -> None:
    document = _document(service)
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises, naming the first place that breaks the specification


@pytest.mark.parametrize("service", SERVICES)
def test_every_answer_has_a_schema_and_every_property_a_description_and_an_example(service: str) -> None:
    faults = _faults(_document(service))
    assert not faults, f"{len(faults)} places in docs/openapi/{service}.json:\n" + "\n".join(faults)


def test_the_checks_find_what_they_are_for() -> None:
    """The rules above are not vacuous: a document with each fault is caught, one without passes."""
    good = {
        "paths": {"/things/{id}": {"get": {
            "parameters": [{"name": "id", "in": "path", "description": "the thing", "example": "thing_1",
                            "schema": {"type": "string"}}],
            "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/T"}}}},
                          "204": {"description": "none"}}}}},
        "components": {"schemas": {"T": {"type": "object", "properties": {
            "id": {"type": "string", "description": "its id", "examples": ["thing_1"]},
            "kind": {"enum": ["a", "b"], "description": "its kind"}}}}},
    }
    assert _faults(good) == []
    bad = json.loads(json.dumps(good))
    bad["paths"]["/things/{id}"]["get"]["responses"]["201"] = {"content": {"application/json": {"schema": {}}}}
    bad["paths"]["/things/{id}"]["get"]["parameters"][0].pop("description")
    bad["components"]["schemas"]["T"]["properties"]["id"].pop("examples")
    bad["components"]["schemas"]["T"]["properties"]["free"] = {"type": "object"}
    assert _faults(bad) == [
        "GET /things/{id} 201 application/json: the schema says nothing",
        "GET /things/{id} path parameter id: no description",
        "#/components/schemas/T/properties/id: no example",
        "#/components/schemas/T/properties/free: no description",
        "#/components/schemas/T/properties/free: no example",
    ]

