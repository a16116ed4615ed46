"""Every error is RFC 9457 problem+json without internals; the CloudEvents envelope round-trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from shared import envelope
from shared.errors import Problem, install_problem_handlers
from shared.observability import install_request_middleware


class Body(BaseModel):
    name: str
    age: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_request_middleware(app, "test")

    @app.post("/things")
    async def create(body: Body) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/refused")
    async def refused() -> None:
        raise Problem(409, "consent-missing", "No active consent permits this share.", case_id="c-1")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: Amina Tesfay")

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_validation_error_names_each_field_without_echoing_input(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"name": "Amina Tesfay", "age": "old"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:refnet:problem:validation-error"
    assert body["errors"] == [{"loc": ["body", "age"], "msg": body["errors"][0]["msg"]}]
    assert "Amina" not in response.text and "old" not in response.text


async def test_a_domain_refusal_keeps_its_type_and_extensions(client: httpx.AsyncClient) -> None:
    response = await client.get("/refused")
    assert response.status_code == 409
    assert response.json() == {"type": "urn:refnet:problem:consent-missing", "title": "Conflict", "status": 409,
                               "detail": "No active consent permits this share.", "instance": "/refused",
                               "case_id": "c-1"}


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert (missing.status_code, missing.json()["type"]) == (404, "urn:refnet:problem:not-found")
    wrong = await client.delete("/things")
    assert (wrong.status_code, wrong.json()["type"]) == (405, "urn:refnet:problem:method-not-allowed")


async def test_an_unhandled_exception_is_a_500_with_a_request_id_and_no_internals(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "urn:refnet:problem:internal-error"
    assert body["request_id"] == "req-42"
    assert "secret" not in response.text and "Amina" not in response.text and "RuntimeError" not in response.text


def test_envelope_round_trip_in_binary_mode() -> None:
    event = envelope.Event(id=str(uuid.uuid4()), source="/refnet/referral", type="referral.accepted.v1",
                           subject="ref-1", partition_key="case-9", time=datetime(2026, 1, 2, tzinfo=UTC),
                           data={"referral_id": "ref-1", "status": "accepted"})
    key, value, headers = envelope.encode(event)
    names = dict(headers)
    assert key == b"case-9"
    assert names["ce_type"] == b"org.refnet.referral.accepted.v1"
    assert names["ce_source"] == b"/refnet/referral" and names["content-type"] == b"application/json"
    decoded = envelope.decode(key, value, headers)
    assert (decoded.id, decoded.type, decoded.subject, decoded.partition_key, decoded.data) == (
        event.id, "org.refnet.referral.accepted.v1", "ref-1", "case-9", event.data)
    assert decoded.short_type == "referral.accepted.v1"


@pytest.mark.parametrize("headers,value", [
    ([], b'{"a": 1}'),  # not a binary-mode CloudEvent at all
    ([("ce_id", b"1"), ("ce_source", b"/x"), ("ce_specversion", b"1.0")], b"{}"),  # no type
    ([("ce_id", b"1"), ("ce_source", b"/x"), ("ce_type", b"t"), ("ce_specversion", b"1.0"),
      ("content-type", b"application/json")], b"[1, 2]"),  # data not an object
    ([("ce_id", b"1"), ("ce_source", b"/x"), ("ce_type", b"t"), ("ce_specversion", b"1.0"),
      ("content-type", b"application/json")], b"\xff\xfe"),  # not JSON
])
def test_anything_but_a_complete_event_is_undecodable(headers: list[tuple[str, bytes]], value: bytes) -> None:
    with pytest.raises(envelope.UndecodableEvent):
        envelope.decode(b"k", value, headers)


async def test_metrics_and_logs_label_requests_by_route_template_not_by_id(client: httpx.AsyncClient) -> None:
    from prometheus_client import REGISTRY

    await client.get("/refused")
    await client.get("/nope/123")
    labels = {s.labels["route"] for m in REGISTRY.collect() if m.name == "refnet_http_requests"
              for s in m.samples if s.labels.get("service") == "test"}
    assert "/refused" in labels and "unmatched" in labels
    assert not any("123" in label for label in labels)
