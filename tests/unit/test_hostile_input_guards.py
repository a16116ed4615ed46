"""The guards issue #8's reliability suite asked for, each on its own: revoked tokens and suspended agencies refused
by the resource server, streamed oversized bodies refused with 413, validation answers kept small, incomplete or
oversized events refused by the envelope, and every problem answer declared in OpenAPI."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from starlette.types import Message

from shared import envelope
from shared.app import BodySizeLimit
from shared.auth import Principal, TokenValidator, require_scopes
from shared.errors import MAX_LISTED_ERRORS, Problem, add_problem_responses, install_problem_handlers
from shared.revocation import RevocationList
from tests.support.issuer import LocalIssuer, local_issuer_fixture

issuer = local_issuer_fixture()


def _event(type_: str, data: dict[str, object], at: datetime | None = None) -> envelope.Event:
    return envelope.Event(id=str(uuid.uuid4()), source="/refnet/registry", type=type_, subject=None,
                          partition_key="agency-1", time=at or datetime.now(UTC), data=data)


# --- revocation -----------------------------------------------------------------------------------------------


def test_a_revoked_token_is_refused_by_its_jti_and_no_other() -> None:
    revocations = RevocationList()
    revocations.apply(_event("token.revoked.v1", {"jti": "t-1", "agency_id": "agency-1", "client_id": "c",
                                                  "expires_at": "2099-01-01T00:00:00Z"}))
    assert revocations.refusal(jti="t-1", agency_id="agency-1", issued_at=time.time()) == "The token has been revoked."
    assert revocations.refusal(jti="t-2", agency_id="agency-1", issued_at=time.time()) is None


def test_a_suspension_refuses_the_tokens_issued_before_it_not_after() -> None:
    revocations = RevocationList()
    suspended = datetime.now(UTC)
    revocations.apply(_event("agency.suspended.v1", {"agency_id": "agency-1", "status": "suspended"}, suspended))
    before, after = suspended.timestamp() - 5, suspended.timestamp() + 5
    assert revocations.refusal(jti="a", agency_id="agency-1", issued_at=before) is not None
    assert revocations.refusal(jti="b", agency_id="agency-1", issued_at=None) is not None
    assert revocations.refusal(jti="c", agency_id="agency-1", issued_at=after) is None  # reactivated since
    assert revocations.refusal(jti="d", agency_id="agency-2", issued_at=before) is None


def test_events_of_other_types_or_without_their_fields_revoke_nothing() -> None:
    revocations = RevocationList()
    revocations.apply(_event("agency.updated.v1", {"agency_id": "agency-1", "status": "active"}))
    revocations.apply(_event("token.revoked.v1", {"jti": 5, "expires_at": "2099-01-01T00:00:00Z"}))
    revocations.apply(_event("token.revoked.v1", {"jti": "t-1", "expires_at": "not a time"}))
    revocations.apply(_event("agency.suspended.v1", {"agency_id": ["agency-1"]}))
    assert revocations.refusal(jti="t-1", agency_id="agency-1", issued_at=0) is None


async def test_the_validator_refuses_a_revoked_token_and_a_suspended_agencys_token(issuer: LocalIssuer) -> None:
    revocations = RevocationList()
    validator = TokenValidator(issuer.issuer, "refnet", issuer.jwks_url, revocations=revocations)
    try:
        token = issuer.mint("client-1", "agency-1", "cases:read")
        other = issuer.mint("client-2", "agency-2", "cases:read")
        principal = await validator.validate(token)
        revocations.revoke_token(principal.token_id, time.time() + 300)
        with pytest.raises(Problem) as refused:
            await validator.validate(token)
        assert refused.value.status == 401 and "revoked" in refused.value.detail
        revocations.suspend_agency("agency-2", time.time() + 1)
        with pytest.raises(Problem) as suspended:
            await validator.validate(other)
        assert suspended.value.status == 401 and "suspended" in suspended.value.detail
    finally:
        await validator.aclose()


# --- request bodies ---------------------------------------------------------------------------------------------


class Thing(BaseModel):
    names: list[int]


def make_app(limit: int = 1000) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limit)

    @app.post("/things/{thing_id}", responses={409: {"description": "taken"}})
    async def create(thing_id: str, body: Thing,
                     _: Annotated[Principal, Depends(require_scopes("cases:write"))]) -> dict[str, int]:
        return {"names": len(body.names)}

    @app.post("/echo")
    async def echo(body: Thing) -> dict[str, int]:
        return {"names": len(body.names)}

    return app


async def _send_in_pieces(limit: int, pieces: list[bytes]) -> tuple[int, bytes]:
    """The app behind the limit, called the way a server streams a chunked body: one message per piece."""
    messages: list[Message] = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                               for i, piece in enumerate(pieces)]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1), "root_path": ""}
    await BodySizeLimit(make_app(limit=10**9), limit)(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_streamed_body_over_the_limit_is_a_413_not_a_parse_error() -> None:
    # The framework catches whatever interrupts its own body reading and answers 400: the limit must not rely on it.
    status, body = await _send_in_pieces(1000, [b'{"names": ['] + [b"1," * 50] * 12 + [b"1]}"])
    assert status == 413 and b"payload-too-large" in body


async def test_a_body_at_the_limit_reaches_the_route_whole() -> None:
    status, body = await _send_in_pieces(1000, [b'{"names": ['] + [b"1," * 50] * 9 + [b"1]}"])
    assert status == 200 and body == b'{"names":451}'


async def test_thousands_of_invalid_items_make_a_short_answer() -> None:
    transport = httpx.ASGITransport(app=make_app(limit=10**6), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post("/echo", json={"names": ["x"] * 5000})
    assert answer.status_code == 422
    assert len(answer.json()["errors"]) == MAX_LISTED_ERRORS
    assert f"{5000 - MAX_LISTED_ERRORS} more errors" in answer.json()["detail"]
    assert len(answer.content) < 5000


# --- events -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["ce_id", "ce_source", "ce_specversion", "ce_type"])
def test_an_event_without_a_required_attribute_is_undecodable_not_given_one(missing: str) -> None:
    key, value, headers = envelope.encode(_event("agency.updated.v1", {"agency_id": "a"}))
    with pytest.raises(envelope.UndecodableEvent, match=missing):
        envelope.decode(key, value, [(k, v) for k, v in headers if k != missing])


def test_an_event_far_larger_than_any_refnet_event_is_undecodable() -> None:
    key, value, headers = envelope.encode(_event("agency.updated.v1", {"agency_id": "a" * envelope.MAX_EVENT_BYTES}))
    with pytest.raises(envelope.UndecodableEvent, match="larger than any RefNet event"):
        envelope.decode(key, value, headers)
    key, value, headers = envelope.encode(_event("agency.updated.v1", {"agency_id": "a" * 1000},
                                                 datetime.now(UTC) - timedelta(seconds=1)))
    assert envelope.decode(key, value, headers).data["agency_id"] == "a" * 1000


# --- OpenAPI ----------------------------------------------------------------------------------------------------


def test_openapi_declares_the_problems_each_operation_can_answer() -> None:
    document = add_problem_responses(make_app().openapi())
    secured = document["paths"]["/things/{thing_id}"]["post"]["responses"]
    assert set(secured) == {"200", "400", "401", "403", "404", "409", "413", "422", "503"}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert all(secured[s]["content"] == problem for s in secured if s != "200")
    assert secured["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert document["paths"]["/things/{thing_id}"]["post"]["security"] == [{"HTTPBearer": ["cases:write"]}]
    open_route = document["paths"]["/echo"]["post"]["responses"]
    assert set(open_route) == {"200", "400", "413", "422"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
