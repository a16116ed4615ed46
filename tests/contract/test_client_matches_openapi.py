"""The integrators' client (`refnet_client`) mirrors the OpenAPI documents rather than importing the services;
this keeps the mirror true: every call is an operation the documents declare, and every field a client model
requires is a property of that operation's answer that the document promises, and every optional one is in
some documented answer the model reads (a secret only on creation, a history only on one referral)."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from deploy import contract
from refnet_client import calls
from refnet_client.calls import Call

_ANY_ID = "x_1"


def _document(service: str) -> dict[str, Any]:
    return json.loads((contract.REPO / contract.OPENAPI_DIR / f"{service}.json").read_text(encoding="utf-8"))


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _every_call() -> list[tuple[str, Call[Any]]]:
    """Each function of `refnet_client.calls` called with placeholder arguments."""
    found = []
    for name, function in inspect.getmembers(calls, inspect.isfunction):
        if function.__module__ != calls.__name__ or name.startswith("_"):
            continue
        arguments: dict[str, Any] = {}
        for parameter in inspect.signature(function).parameters.values():
            if parameter.default is inspect.Parameter.empty:
                annotation = str(parameter.annotation)
                if "dict" in annotation:
                    arguments[parameter.name] = {}
                elif "int" in annotation:
                    arguments[parameter.name] = 1
                elif parameter.name == "purpose":
                    arguments[parameter.name] = "case_management"
                else:
                    arguments[parameter.name] = _ANY_ID
        found.append((name, function(**arguments)))
    return found


CALLS = _every_call()


def _operation(call: Call[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    document = _document(call.service)
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, call.path) and call.method.lower() in item:
            return document, item[call.method.lower()]
    raise AssertionError(f"{call.method} {call.path} is not an operation of docs/openapi/{call.service}.json")


def _model_of(call: Call[Any]) -> type[BaseModel] | None:
    owner = getattr(call.parse, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, BaseModel) else None


def _answer_schema(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    for status, response in operation["responses"].items():
        if status.startswith("2"):
            content = _resolve(document, response).get("content", {})
            for media, body in content.items():
                if "json" in media:
                    return _resolve(document, body.get("schema", {}))
    return None


#: (model, field) -> whether some documented answer the model reads has it; filled by the per-call test.
SEEN: dict[tuple[str, str], bool] = {}


def _mismatches(document: dict[str, Any], model: type[BaseModel], schema: dict[str, Any], where: str) -> list[str]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    found = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        SEEN[(model.__name__, key)] = SEEN.get((model.__name__, key), False) or key in properties
        if key not in properties:
            if field.is_required():
                found.append(f"{where}.{key}: not in the documented answer")
            continue
        if field.is_required() and key not in required:
            found.append(f"{where}.{key}: the client requires it, the document does not promise it")
        nested = [a for a in get_args(field.annotation) or (field.annotation,)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            target = _resolve(document, properties[key])
            for option in [target, *target.get("anyOf", [])]:
                option = _resolve(document, option)
                if option.get("type") == "array":
                    option = _resolve(document, option.get("items", {}))
                if option.get("properties"):
                    found += _mismatches(document, nested[0], option, f"{where}.{key}")
                    break
    return found


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[name for name, _ in CALLS])
def test_each_call_is_a_documented_operation_and_its_model_a_documented_answer(name: str, call: Call[Any]) -> None:
    document, operation = _operation(call)
    model = _model_of(call)
    if model is None:
        return  # an answer the client passes on as it is (None, a JWKS)
    schema = _answer_schema(document, operation)
    assert schema is not None, f"{name}: the document declares no JSON answer"
    assert not (faults := _mismatches(document, model, schema, model.__name__)), "\n".join(faults)


def test_every_field_of_a_client_model_is_in_some_documented_answer() -> None:
    for _name, call in CALLS:  # the same walk as above, so this test stands alone under xdist
        model = _model_of(call)
        if model is not None:
            document, operation = _operation(call)
            if (schema := _answer_schema(document, operation)) is not None:
                _mismatches(document, model, schema, model.__name__)
    assert len(CALLS) >= 25, [name for name, _ in CALLS]
    assert not (unknown := sorted(f"{m}.{f}" for (m, f), seen in SEEN.items() if not seen)), unknown
