"""intake's OpenAPI document says what the routes do: X-Purpose is required wherever the route asks for it (the
route itself keeps a missing purpose the 400 `purpose-required`, tested in tests/integration/intake), and
every answer has its model."""

from __future__ import annotations

from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from deploy import contract
from services.intake import api


def _asks_purpose(dependant: Dependant) -> bool:
    return any(d.call is api.read_purpose or _asks_purpose(d) for d in dependant.dependencies)


def _operations() -> list[tuple[APIRoute, dict[str, Any]]]:
    document = contract.openapi_document("intake")
    routes = [r for r in api.router.routes if isinstance(r, APIRoute)]
    return [(route, document["paths"][route.path][method.lower()]) for route in routes for method in route.methods]


def test_x_purpose_is_required_exactly_where_a_route_asks_for_it() -> None:
    operations = _operations()
    assert operations
    asking = 0
    for route, operation in operations:
        declared = [p for p in operation.get("parameters", []) if p["name"].lower() == "x-purpose"]
        if _asks_purpose(route.dependant):
            asking += 1
            # Once, required, with the purposes a reader may name (a route without PURPOSE_REQUIRED fails here).
            assert len(declared) == 1, route.path
            assert declared[0]["in"] == "header" and declared[0]["required"] is True, route.path
            assert set(declared[0]["schema"]["enum"]) == set(api.domain.READ_PURPOSES)
        else:
            assert declared == [], route.path
    assert asking == 4  # register, read, update, consent history


def test_every_answer_with_a_body_has_its_model() -> None:
    for route, operation in _operations():
        assert route.response_model is not None, route.path
        status = str(route.status_code or 200)
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").startswith("#/components/schemas/"), route.path
