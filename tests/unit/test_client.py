"""refnet_client, the integrators' client: the requests it sends, its tokens, and the problem it raises.

Against ``httpx.MockTransport`` playing RefNet; the client against the real network is exercised by the demo
and the reference case system (tests/e2e/test_demo_and_case_system.py).
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

import refnet_client
from refnet_client import AsyncRefNet, Credentials, Endpoints, RefNet, RefNetError

TOKEN_URL = "http://registry.test/oauth/token"
KEY = ECKey.generate_key("P-256", private=True)
CREDENTIALS = Credentials(client_id="cli_unhcr", token_url=TOKEN_URL, agency_id="agy_unhcr",
                          private_key_pem=KEY.as_pem(private=True).decode())
ENDPOINTS = Endpoints(registry="http://registry.test", intake="http://intake.test/",
                      referral="http://referral.test", audit="http://audit.test")
NOW = "2026-12-03T10:00:00+00:00"
REFERRAL = {"id": "ref1", "status": "requested", "case_id": "case-1", "from_agency": "agy_iom",
            "to_agency": "agy_unhcr", "pathway": "protection", "service_type": "protection.rsd",
            "priority": "urgent", "shared_categories": ["identity"], "due_at": NOW, "overdue": False,
            "created_at": NOW, "updated_at": NOW,
            "history": [{"from": None, "to": "requested", "by": "sender", "agency": "agy_iom",
                         "acting_user": "u1", "reason_code": None, "note": None, "at": NOW}]}
CASE = {"id": "case-1", "status": "open", "owner_agency": "agy_iom", "created_at": NOW, "is_minor": False,
        "age_band": "25-29", "person": {"given_name": "A"}, "screening": {"needs": ["shelter"]}}


class FakeRefNet:
    """Answers token requests and service calls; records every request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None, *,
                 expires_in: int = 300) -> None:
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0
        self.answer = answer or (lambda request: httpx.Response(200, json=REFERRAL))
        self.expires_in = expires_in

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if str(request.url) == TOKEN_URL:
            self.tokens_issued += 1
            return httpx.Response(200, json={"access_token": f"token-{self.tokens_issued}", "token_type": "Bearer",
                                             "expires_in": self.expires_in, "scope": "referrals:read"})
        return self.answer(request)

    def token_requests(self) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in parse_qs(r.content.decode()).items()}
                for r in self.requests if str(r.url) == TOKEN_URL]

    def calls(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) != TOKEN_URL]


def sync_client(fake: FakeRefNet, **options: Any) -> RefNet:
    return RefNet(CREDENTIALS, ENDPOINTS, transport=httpx.MockTransport(fake), **options)


# --- the token: private_key_jwt the registry accepts -------------------------------------------------------


def test_the_token_request_is_a_client_credentials_grant_with_a_short_lived_es256_assertion() -> None:
    fake = FakeRefNet()
    with sync_client(fake, scope="referrals:read referrals:write") as refnet:
        refnet.referral("ref1")
        refnet.forget_token()
        refnet.referral("ref1")
    first, second = fake.token_requests()
    assert first["grant_type"] == "client_credentials"
    assert first["scope"] == "referrals:read referrals:write"
    assert first["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    decoded = jwt.decode(first["client_assertion"], ECKey.import_key(KEY.as_dict(private=False)),
                         algorithms=["ES256"])
    assert decoded.header["alg"] == "ES256"
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == "cli_unhcr"
    assert claims["aud"] == TOKEN_URL
    # The registry refuses an assertion whose exp is more than 300 s ahead; authlib's default is 3600 s.
    assert 0 < claims["exp"] - time.time() <= 120
    assert claims["exp"] - claims["iat"] <= 120
    # A fresh jti per assertion: the registry refuses a replayed one.
    second_claims = jwt.decode(second["client_assertion"], ECKey.import_key(KEY.as_dict(private=False)),
                               algorithms=["ES256"]).claims
    assert second_claims["jti"] != claims["jti"]


def test_the_assertion_names_the_audience_of_the_credentials_when_they_give_one() -> None:
    fake = FakeRefNet()
    credentials = Credentials.from_dict({"client_id": "cli_admin", "token_url": TOKEN_URL,
                                         "private_key_pem": CREDENTIALS.private_key_pem,
                                         "audience": "https://refnet.example/oauth/token"})
    with RefNet(credentials, ENDPOINTS, transport=httpx.MockTransport(fake)) as refnet:
        refnet.token()
    claims = jwt.decode(fake.token_requests()[0]["client_assertion"],
                        ECKey.import_key(KEY.as_dict(private=False)), algorithms=["ES256"]).claims
    assert claims["aud"] == "https://refnet.example/oauth/token"


