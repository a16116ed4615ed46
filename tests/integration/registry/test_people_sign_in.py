"""People sign in at the registry's OpenID Connect provider (issue #20), over HTTP, no browser: the code flow
with PKCE and a TOTP code end to end, and each refusal the issue lists."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from sqlalchemy import text

from services.audit.domain import draft_from_event
from shared.db import unit_of_work
from shared.envelope import Event
from tests.integration.registry.conftest import ISSUER, Registry, make_settings, serve
from tests.integration.registry.people_support import (
    CONSOLE,
    LOGGED_OUT,
    REDIRECT,
    Person,
    authorize_url,
    browser,
    claims_of,
    code_of,
    code_step,
    enrol,
    ensure_console,
    exchange,
    field,
    form_action,
    invite,
    new_person,
    password_step,
    pkce,
    refresh,
    sign_in,
)


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


@pytest.fixture
async def admin(registry: Registry) -> dict[str, str]:
    await ensure_console(registry)
    platform = await registry.agency(["admin", "registry:read"], kind="platform", name="Operator")
    return await registry.headers(platform)


async def caseworker(registry: Registry, admin: dict[str, str], roles: list[str] | None = None) -> Person:
    agency = await registry.agency(["registry:read", "cases:read"])
    return await new_person(registry, admin, agency, roles)


# --- the flow end to end ----------------------------------------------------------------------------------------


async def test_a_caseworker_signs_in_with_code_pkce_and_totp_and_refreshes(
        registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    response = await exchange(registry, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"] and body["id_token"]
    access = claims_of(body["access_token"])
    assert header_of(body["access_token"])["typ"] == "at+jwt"
    # The agreed person token profile.
    assert access["sub"] == person.id and access["sub"].startswith("person-")
    assert access["client_id"] == CONSOLE != access["sub"]
    assert access["agency"] == person.agency.agency_id and access["roles"] == ["caseworker"]
    assert set(access["scope"].split()) == {"registry:read", "cases:read", "cases:write", "consent:write",
                                            "referrals:read", "referrals:write"}
    assert access["amr"] == ["pwd", "otp"] and access["acr"] == "urn:refnet:acr:mfa"
    assert access["iss"] == ISSUER and access["aud"] == registry.settings.audience
    assert 0 < access["exp"] - access["iat"] <= 600 and access["auth_time"] <= access["iat"]
    # Resource servers accept it with the same keys as agency system tokens.
    principal = await registry.validator.validate(body["access_token"])
    assert principal.agency_id == person.agency.agency_id
    id_token = claims_of(body["id_token"])
    assert header_of(body["id_token"])["alg"] == "ES256"
    assert id_token["sub"] == person.id and id_token["aud"] == CONSOLE and id_token["iss"] == ISSUER
    assert id_token["amr"] == ["pwd", "otp"] and id_token["nonce"].startswith("n-")
    info = await registry.http.get("/oauth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert info.status_code == 200 and info.json()["sub"] == person.id
    # Refresh: a new access token and a new refresh token (rotation).
    renewed = await refresh(registry, body["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["refresh_token"] != body["refresh_token"]
    assert claims_of(renewed.json()["access_token"])["sub"] == person.id


async def test_discovery_names_the_endpoints_and_s256_only(registry: Registry) -> None:
    document = (await registry.http.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == ISSUER
    assert document["authorization_endpoint"] == ISSUER + "/oauth/authorize"
    assert document["end_session_endpoint"] == ISSUER + "/oauth/end_session"
    assert document["code_challenge_methods_supported"] == ["S256"]


async def test_a_system_token_gets_no_userinfo(registry: Registry) -> None:
    client = await registry.agency(["registry:read"])
    response = await registry.http.get("/oauth/userinfo", headers=await registry.headers(client))
    assert response.status_code == 401


# --- refusals ----------------------------------------------------------------------------------------------------


async def test_a_wrong_verifier_is_refused(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    _, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    response = await exchange(registry, code, pkce()[0])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_a_missing_verifier_is_refused(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    _, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    response = await exchange(registry, code, None)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_a_code_used_twice_is_refused_and_its_tokens_revoked(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    first = await exchange(registry, code, verifier)
    assert first.status_code == 200
    again = await exchange(registry, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # RFC 6749 4.1.2: what the code gave is revoked -- the refresh token no longer works.
    assert (await refresh(registry, first.json()["refresh_token"])).status_code == 400
    jti = claims_of(first.json()["access_token"])["jti"]
    assert await registry.outbox("token.revoked.v1", subject=jti)


async def test_a_different_redirect_uri_at_the_token_endpoint_is_refused(
        registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    response = await exchange(registry, code, verifier, redirect_uri=LOGGED_OUT)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_an_unregistered_redirect_uri_gets_no_redirect(registry: Registry, admin: dict[str, str]) -> None:
    _, challenge = pkce()
    async with browser(registry) as http:
        page = await http.get(authorize_url(challenge, redirect_uri="https://attacker.example/cb"))
    assert page.status_code == 400 and "location" not in page.headers
    assert "not supported by client" in page.text


@pytest.mark.parametrize(("challenge", "method"), [("plain", "plain"), (None, None), ("s256", None)])
async def test_plain_or_missing_pkce_is_refused_at_the_authorization_request(
        registry: Registry, admin: dict[str, str], challenge: str | None, method: str | None) -> None:
    real = pkce()[1] if challenge is not None else None
    async with browser(registry) as http:
        page = await http.get(authorize_url(real, method=method))
    # The redirect URI is the client's: the error goes back to it (RFC 6749 4.1.2.1), no sign-in form.
    assert page.status_code == 302
    location = page.headers["location"]
    assert location.startswith(REDIRECT) and "error=invalid_request" in location and "code=" not in location


async def test_without_the_second_factor_there_is_no_code(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    _, challenge = pkce()
    async with browser(registry) as http:
        page = await password_step(http, authorize_url(challenge), person)
        assert page.status_code == 200 and 'name="code"' in page.text and "location" not in page.headers
        # Coming back with only the password's session: the second factor is asked again, no code.
        again = await http.get(authorize_url(challenge))
        assert again.status_code == 200 and 'name="code"' in again.text
        wrong = await code_step(http, again, "000000" if person.code() != "000000" else "111111")
        assert wrong.status_code == 401 and "location" not in wrong.headers
        # A code already used (the enrolment's) is refused too.
        assert person.totp_secret is not None
        import pyotp

        used = await code_step(http, again, pyotp.TOTP(person.totp_secret).at(0))
        assert used.status_code == 401


async def test_a_caseworker_without_a_second_factor_cannot_sign_in(registry: Registry, admin: dict[str, str]) -> None:
    agency = await registry.agency(["registry:read"])
    invited = await invite(registry, admin, agency, "no-factor", ["caseworker"])
    person = Person(invited["person"]["id"], agency, agency.agency_id, "no-factor", "whatever password 1", None)
    async with browser(registry) as http:
        page = await password_step(http, authorize_url(pkce()[1]), person)
    assert page.status_code == 401 and "location" not in page.headers


async def test_an_account_locks_after_repeated_failures(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    _, challenge = pkce()
    async with browser(registry) as http:
        for _ in range(registry.settings.sign_in_max_failures):
            wrong = await password_step(http, authorize_url(challenge), person, password="not the password at all")
            assert wrong.status_code == 401
        # Now even the right password is refused, and says why.
        locked = await password_step(http, authorize_url(challenge), person)
        assert locked.status_code == 401 and "locked" in locked.text
    # The agency admin's reset lifts it (with a new link: the old credentials are gone).
    reset = await registry.http.post(f"/agencies/{person.agency.agency_id}/staff/{person.id}/reset", headers=admin)
    assert reset.status_code == 200, reset.text
    done, secret = await enrol(registry, reset.json()["link"], "a brand new passphrase")
    assert done.status_code == 200
    person.password, person.totp_secret = "a brand new passphrase", secret
    async with browser(registry) as http:
        assert await sign_in(http, person, challenge)


async def test_a_reused_refresh_token_revokes_the_whole_family(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    tokens = (await exchange(registry, code, verifier)).json()
    second = await refresh(registry, tokens["refresh_token"])
    assert second.status_code == 200
    # The first refresh token again (a thief's copy, or the client's): refused, and the family is revoked --
    # the newest refresh token stops working too, and its access token is announced as revoked.
    reused = await refresh(registry, tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert (await refresh(registry, second.json()["refresh_token"])).status_code == 400
    assert await registry.outbox("token.revoked.v1", subject=claims_of(second.json()["access_token"])["jti"])


async def test_logout_ends_the_session_and_its_refresh_tokens(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
        tokens = (await exchange(registry, code, verifier)).json()
        out = await http.get("/oauth/end_session?" + "&".join([
            f"id_token_hint={tokens['id_token']}", f"post_logout_redirect_uri={LOGGED_OUT}", "state=bye"]))
        assert out.status_code == 302 and out.headers["location"] == LOGGED_OUT + "?state=bye"
        # Signed out: the next authorization asks for the password again.
        page = await http.get(authorize_url(challenge))
        assert page.status_code == 200 and 'name="password"' in page.text
    assert (await refresh(registry, tokens["refresh_token"])).status_code == 400


# --- invitations -------------------------------------------------------------------------------------------------


async def test_an_invitation_link_works_once(registry: Registry, admin: dict[str, str]) -> None:
    agency = await registry.agency(["registry:read"])
    invited = await invite(registry, admin, agency, "once", ["caseworker"])
    done, _ = await enrol(registry, invited["link"])
    assert done.status_code == 200
    async with browser(registry) as http:
        again = await http.get(invited["link"].removeprefix(ISSUER))
    assert again.status_code == 404 and "password" not in again.text


async def test_an_expired_invitation_link_is_refused(registry: Registry, admin: dict[str, str]) -> None:
    agency = await registry.agency(["registry:read"])
    invited = await invite(registry, admin, agency, "late", ["caseworker"])
    async with unit_of_work(registry.sessions) as session:
        await session.execute(text("UPDATE person_invites SET expires_at = now() - interval '1 second' "
                                   "WHERE person_id = :p"), {"p": invited["person"]["id"]})
    async with browser(registry) as http:
        page = await http.get(invited["link"].removeprefix(ISSUER))
    assert page.status_code == 404


async def test_another_agencys_admin_cannot_manage_this_agencys_staff(
        registry: Registry, admin: dict[str, str]) -> None:
    agency, other = await registry.agency(["registry:read"]), await registry.agency(["registry:read"])
    # An agency admin (a person) of ``other`` signs in and tries this agency.
    other_admin = await new_person(registry, admin, other, ["agency_admin"])
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, other_admin, challenge)
    token = (await exchange(registry, code, verifier)).json()["access_token"]
    assert "staff:admin" in claims_of(token)["scope"].split() and "cases:read" not in claims_of(token)["scope"]
    headers = {"Authorization": "Bearer " + token}
    refused = await registry.http.post(f"/agencies/{agency.agency_id}/staff", headers=headers,
                                       json={"login": "intruder", "roles": ["caseworker"]})
    assert refused.status_code == 404
    own = await registry.http.post(f"/agencies/{other.agency_id}/staff", headers=headers,
                                   json={"login": "colleague", "roles": ["supervisor"]})
    assert own.status_code == 201
    # An agency's system token is not an admin of its staff either.
    system = await registry.headers(await registry.agency(["registry:read", "registry:write"]))
    assert (await registry.http.get(f"/agencies/{agency.agency_id}/staff", headers=system)).status_code == 404


async def test_an_auditor_only_in_an_oversight_agency(registry: Registry, admin: dict[str, str]) -> None:
    ngo = await registry.agency(["registry:read"])
    response = await registry.http.post(f"/agencies/{ngo.agency_id}/staff", headers=admin,
                                        json={"login": "aud", "roles": ["auditor"]})
    assert response.status_code == 422 and "oversight" in response.text


# --- inactivity ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def sleepy(new_database: Callable[[str], str]) -> AsyncIterator[Registry]:
    """A registry whose sign-ins end after 2 s without activity."""
    async for running in serve(make_settings(new_database("registry_idle"), session_idle_seconds=2)):
        yield running


async def test_after_inactivity_the_session_and_refresh_tokens_are_over(sleepy: Registry) -> None:
    await ensure_console(sleepy)
    platform = await sleepy.agency(["admin", "registry:read"], kind="platform", name="Operator")
    person = await caseworker(sleepy, await sleepy.headers(platform))
    verifier, challenge = pkce()
    async with browser(sleepy) as http:
        code = await sign_in(http, person, challenge)
        tokens = (await exchange(sleepy, code, verifier)).json()
        await asyncio.sleep(2.5)
        page = await http.get(authorize_url(challenge))
        assert page.status_code == 200 and 'name="password"' in page.text and "location" not in page.headers
    assert (await refresh(sleepy, tokens["refresh_token"])).status_code == 400


# --- secrets stay out of the logs ----------------------------------------------------------------------------------


async def test_no_password_code_secret_or_link_token_in_the_logs(
        registry: Registry, admin: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    buffer = io.StringIO()
    previous = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    caplog.set_level(logging.DEBUG)
    try:
        agency = await registry.agency(["registry:read"])
        invited = await invite(registry, admin, agency, "quiet", ["caseworker"])
        link_token = invited["link"].split("invite=")[1]
        done, secret = await enrol(registry, invited["link"], "a hushed secret passphrase")
        assert done.status_code == 200 and secret
        person = Person(invited["person"]["id"], agency, agency.agency_id, "quiet", "a hushed secret passphrase",
                        secret)
        async with browser(registry) as http:
            await password_step(http, authorize_url(pkce()[1]), person, password="a wrong guess of it")
            verifier, challenge = pkce()
            code = await sign_in(http, person, challenge)
        tokens = (await exchange(registry, code, verifier)).json()
        await refresh(registry, tokens["refresh_token"])
        await refresh(registry, tokens["refresh_token"])  # reuse: logged as such
    finally:
        structlog.configure(**previous)
    # (httpx's records are this test's own client's, which logs the URLs it calls: not the registry's.)
    logged = buffer.getvalue() + "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "refresh_token_reused" in logged  # the logs were captured
    for secret_value in ("a hushed secret passphrase", "a wrong guess of it", secret, link_token, code,
                         tokens["refresh_token"], person.code(0)):
        at = logged.find(secret_value)
        assert at < 0, logged[max(0, at - 300):at]
    async with unit_of_work(registry.sessions) as session:
        outbox = (await session.execute(text("SELECT payload::text FROM outbox"))).scalars().all()
    for secret_value in ("a hushed secret passphrase", secret, link_token, code, tokens["refresh_token"]):
        assert not any(secret_value in row for row in outbox)


async def test_the_sign_in_form_needs_its_csrf_token(registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    async with browser(registry) as http:
        page = await http.get(authorize_url(pkce()[1]))
        forged = await http.post(form_action(page.text), data={
            "csrf": "forged", "step": "password", "agency": person.agency_ref, "login": person.login,
            "password": person.password})
        assert forged.status_code == 400 and "location" not in forged.headers
        assert field(page.text, "csrf")


async def test_every_record_of_the_people_flows_is_one_the_audit_log_accepts(
        registry: Registry, admin: dict[str, str]) -> None:
    """Invitations, enrolments, refused and successful sign-ins, person tokens: what the registry writes must
    not be dead-lettered by audit (ids in RefNet's formats, no personal field names)."""
    person = await caseworker(registry, admin)
    verifier, challenge = pkce()
    async with browser(registry) as http:
        await password_step(http, authorize_url(challenge), person, password="not the password at all")
        code = await sign_in(http, person, challenge)
    await exchange(registry, code, verifier)
    await registry.http.post(f"/agencies/{person.agency.agency_id}/staff/{person.id}/reset", headers=admin)
    async with unit_of_work(registry.sessions) as session:
        rows = (await session.execute(text(
            "SELECT id, type, subject, aggregateid, payload FROM outbox "
            "WHERE payload::text LIKE :p ORDER BY seq"), {"p": f"%{person.id}%"})).mappings().all()
    actions = set()
    for row in rows:
        envelope = dict(row["payload"])  # the CloudEvent as it will be published
        event = Event(id=str(row["id"]), source=envelope["source"], type=row["type"], subject=row["subject"],
                      partition_key=row["aggregateid"], time=datetime.now(UTC), data=dict(envelope["data"]))
        draft = draft_from_event(event)  # raises NotAuditable otherwise
        actions.add(draft.action)
    assert {"staff.invite", "staff.enrol", "sign_in.refused", "token.issue", "staff.reset"} <= actions


@pytest.mark.parametrize("hint", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 3000, '"quoted"\\'])
async def test_a_bad_id_token_hint_is_a_client_error(registry: Registry, hint: str) -> None:
    async with browser(registry) as http:
        response = await http.get("/oauth/end_session", params={"id_token_hint": hint,
                                                                "post_logout_redirect_uri": LOGGED_OUT})
    assert 400 <= response.status_code < 500 or response.status_code == 200, response.text
    assert "location" not in response.headers


