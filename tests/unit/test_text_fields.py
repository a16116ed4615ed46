"""Every text a client sends -- every string of every request body and query parameter of every service --
refuses NUL and control characters (PostgreSQL cannot store NUL: it was a 500 that wrote the text into the
log), while free text keeps its line feeds and tabs."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from deploy.contract import service_app
from services.intake import schemas as intake_schemas
from services.referral.api import CreateReferral, Transition
from shared.text import FreeText, Line

SERVICES = ("registry", "intake", "referral", "audit")
HOSTILE = ("a\x00b", "a\x07b", "a\x1bb", "a\x7fb", "a\x85b", "a\rb")


def _carries_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    return any(_carries_str(arg) for arg in typing.get_args(annotation) if not isinstance(arg, FieldInfo))


def _shaped(annotation: Any, text: str) -> Iterator[Any]:
    """Values of ``annotation``'s shape with ``text`` where a string goes."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is str:
        yield text
    elif origin is Annotated:
        yield from _shaped(args[0], text)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _shaped(arg, text)
    elif origin in (list, set, frozenset):
        yield from ([v] for v in _shaped(args[0], text))
    elif origin is dict:
        yield from ({"en": v} for v in _shaped(args[1], text))


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for inner in _nested(field.annotation):
            yield from _models(inner, seen)


def _nested(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _nested(arg)


def _api_routes(routes: Any) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router (FastAPI >= 0.16x)
            yield from _api_routes(route.original_router.routes)


def text_fields() -> Iterator[tuple[str, Any]]:
    """(where, a TypeAdapter) for every string-carrying field of the services' request models and queries."""
    for service in SERVICES:
        seen: set[type[BaseModel]] = set()
        for route in _api_routes(service_app(service).routes):
            body = route.body_field
            for outer in _nested(body.field_info.annotation if body is not None else None):
                for model in _models(outer, seen):
                    for name, field in model.model_fields.items():
                        if _carries_str(field.annotation):
                            yield (f"{service} {model.__name__}.{name}",
                                   (Annotated[field.annotation, field], field.annotation))
            for param in route.dependant.query_params:
                info = param.field_info
                if _carries_str(info.annotation):
                    yield (f"{service} {route.path} ?{param.name}",
                           (Annotated[info.annotation, info], info.annotation))


FIELDS = sorted(text_fields(), key=lambda item: item[0])


def test_the_walk_finds_the_free_text_fields() -> None:
    names = {where for where, _ in FIELDS}
    assert {"referral CreateReferral.reason", "referral Transition.note", "intake Screening.notes",
            "intake WithdrawBody.reason", "intake OverrideBody.justification",
            "registry ServiceCreate.descriptions"} <= names
    assert len(names) > 40


@pytest.mark.parametrize(("where", "types_"), FIELDS, ids=[where for where, _ in FIELDS])
def test_every_text_field_refuses_nul_and_control_characters(where: str, types_: tuple[Any, Any]) -> None:
    adapter, annotation = TypeAdapter(types_[0]), types_[1]
    for text in HOSTILE:
        for value in _shaped(annotation, text):
            with pytest.raises(ValidationError):
                adapter.validate_python(value)


def test_free_text_keeps_line_feeds_and_tabs_and_lines_do_not() -> None:
    text = "First line\n\tsecond, indented -- é, ü, 中文, عربي"
    assert TypeAdapter(FreeText).validate_python(text) == text
    assert CreateReferral(case_id="case-1", to_agency="agy", pathway="service", service_type="shelter",
                          priority="normal", reason=text, shared_categories=["identity"]).reason == text
    assert Transition(to="received", note=text).note == text
    assert intake_schemas.WithdrawBody(reason=text).reason == text
    with pytest.raises(ValidationError):
        TypeAdapter(Line).validate_python(text)
    assert TypeAdapter(Line).validate_python("Amina O'Neil-Ba 中文") == "Amina O'Neil-Ba 中文"


def test_the_refusal_does_not_quote_the_text() -> None:
    with pytest.raises(ValidationError) as refused:
        Transition(to="received", note="secret\x00")
    (error,) = refused.value.errors()
    assert error["msg"] == "Value error, must not contain NUL characters"
    assert "secret" not in error["msg"]
