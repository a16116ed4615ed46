"""The authorization server: tokens, the RFC 6749 refusal matrix, introspection, revocation, key rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc.jwk import ECKey
from sqlalchemy import text

from services.registry.oauth import hash_secret
from services.registry.service import rotate_signing_key
from shared.auth import TokenValidator
from shared.db import unit_of_work
from tests.integration.registry.conftest import ISSUER, TOKEN_URL, Client, Registry, make_settings, serve
from tests.support.issuer import generate_signing_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(client: Client, alg: str) -> tuple[str, str]:
    now = int(time.time())
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": client.client_id, "sub": client.client_id, "aud": TOKEN_URL,
                             "exp": now + 60, "jti": f"j{now}{alg}"}).encode())
    return header, claims


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


async def post_token(registry: Registry, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return await registry.http.post("/oauth/token", data=data, **kwargs)


def assert_oauth_error(response: httpx.Response, error: str, status: int | None = None) -> None:
    assert response.status_code == (status or (401 if error == "invalid_client" else 400)), response.text
    body = response.json()
    assert body["error"] == error, body
    assert response.headers["cache-control"] == "no-store"


# --- issuing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "RS384", "EdDSA"])
async def test_private_key_jwt_with_each_accepted_algorithm_gets_an_rfc9068_token(
    registry: Registry, alg: str
) -> None:
    client = await registry.agency(["registry:read", "cases:read"], alg=alg)
    response = await post_token(registry, client.form("cases:read"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "cases:read"
    assert 0 < body["expires_in"] <= 900
    assert response.headers["cache-control"] == "no-store"
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    claims = claims_of(body["access_token"])
    assert claims["iss"] == ISSUER and claims["aud"] == "refnet"
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["agency"] == client.agency_id and claims["jti"]
    assert claims["exp"] - claims["iat"] <= 900


async def test_token_without_scope_parameter_carries_every_scope_held(registry: Registry) -> None:
    client = await registry.agency(["registry:read", "cases:read"])
    token = await registry.token(client)
    assert claims_of(token)["scope"] == "cases:read registry:read"


async def test_the_foundation_validator_accepts_a_registry_token(registry: Registry) -> None:
    client = await registry.agency(["cases:read", "cases:write"])
    principal = await registry.validator.validate(await registry.token(client, "cases:read cases:write"))
    assert principal.agency_id == client.agency_id
    assert principal.client_id == client.client_id
    assert principal.scopes == {"cases:read", "cases:write"}


async def test_assertion_audience_may_be_the_issuer(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    response = await post_token(registry, client.form(aud=ISSUER))
    assert response.status_code == 200, response.text


async def test_client_secret_basic_gets_a_token_where_registered_with_a_secret(registry: Registry) -> None:
    client = await registry.agency(["cases:read"], secret_hash=hash_secret("s3cret-value"))
    response = await post_token(registry, {"grant_type": "client_credentials"},
                                auth=(client.client_id, "s3cret-value"))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["agency"] == client.agency_id


async def test_issued_and_refused_tokens_are_access_records_without_secrets(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    token = await registry.token(client, "cases:read")
    refused = await post_token(registry, client.form("admin"))
    assert_oauth_error(refused, "invalid_scope")
    async with unit_of_work(registry.sessions) as session:
        rows = (await session.execute(text(
            "SELECT topic, aggregateid, payload FROM outbox WHERE topic = 'refnet.audit.access' "
            "AND payload->'data'->>'client_id' = :c ORDER BY seq"
        ), {"c": client.client_id})).mappings().all()
    records = [r["payload"]["data"] for r in rows]
    assert [r["action"] for r in records] == ["token.issue", "token.refused"]
    assert records[0]["outcome"] == "success" and records[0]["resource_id"] == claims_of(token)["jti"]
    assert records[1]["outcome"] == "denied" and records[1]["details"]["error"] == "invalid_scope"
    assert all(r["topic"] == "refnet.audit.access" and r["aggregateid"] == client.agency_id for r in rows)
    dumped = json.dumps(records)
    assert token not in dumped and token.split(".")[1] not in dumped


# --- the refusal matrix -------------------------------------------------------------------------------------


async def test_unknown_client_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    stranger = Client("agy_x", "cli_nobody", client.key)
    assert_oauth_error(await post_token(registry, stranger.form()), "invalid_client")


async def test_assertion_signed_with_another_key_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    other = generate_signing_key("ES256", kid=client.key.kid if client.key else None)
    data = client.form()
    data["client_assertion"] = client.assertion(key=other)
    assert_oauth_error(await post_token(registry, data), "invalid_client")


async def test_expired_assertion_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    now = int(time.time())
    assert_oauth_error(await post_token(registry, client.form(exp=now - 120, iat=now - 300)), "invalid_client")


async def test_assertion_expiring_more_than_five_minutes_ahead_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    assert_oauth_error(await post_token(registry, client.form(exp=int(time.time()) + 3600)), "invalid_client")


@pytest.mark.parametrize("aud", ["https://elsewhere.example/token", ["http://registry.test/other"]])
async def test_assertion_with_wrong_audience_is_invalid_client(registry: Registry, aud: Any) -> None:
    client = await registry.agency()
    assert_oauth_error(await post_token(registry, client.form(aud=aud)), "invalid_client")


async def test_assertion_with_alg_none_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    header, claims = unsigned(client, "none")
    data = {**client.form(), "client_assertion": f"{header}.{claims}."}
    assert_oauth_error(await post_token(registry, data), "invalid_client")


async def test_assertion_hmac_signed_with_the_public_key_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    assert isinstance(client.key, ECKey)
    header, claims = unsigned(client, "HS256")
    mac = hmac.new(client.key.as_pem(private=False), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    data = {**client.form(), "client_assertion": f"{header}.{claims}.{b64(mac)}"}
    assert_oauth_error(await post_token(registry, data), "invalid_client")


async def test_replayed_assertion_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    data = client.form()
    assert (await post_token(registry, data)).status_code == 200
    assert_oauth_error(await post_token(registry, data), "invalid_client")


async def test_replayed_assertion_is_refused_after_a_restart(
    registry: Registry, new_database: Any
) -> None:
    settings = make_settings(new_database("registry_restart"))
    data: dict[str, str] = {}
    async for first in serve(settings):
        client = await first.agency()
        data = client.form()
        assert (await post_token(first, data)).status_code == 200
    async for second in serve(settings):
        assert_oauth_error(await post_token(second, data), "invalid_client")


def signed_es256(client: Client, header: dict[str, Any]) -> str:
    """An ES256 assertion with exactly ``header``, signed with the client's key (joserfc would refuse to
    sign some of the headers tested here)."""
    assert isinstance(client.key, ECKey)
    now = int(time.time())
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": TOKEN_URL, "iat": now, "exp": now + 60,
              "jti": secrets.token_hex(8)}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(client.key.get_op_key("sign").sign(signing_input.encode(), ECDSA(SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_assertion_headers_joserfc_would_refuse_are_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    assert client.key is not None
    good = {"alg": "ES256", "kid": client.key.kid}
    assert (await post_token(registry, {**client.form(), "client_assertion": signed_es256(client, good)})
            ).status_code == 200
    for header in ({**good, "crit": ["x-unknown"], "x-unknown": 1},  # a critical parameter we do not know
                   {**good, "b64": False, "crit": ["b64"]},  # RFC 7797 unencoded payload: not for JWTs
                   {**good, "kid": 42},  # a registered parameter of the wrong type
                   {**good, "x-pad": "p" * 600}):  # a header beyond joserfc's size limit
        data = {**client.form(), "client_assertion": signed_es256(client, header)}
        assert_oauth_error(await post_token(registry, data), "invalid_client")


async def test_a_client_whose_registered_keys_change_is_checked_against_the_new_ones(registry: Registry) -> None:
    client = await registry.agency()
    assert (await post_token(registry, client.form())).status_code == 200  # the old keys are now remembered
    new_key = generate_signing_key("ES256")
    async with unit_of_work(registry.sessions) as session:
        await session.execute(text("UPDATE agencies SET jwks = CAST(:jwks AS JSONB) WHERE id = :id"),
                              {"jwks": json.dumps({"keys": [dict(new_key.as_dict(private=False))]}),
                               "id": client.agency_id})
    assert_oauth_error(await post_token(registry, client.form()), "invalid_client")
    assert (await post_token(registry, client.form(key=new_key))).status_code == 200


async def test_suspended_agency_is_invalid_client(registry: Registry) -> None:
    admin = await registry.agency(["admin", "registry:read"])
    client = await registry.agency(["cases:read"])
    suspended = await registry.http.patch(f"/agencies/{client.agency_id}", json={"status": "suspended"},
                                          headers=await registry.headers(admin))
    assert suspended.status_code == 200, suspended.text
    assert_oauth_error(await post_token(registry, client.form()), "invalid_client")


async def test_scope_not_held_is_invalid_scope(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    assert_oauth_error(await post_token(registry, client.form("cases:read admin")), "invalid_scope")


async def test_wrong_secret_is_invalid_client_with_a_basic_challenge(registry: Registry) -> None:
    client = await registry.agency(["cases:read"], secret_hash=hash_secret("right"))
    response = await post_token(registry, {"grant_type": "client_credentials"}, auth=(client.client_id, "wrong"))
    assert_oauth_error(response, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_secret_for_a_key_registered_client_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    response = await post_token(registry, {"grant_type": "client_credentials"}, auth=(client.client_id, "x"))
    assert_oauth_error(response, "invalid_client")


@pytest.mark.parametrize("grant", ["password", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"])
async def test_unsupported_grant_type(registry: Registry, grant: str) -> None:
    client = await registry.agency()
    assert_oauth_error(await post_token(registry, {**client.form(), "grant_type": grant}), "unsupported_grant_type")


async def test_malformed_bodies_are_invalid_request(registry: Registry) -> None:
    client = await registry.agency()
    as_json = await registry.http.post("/oauth/token", json=client.form())
    assert_oauth_error(as_json, "invalid_request")
    no_grant = {k: v for k, v in client.form().items() if k != "grant_type"}
    assert_oauth_error(await post_token(registry, no_grant), "invalid_request")
    repeated = await registry.http.post(
        "/oauth/token", content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(repeated, "invalid_request")
    garbage = await registry.http.post("/oauth/token", content=b"\xff\xfe%%%",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert garbage.status_code in (400, 401) and "error" in garbage.json()


async def test_garbage_assertions_and_missing_authentication_are_invalid_client(registry: Registry) -> None:
    client = await registry.agency()
    for assertion in ["", "abc", "a.b.c", "e30.e30.", "x" * 9000]:
        data = {**client.form(), "client_assertion": assertion}
        assert_oauth_error(await post_token(registry, data), "invalid_client")
    assert_oauth_error(await post_token(registry, {"grant_type": "client_credentials"}), "invalid_client")
    assert_oauth_error(await post_token(registry, {**client.form(), "client_assertion_type": "x"}),
                       "invalid_client")
    assert_oauth_error(await post_token(registry, client.form(jti=None)), "invalid_client")
    assert_oauth_error(await post_token(registry, client.form(sub="cli_other")), "invalid_client")


async def test_a_client_hammering_the_token_endpoint_gets_429(new_database: Any) -> None:
    settings = make_settings(new_database("registry_rate"), token_burst=5, token_requests_per_minute=6)
    async for registry in serve(settings):
        client = await registry.agency(["cases:read"])
        statuses = [(await post_token(registry, client.form())).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5
        assert statuses[-1] == 429
        other = await registry.agency(["cases:read"])
        assert (await post_token(registry, other.form())).status_code == 200
        async with unit_of_work(registry.sessions) as session:
            limited = (await session.execute(text(
                "SELECT count(*) FROM outbox WHERE payload->'data'->>'client_id' = :c "
                "AND payload->'data'->'details'->>'error' = 'rate_limited'"), {"c": client.client_id})).scalar_one()
        assert limited == 1  # one record for the run of refusals, not one per request


# --- introspection, revocation, rotation --------------------------------------------------------------------


async def test_introspection_reports_an_active_token_and_a_revoked_one_as_inactive(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    token = await registry.token(client)
    active = await registry.http.post("/oauth/introspect", data={**client.form(), "token": token})
    assert active.status_code == 200, active.text
    assert active.json()["active"] is True and active.json()["agency"] == client.agency_id

    revoked = await registry.http.post("/oauth/revoke", data={**client.form(), "token": token})
    assert revoked.status_code == 200, revoked.text
    after = await registry.http.post("/oauth/introspect", data={**client.form(), "token": token})
    assert after.json() == {"active": False}


async def test_introspection_answers_a_client_only_about_its_own_tokens(registry: Registry) -> None:
    owner = await registry.agency(["cases:read"])
    other = await registry.agency(["cases:read"])
    token = await registry.token(owner)
    own = await registry.http.post("/oauth/introspect", data={**owner.form(), "token": token})
    assert own.json()["active"] is True and own.json()["client_id"] == owner.client_id
    # RFC 7662 2.2: "not allowed to know about this token" is answered as an inactive token, so another
    # client cannot use the endpoint to learn whether tokens it found are live, or whose they are.
    theirs = await registry.http.post("/oauth/introspect", data={**other.form(), "token": token})
    assert theirs.status_code == 200 and theirs.json() == {"active": False}
    # A resource server (one of the platform's own clients, added only by the bootstrap) may know.
    resource_server = await registry.agency(["registry:read"], kind="platform")
    seen = await registry.http.post("/oauth/introspect", data={**resource_server.form(), "token": token})
    assert seen.json()["active"] is True and seen.json()["agency"] == owner.agency_id


async def test_introspection_needs_client_authentication(registry: Registry) -> None:
    response = await registry.http.post("/oauth/introspect", data={"token": "x"})
    assert_oauth_error(response, "invalid_client")


async def test_a_client_cannot_revoke_another_clients_token(registry: Registry) -> None:
    owner = await registry.agency(["cases:read"])
    other = await registry.agency(["cases:read"])
    token = await registry.token(owner)
    refused = await registry.http.post("/oauth/revoke", data={**other.form(), "token": token})
    assert_oauth_error(refused, "unauthorized_client")
    garbage = await registry.http.post("/oauth/revoke", data={**other.form(), "token": "not-a-token"})
    assert garbage.status_code == 200


async def test_after_key_rotation_old_and_new_tokens_both_validate(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    old = await registry.token(client)
    async with unit_of_work(registry.sessions) as session:
        new_kid = await rotate_signing_key(session, registry.settings.kek_ring().current)
    new = await registry.token(client)
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == new_kid
    jwks = (await registry.http.get("/.well-known/jwks.json")).json()
    assert len(jwks["keys"]) == 2 and all("d" not in k for k in jwks["keys"])
    fresh = TokenValidator(ISSUER, "refnet", ISSUER + "/.well-known/jwks.json", http_client=registry.http)
    for token in (old, new):
        assert (await fresh.validate(token)).client_id == client.client_id
        assert (await registry.validator.validate(token)).client_id == client.client_id


async def test_metadata_names_the_endpoints(registry: Registry) -> None:
    metadata = (await registry.http.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == TOKEN_URL
    assert metadata["jwks_uri"] == ISSUER + "/.well-known/jwks.json"
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "client_credentials" in metadata["grant_types_supported"]


async def test_a_key_published_ahead_starts_signing_when_its_time_comes(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])

    def kid(token: str) -> str:
        return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])

    old_kid = kid(await registry.token(client))
    async with unit_of_work(registry.sessions) as session:
        new_kid = await rotate_signing_key(session, registry.settings.kek_ring().current,
                                             activate_in_seconds=1)
    published = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
    assert old_kid in published and new_kid in published
    assert kid(await registry.token(client)) == old_kid
    await asyncio.sleep(1.2)
    token = await registry.token(client)
    assert kid(token) == new_kid
    assert (await registry.validator.validate(token)).client_id == client.client_id
    published = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
    assert published == [new_kid, old_kid]