def test_a_token_is_reused_until_shortly_before_it_expires() -> None:
    fake = FakeRefNet()
    with sync_client(fake) as refnet:
        for _ in range(3):
            refnet.referral("ref1")
    assert fake.tokens_issued == 1
    assert [r.headers["Authorization"] for r in fake.calls()] == ["Bearer token-1"] * 3

    short = FakeRefNet(expires_in=10)  # within the client's leeway: renewed before every call
    with sync_client(short) as refnet:
        refnet.referral("ref1")
        refnet.referral("ref1")
    assert short.tokens_issued >= 2
    assert short.calls()[-1].headers["Authorization"] == f"Bearer token-{short.tokens_issued}"


def test_a_401_gets_one_fresh_token_and_one_retry() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer token-1":  # revoked meanwhile
            return httpx.Response(401, json={"type": "urn:refnet:problem:unauthorized", "title": "Unauthorized",
                                             "status": 401, "detail": "The token is not valid."})
        return httpx.Response(200, json=REFERRAL)

    fake = FakeRefNet(answer)
    with sync_client(fake) as refnet:
        assert refnet.referral("ref1").id == "ref1"
    assert fake.tokens_issued == 2

    always = FakeRefNet(lambda request: httpx.Response(401, json={
        "type": "urn:refnet:problem:unauthorized", "title": "Unauthorized", "status": 401, "detail": "No."}))
    with sync_client(always) as refnet, pytest.raises(RefNetError) as refused:
        refnet.referral("ref1")
    assert refused.value.status == 401
    assert len(always.calls()) == 2


def test_a_refused_token_request_raises_the_oauth_error_with_its_status() -> None:
    def transport(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client",
                                         "error_description": "The assertion's 'exp' is more than 300 s ahead."})

    with RefNet(CREDENTIALS, ENDPOINTS, transport=httpx.MockTransport(transport)) as refnet, \
            pytest.raises(RefNetError) as refused:
        refnet.referral("ref1")
    assert (refused.value.status, refused.value.type) == (401, "invalid_client")
    assert "300 s" in refused.value.detail


# --- the requests ------------------------------------------------------------------------------------------


def test_requests_carry_the_acting_user_the_purpose_and_an_idempotency_key() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/cases"):
            return httpx.Response(200 if request.method == "GET" else 201, json=CASE)
        return httpx.Response(201, json=REFERRAL)

    fake = FakeRefNet(answer)
    with sync_client(fake, acting_user="case-system") as refnet:
        case = refnet.read_case("case-1", purpose="referral")
        refnet.create_referral("case-1", to_agency="agy_unhcr", pathway="protection", service_type="protection.rsd",
                               priority="urgent", reason="Fears return", shared_categories=["identity"],
                               idempotency_key="key-1")
        refnet.create_referral("case-1", to_agency="agy_unhcr", pathway="protection", service_type="protection.rsd",
                               priority="urgent", reason="Fears return", shared_categories=["identity"])
    read, create, create_again = fake.calls()
    assert (read.method, str(read.url)) == ("GET", "http://intake.test/cases/case-1")
    assert read.headers["X-Purpose"] == "referral" and read.headers["X-Acting-User"] == "case-system"
    assert case.person == {"given_name": "A"} and not case.is_minor
    assert (create.method, str(create.url)) == ("POST", "http://referral.test/referrals")
    assert create.headers["Idempotency-Key"] == "key-1"
    assert json.loads(create.content) == {"case_id": "case-1", "to_agency": "agy_unhcr", "pathway": "protection",
                                          "service_type": "protection.rsd", "priority": "urgent",
                                          "reason": "Fears return", "shared_categories": ["identity"]}
    # Without a key of the caller's, a fresh one per referral.
    assert create_again.headers["Idempotency-Key"] not in ("", "key-1")


def test_ids_stay_one_path_segment_and_queries_send_only_what_is_given() -> None:
    page = {"items": [REFERRAL], "next_cursor": "c2"}
    fake = FakeRefNet(lambda request: httpx.Response(200, json=page if request.url.path == "/referrals"
                                                     else REFERRAL))
    with sync_client(fake) as refnet:
        refnet.referral("../admin?x=1")
        sent = refnet.referrals(role="sent", overdue=True, limit=10)
    lookup, listing = fake.calls()
    assert lookup.url.raw_path == b"/referrals/..%2Fadmin%3Fx%3D1"
    assert dict(listing.url.params) == {"role": "sent", "overdue": "true", "limit": "10"}
    assert sent.next_cursor == "c2" and sent.items[0].history is not None
    assert sent.items[0].history[0].from_ is None and sent.items[0].history[0].to == "requested"


def test_a_transition_and_an_unsubscribe() -> None:
    fake = FakeRefNet(lambda request: httpx.Response(204) if request.method == "DELETE"
                      else httpx.Response(200, json=REFERRAL | {"status": "received"}))
    with sync_client(fake) as refnet:
        moved = refnet.transition("ref1", "received")
        refnet.unsubscribe("sub1")
    transition, delete = fake.calls()
    assert json.loads(transition.content) == {"to": "received"}
    assert moved.status == "received"
    assert (delete.method, str(delete.url)) == ("DELETE", "http://referral.test/subscriptions/sub1")


