"""shared.auth: RFC 9068 access-token validation, RFC 6750 challenges and scopes, against a real JWKS."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import Principal, TokenValidator, require_scopes
from shared.errors import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, install_problem_handlers
from shared.settings import ServiceSettings
from tests.support.issuer import LocalIssuer, local_issuer_fixture

issuer = local_issuer_fixture()


def make_app(validator: TokenValidator) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.token_validator = validator

    @app.get("/cases")
    async def list_cases(
        principal: Annotated[Principal, Depends(require_scopes("cases:read"))],
    ) -> dict[str, Any]:
        return {
            "agency": principal.agency_id,
            "client_id": principal.client_id,
            "scopes": sorted(principal.scopes),
            "token_id": principal.token_id,
            "acting_user": principal.acting_user,
            "expires_at": principal.expires_at.isoformat(),
        }

    return app


@asynccontextmanager
async def app_client(local: LocalIssuer, **validator_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app whose validator trusts ``local`` (each test gets its own JWKS cache)."""
    validator = local.validator(**validator_options)
    transport = httpx.ASGITransport(app=make_app(validator))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
            yield client
    finally:
        await validator.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_cases(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/cases", headers=bearer(token))


def assert_problem(response: httpx.Response, status: int, slug: str, challenge: str | None) -> dict[str, Any]:
    """Status, problem+json type, and the WWW-Authenticate challenge's error code (or its absence)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_TYPE_PREFIX + slug
    assert body["status"] == status
    www = response.headers.get("www-authenticate")
    if challenge is None:
        assert www is None
    elif challenge == "":
        assert www == "Bearer"  # RFC 6750 3.1: no error information without credentials
    else:
        assert www is not None
        assert www.startswith(f'Bearer error="{challenge}"'), www
        assert "error_description=" in www
    return body


async def assert_refused(local: LocalIssuer, token: str, *, detail_has: str = "") -> dict[str, Any]:
    async with app_client(local) as client:
        response = await client.get("/cases", headers=bearer(token))
    body = assert_problem(response, 401, "invalid-token", "invalid_token")
    assert detail_has.lower() in body["detail"].lower()
    # Neither the detail nor the challenge may echo the token.
    assert token.split(".")[1] not in response.text
    assert token.split(".")[1] not in response.headers["www-authenticate"]
    return body


# --- accepted ---------------------------------------------------------------------------------------------


async def test_valid_token(issuer: LocalIssuer) -> None:
    token = issuer.mint("client-iom", "agency-iom", "cases:read cases:write")
    async with app_client(issuer) as client:
        response = await client.get("/cases", headers={**bearer(token), "X-Acting-User": "j.doe@iom.int"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agency"] == "agency-iom"
    assert body["client_id"] == "client-iom"
    assert body["scopes"] == ["cases:read", "cases:write"]
    assert body["acting_user"] == "j.doe@iom.int"
    assert body["token_id"]
    assert body["expires_at"].endswith("+00:00")


@pytest.mark.parametrize(
    "options",
    [
        {"aud": ["other-api", "refnet"]},
        {"typ": "application/at+jwt"},
        {"typ": "AT+JWT"},
        {"exp_in": -10},  # expired, but within the 30 s leeway
        {"nbf": 10},  # not yet valid, but within the leeway
    ],
    ids=["aud-list", "typ-media-type", "typ-uppercase", "exp-within-leeway", "nbf-within-leeway"],
)
async def test_accepted_variants(issuer: LocalIssuer, options: dict[str, Any]) -> None:
    async with app_client(issuer) as client:
        response = await client.get("/cases", headers=bearer(issuer.mint("c", "agency-1", "cases:read",
                                                                             **options)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA", "ES384"])
async def test_other_allowed_algorithms(alg: str) -> None:
    with LocalIssuer() as local:
        local.add_key(alg)
        async with app_client(local) as client:
            response = await client.get("/cases", headers=bearer(local.mint("c", "a", "cases:read", alg=alg)))
    assert response.status_code == 200, response.text


# --- refused: 401 invalid_token ---------------------------------------------------------------------------


async def test_wrong_issuer(issuer: LocalIssuer) -> None:
    token = issuer.mint("c", "a", "cases:read", extra_claims={"iss": "https://evil.example"})
    await assert_refused(issuer, token, detail_has="issuer")


async def test_wrong_audience(issuer: LocalIssuer) -> None:
    for aud in ("another-api", ["x", "y"]):
        await assert_refused(issuer, issuer.mint("c", "a", "cases:read", aud=aud), detail_has="audience")


async def test_bad_signature_foreign_key_claiming_known_kid(issuer: LocalIssuer) -> None:
    await assert_refused(issuer, issuer.mint_foreign("c", "a", "cases:read"), detail_has="signature")


async def test_tampered_payload(issuer: LocalIssuer) -> None:
    header, _, signature = issuer.mint("c", "a", "cases:read").split(".")
    other_payload = issuer.mint("c", "a", "cases:read admin").split(".")[1]
    await assert_refused(issuer, f"{header}.{other_payload}.{signature}", detail_has="signature")


async def test_alg_none(issuer: LocalIssuer) -> None:
    await assert_refused(issuer, issuer.mint_alg_none("c", "a", "cases:read"), detail_has="'none'")


async def test_hs256_signed_with_public_key_is_refused_before_any_key_lookup() -> None:
    with LocalIssuer() as local:
        validator = local.validator()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(validator)),
                                         base_url="http://service.test") as client:
                response = await client.get(
                    "/cases", headers=bearer(local.mint_hs256_with_public_key("c", "a", "cases:read"))
                )
        finally:
            await validator.aclose()
        body = assert_problem(response, 401, "invalid-token", "invalid_token")
        assert "HS256" in body["detail"]
        # Refused on the header alone: the JWKS was never even fetched.
        assert local.jwks_requests == 0
        assert validator.fetch_count == 0


async def test_algorithm_outside_allow_list(issuer: LocalIssuer) -> None:
    with LocalIssuer("ES512") as local:
        await assert_refused(local, local.mint("c", "a", "cases:read", alg="ES512"), detail_has="ES512")


async def test_expired(issuer: LocalIssuer) -> None:
    await assert_refused(issuer, issuer.mint("c", "a", "cases:read", exp_in=-120), detail_has="expired")


async def test_not_yet_valid(issuer: LocalIssuer) -> None:
    await assert_refused(issuer, issuer.mint("c", "a", "cases:read", nbf=300), detail_has="not valid yet")


async def test_issued_in_the_future(issuer: LocalIssuer) -> None:
    now_plus = issuer.claims()["iat"] + 600
    token = issuer.mint("c", "a", "cases:read", exp_in=900, extra_claims={"iat": now_plus})
    await assert_refused(issuer, token, detail_has="future")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt+evil", None], ids=["JWT", "jwt", "suffix", "absent"])
async def test_wrong_typ(issuer: LocalIssuer, typ: str | None) -> None:
    await assert_refused(issuer, issuer.mint("c", "a", "cases:read", typ=typ), detail_has="typ")


async def test_claims_off_the_common_shape_are_still_accepted(issuer: LocalIssuer) -> None:
    """Fractional times, an audience list, a scope array and no nbf/iat: valid, though not the usual shape."""
    now = time.time()
    token = issuer.mint("c", "a", extra_claims={"exp": now + 120.5, "nbf": None, "iat": now - 0.5,
                                                "aud": ["other", "refnet"], "scope": ["cases:read"]})
    validator = issuer.validator()
    principal = await validator.validate(token)
    assert principal.scopes == frozenset({"cases:read"}) and principal.client_id == "c"
    assert abs(principal.expires_at.timestamp() - (now + 120.5)) < 1e-3
    await validator.aclose()


@pytest.mark.parametrize("claim", ["sub", "agency", "exp", "jti", "iss", "aud"])
async def test_missing_required_claim(issuer: LocalIssuer, claim: str) -> None:
    token = issuer.mint("c", "a", "cases:read", extra_claims={claim: None})
    await assert_refused(issuer, token, detail_has=f"'{claim}'")


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": "tomorrow"}, "'exp'"),
        ({"nbf": True}, "'nbf'"),
        ({"agency": 42}, "'agency'"),
        ({"sub": ""}, "'sub'"),
        ({"scope": {"cases:read": True}}, "'scope'"),
        ({"aud": 7}, "'aud'"),
        # Beyond any date (and beyond a float's integers): refused as a claim, not a 500 from an overflow.
        ({"exp": 10**400}, "'exp'"),
        ({"iat": 2**60}, "'iat'"),
        ({"exp": float("inf")}, "'exp'"),
    ],
)
async def test_ill_typed_claims(issuer: LocalIssuer, claims: dict[str, Any], detail: str) -> None:
    await assert_refused(issuer, issuer.mint("c", "a", "cases:read", extra_claims=claims), detail_has=detail)


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        ("Bearer abc.def", "invalid_token"),
        ("Bearer a.b.c", "invalid_token"),
        ("Bearer !!!.???.***", "invalid_token"),
        ("Bearer", "invalid_token"),
        ("Bearer " + "a" * 9000, "invalid_token"),
        ("Bearer eyJhbGciOiJFUzI1NiJ9.e30.e30.e30.e30", "invalid_token"),  # JWE-shaped
        ("Basic eHl6OnB3", ""),  # another scheme: no bearer credentials at all (RFC 6750 3.1)
        ("garbage", ""),
    ],
    ids=["two-parts", "not-json", "bad-chars", "no-token", "too-long", "five-parts", "basic", "garbage"],
)
async def test_malformed_authorization(issuer: LocalIssuer, authorization: str, challenge: str) -> None:
    async with app_client(issuer) as client:
        response = await client.get("/cases", headers={"Authorization": authorization})
    assert_problem(response, 401, "invalid-token" if challenge else "missing-token", challenge)


async def test_missing_token(issuer: LocalIssuer) -> None:
    async with app_client(issuer) as client:
        response = await client.get("/cases")
    assert_problem(response, 401, "missing-token", "")


async def test_token_is_case_insensitive_about_scheme(issuer: LocalIssuer) -> None:
    async with app_client(issuer) as client:
        response = await client.get(
            "/cases", headers={"Authorization": "bearer " + issuer.mint("c", "a", "cases:read")}
        )
    assert response.status_code == 200


# --- scopes and acting user -------------------------------------------------------------------------------


async def test_missing_scope(issuer: LocalIssuer) -> None:
    async with app_client(issuer) as client:
        response = await get_cases(client, issuer.mint("c", "a", "cases:write referrals:read"))
    body = assert_problem(response, 403, "insufficient-scope", "insufficient_scope")
    assert 'scope="cases:read"' in response.headers["www-authenticate"]
    assert "cases:read" in body["detail"]


async def test_no_scope_claim_means_no_scopes(issuer: LocalIssuer) -> None:
    async with app_client(issuer) as client:
        response = await get_cases(client, issuer.mint("c", "a", extra_claims={"scope": None}))
    assert_problem(response, 403, "insufficient-scope", "insufficient_scope")


@pytest.mark.parametrize("acting_user", ["", "a" * 129, "Jane Doe", "x\"y", "<script>", "-leading-dash"])
async def test_invalid_acting_user(issuer: LocalIssuer, acting_user: str) -> None:
    async with app_client(issuer) as client:
        response = await client.get(
            "/cases", headers={**bearer(issuer.mint("c", "a", "cases:read")), "X-Acting-User": acting_user}
        )
    assert_problem(response, 400, "invalid-acting-user", None)


async def test_no_acting_user(issuer: LocalIssuer) -> None:
    async with app_client(issuer) as client:
        response = await client.get("/cases", headers=bearer(issuer.mint("c", "a", "cases:read")))
    assert response.json()["acting_user"] is None


# --- JWKS: rotation, refetch rate limiting, outage ---------------------------------------------------------


async def test_key_rotation_is_picked_up_by_refetch() -> None:
    with LocalIssuer() as local:
        async with app_client(local, min_refetch_seconds=0.3) as client:
            old_token = local.mint("c", "a", "cases:read")
            assert (await client.get("/cases", headers=bearer(old_token))).status_code == 200
            assert local.jwks_requests == 1

            new_kid = local.rotate()
            await asyncio.sleep(0.35)  # past min_refetch_seconds since the first fetch
            new_token = local.mint("c", "a", "cases:read")
            assert local.current_kid == new_kid
            # Concurrent requests with the new kid share one refetch and all wait for its result.
            responses = await asyncio.gather(*(get_cases(client, new_token) for _ in range(20)))
            assert [r.status_code for r in responses] == [200] * 20
            assert local.jwks_requests == 2
            # The previous key is still published, so tokens it signed keep working, without a fetch.
            assert (await client.get("/cases", headers=bearer(old_token))).status_code == 200
            assert local.jwks_requests == 2


async def test_rotation_within_refetch_window_waits_for_the_window() -> None:
    with LocalIssuer() as local:
        async with app_client(local, min_refetch_seconds=0.5) as client:
            assert (await get_cases(client, local.mint(scope="cases:read"))).status_code == 200
            local.rotate()
            token = local.mint(scope="cases:read")
            # Just fetched: no refetch allowed yet, so the new kid is unknown.
            assert_problem(await client.get("/cases", headers=bearer(token)), 401, "invalid-token",
                           "invalid_token")
            assert local.jwks_requests == 1
            await asyncio.sleep(0.55)
            assert (await client.get("/cases", headers=bearer(token))).status_code == 200
            assert local.jwks_requests == 2


async def test_unknown_kids_do_not_cause_a_refetch_storm() -> None:
    with LocalIssuer() as local:
        async with app_client(local, min_refetch_seconds=1.0) as client:
            assert (await get_cases(client, local.mint(scope="cases:read"))).status_code == 200
            assert local.jwks_requests == 1
            await asyncio.sleep(1.05)  # a refetch is allowed again

            def random_kid_token() -> str:
                return local.mint(scope="cases:read", kid=secrets.token_hex(8))

            # Many at once: they share one refetch (the lock), and then the rate limit holds.
            responses = await asyncio.gather(
                *(client.get("/cases", headers=bearer(random_kid_token())) for _ in range(40))
            )
            for _ in range(20):
                responses.append(await client.get("/cases", headers=bearer(random_kid_token())))
            for response in responses:
                assert_problem(response, 401, "invalid-token", "invalid_token")
            assert local.jwks_requests == 2  # the initial fetch plus exactly one refetch


async def test_jwks_unreachable_gives_503() -> None:
    local = LocalIssuer().start()
    token = local.mint(scope="cases:read")
    local.stop()  # nothing listens on the JWKS port any more
    async with app_client(local, min_refetch_seconds=0.3) as client:
        response = await client.get("/cases", headers=bearer(token))
        assert_problem(response, 503, "issuer-unavailable", None)
        assert int(response.headers["retry-after"]) >= 1
        # Inside the retry window: still 503, without hammering the issuer.
        response = await client.get("/cases", headers=bearer(token))
        assert_problem(response, 503, "issuer-unavailable", None)

        # The issuer comes back on the same port; after the window the next request fetches and succeeds.
        local.start()
        try:
            await asyncio.sleep(0.35)
            assert (await client.get("/cases", headers=bearer(token))).status_code == 200
            assert local.jwks_requests == 1
        finally:
            local.stop()


async def test_jwks_error_status_gives_503_and_bad_tokens_still_401() -> None:
    with LocalIssuer() as local:
        local.fail_status = 500
        async with app_client(local) as client:
            response = await client.get("/cases", headers=bearer(local.mint(scope="cases:read")))
            assert_problem(response, 503, "issuer-unavailable", None)
            # A token refused on its header needs no key, so it is a 401 even while the issuer is down.
            response = await client.get("/cases", headers=bearer(local.mint_alg_none(scope="cases:read")))
            assert_problem(response, 401, "invalid-token", "invalid_token")


async def test_unknown_kid_while_issuer_is_down_gives_503() -> None:
    with LocalIssuer() as local:
        async with app_client(local, min_refetch_seconds=0.2) as client:
            assert (await get_cases(client, local.mint(scope="cases:read"))).status_code == 200
            local.rotate()
            local.fail_status = 503
            await asyncio.sleep(0.25)
            response = await client.get("/cases", headers=bearer(local.mint(scope="cases:read")))
            assert_problem(response, 503, "issuer-unavailable", None)
            # Tokens signed by cached keys keep working through the outage.
            old = local.mint(scope="cases:read", key=local.key(local.kids[0]))
            assert (await client.get("/cases", headers=bearer(old))).status_code == 200


# --- wiring ---------------------------------------------------------------------------------------------


def test_openapi_declares_bearer_scheme(issuer: LocalIssuer) -> None:
    schema = make_app(issuer.validator()).openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    # OpenAPI 3.1 lets a non-OAuth scheme name the scopes (roles) an operation needs: integrators read them here.
    assert schema["paths"]["/cases"]["get"]["security"] == [{"HTTPBearer": ["cases:read"]}]


@pytest.mark.parametrize("algorithms", [("HS256",), ("ES256", "none"), ()])
def test_validator_refuses_unsafe_algorithms(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        TokenValidator("http://issuer", "refnet", "http://issuer/jwks", algorithms=algorithms)


def test_from_settings() -> None:
    settings = ServiceSettings(issuer="https://idp.example/realms/refnet", audience="refnet-api",
                               jwks_min_refetch_seconds=12.5, token_leeway_seconds=5)
    validator = TokenValidator.from_settings(settings)
    assert validator.issuer == "https://idp.example/realms/refnet"
    assert validator.audience == "refnet-api"
    assert validator.jwks_url == "https://idp.example/realms/refnet/.well-known/jwks.json"
    assert validator.min_refetch_seconds == 12.5
    assert validator.leeway_seconds == 5


def test_require_scopes_rejects_bad_scope_names() -> None:
    with pytest.raises(ValueError):
        require_scopes("cases:read referrals:read")