@pytest.mark.parametrize("params", [
    {"client_id": "x" * 500}, {"client_id": "refnet-console", "redirect_uri": "\\u0000"},
    {"response_type": "token", "client_id": "refnet-console", "redirect_uri": REDIRECT},
    {"client_id": "refnet-console", "redirect_uri": REDIRECT, "response_type": "code", "code_challenge": "!" * 50,
     "code_challenge_method": "S256"},
])
async def test_hostile_authorization_requests_are_client_errors(registry: Registry, params: dict[str, str]) -> None:
    await ensure_console(registry)
    async with browser(registry) as http:
        response = await http.get("/oauth/authorize", params=params)
    assert response.status_code in (302, 400, 422), response.text


async def test_nul_bytes_in_sign_in_input_are_client_errors(registry: Registry, admin: dict[str, str]) -> None:
    nul = "bad\x00value"
    person = await caseworker(registry, admin)
    async with browser(registry) as http:
        responses = [await http.get("/oauth/authorize", params={"client_id": nul, "response_type": "code",
                                                                "redirect_uri": REDIRECT})]
        for who in ({"agency": nul}, {"login": nul}):
            page = await http.get(authorize_url(pkce()[1]))
            responses.append(await http.post(form_action(page.text), data={
                "csrf": field(page.text, "csrf"), "step": "password", "agency": person.agency_ref,
                "login": person.login, "password": "whatever it is", **who}))
    responses += [
        await registry.http.post("/oauth/token", data={"grant_type": "authorization_code", "code": "c",
                                                       "client_id": nul, "code_verifier": "v" * 43}),
        await registry.http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": nul,
                                                       "client_id": CONSOLE}),
        await registry.http.post(f"/agencies/{person.agency.agency_id}/staff", headers=admin,
                                 json={"login": nul, "roles": ["caseworker"]}),
        await registry.http.get("/staff/enrol", params={"invite": nul}),
        await registry.http.get("/oauth/end_session", params={"client_id": nul}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500 or response.status_code == 200, response.text


async def test_prompt_none_without_a_sign_in_goes_back_with_login_required(registry: Registry) -> None:
    await ensure_console(registry)
    async with browser(registry) as http:
        response = await http.get(authorize_url(pkce()[1], prompt="none"))
    assert response.status_code == 302 and "error=login_required" in response.headers["location"]


async def test_a_live_sign_in_gets_a_code_at_once_and_prompt_login_asks_again(
        registry: Registry, admin: dict[str, str]) -> None:
    person = await caseworker(registry, admin)
    _, challenge = pkce()
    async with browser(registry) as http:
        await sign_in(http, person, challenge)
        assert code_of(await http.get(authorize_url(challenge, prompt="none")))
        assert code_of(await http.get(authorize_url(challenge)))
        again = await http.get(authorize_url(challenge, prompt="login"))
        assert again.status_code == 200 and 'name="password"' in again.text