def test_public_documents_are_fetched_without_a_token() -> None:
    fake = FakeRefNet(lambda request: httpx.Response(200, json={"key_id": "k", "algorithm": "Ed25519",
                                                                "origin": "o", "public_key": "AA=="}))
    with sync_client(fake) as refnet:
        assert refnet.log_key().key_id == "k"
    assert fake.tokens_issued == 0
    assert "Authorization" not in fake.calls()[0].headers


# --- the problem -------------------------------------------------------------------------------------------


def test_a_refused_call_raises_the_rfc_9457_problem() -> None:
    problem = {"type": "urn:refnet:problem:invalid-transition", "title": "Conflict", "status": 409,
               "detail": "A referral in state received cannot move to received.", "current_state": "received",
               "errors": [{"loc": ["body", "to"], "msg": "not allowed now"}]}
    fake = FakeRefNet(lambda request: httpx.Response(409, json=problem,
                                                     headers={"content-type": "application/problem+json"}))
    with sync_client(fake) as refnet, pytest.raises(RefNetError) as refused:
        refnet.transition("ref1", "received")
    error = refused.value
    assert (error.status, error.type, error.title) == (409, "invalid-transition", "Conflict")
    assert error.detail == problem["detail"]
    assert error.errors == problem["errors"]
    assert error.problem["current_state"] == "received"
    assert str(error) == f"HTTP 409 invalid-transition: {problem['detail']}"


def test_an_answer_that_is_no_problem_keeps_its_status() -> None:
    fake = FakeRefNet(lambda request: httpx.Response(502, text="<html>Bad gateway</html>"))
    with sync_client(fake) as refnet, pytest.raises(RefNetError) as refused:
        refnet.referral("ref1")
    assert (refused.value.status, refused.value.type) == (502, "http-error")


# --- the async client --------------------------------------------------------------------------------------


async def test_the_async_client_sends_the_same_requests() -> None:
    fake = FakeRefNet(lambda request: httpx.Response(200, json={"items": [], "next_cursor": "7"}))
    async with AsyncRefNet(CREDENTIALS, ENDPOINTS, transport=httpx.MockTransport(fake),
                           acting_user="worker") as refnet:
        page = await refnet.events(after="5", wait=20)
        await refnet.events(after=page.next_cursor or "0")
    assert fake.tokens_issued == 1
    first = fake.calls()[0]
    assert str(first.url) == "http://referral.test/events?after=5&wait=20&limit=100"
    assert first.headers["X-Acting-User"] == "worker"


def test_the_sync_and_async_clients_have_the_same_methods() -> None:
    def api(cls: type) -> dict[str, list[str]]:
        return {name: list(inspect.signature(member).parameters)
                for name, member in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    sync, asynchronous = api(RefNet), api(AsyncRefNet)
    asynchronous["close"] = asynchronous.pop("aclose")
    assert sync == asynchronous
    assert all(inspect.iscoroutinefunction(getattr(AsyncRefNet, name)) for name in api(AsyncRefNet)
               if name not in ("forget_token", "from_credentials"))


# --- credentials, and what the client depends on -----------------------------------------------------------


def test_a_credentials_file_as_refnet_writes_it_loads_into_a_client_in_one_call(tmp_path: Path) -> None:
    path = tmp_path / "unhcr.json"
    path.write_text(json.dumps({"name": "unhcr", "agency_id": "agy_unhcr", "client_id": "cli_unhcr",
                                "private_key_pem": CREDENTIALS.private_key_pem, "token_url": TOKEN_URL,
                                "scopes": ["referrals:read"]}))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"intake": "http://127.0.0.1:18102",
                                              "referral": {"url": "http://127.0.0.1:18103/", "state": "ready"}}}))
    with RefNet.from_credentials(path, stack_state=state) as refnet:
        assert (refnet.agency_id, refnet.credentials.client_id) == ("agy_unhcr", "cli_unhcr")
        assert (refnet.endpoints.intake, refnet.endpoints.referral, refnet.endpoints.audit) == (
            "http://127.0.0.1:18102", "http://127.0.0.1:18103", "http://127.0.0.1:8004")
    assert "PRIVATE KEY" not in repr(refnet.credentials)
    path.write_text(json.dumps({"client_id": "cli_unhcr"}))
    with pytest.raises(ValueError, match="token_url, private_key_pem"):
        RefNet.from_credentials(path)


def test_the_client_needs_none_of_refnets_services() -> None:
    imported: set[str] = set()
    for path in Path(refnet_client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "__future__"}
    assert third_party == {"refnet_client", "httpx", "authlib", "joserfc", "cryptography", "pydantic"}
