"""Agencies' own identity providers (issue #20 part 5), over HTTP, no browser: a second issuer inside the
tests (tests/support/oidc_provider.py) is trusted for one agency; its people sign in through it at the
registry, which verifies the ID token, maps the claims and issues its own tokens. Each refusal the issue
lists is tried against the real flow."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.audit.domain import draft_from_event
from services.intake.app import create_app as create_intake
from services.intake.crypto import MasterKey, write_key_file
from services.intake.settings import IntakeSettings
from shared.auth import TokenValidator
from shared.db import unit_of_work
from shared.envelope import Event
from shared.migrations import upgrade
from tests.integration.intake.conftest import case_body
from tests.integration.registry.conftest import ISSUER, Client, Registry
from tests.integration.registry.people_support import (
    authorize_url,
    browser,
    claims_of,
    code_of,
    ensure_console,
    exchange,
    pkce,
)
from tests.support.oidc_provider import UpstreamProvider

CALLBACK = ISSUER + "/oauth/federated/callback"
ROLE_MAP = {"rn-caseworker": "caseworker", "rn-supervisor": "supervisor", "rn-admin": "agency_admin"}


@pytest.fixture
async def admin(registry: Registry) -> dict[str, str]:
    await ensure_console(registry)
    platform = await registry.agency(["admin", "registry:read"], kind="platform", name="Operator")
    return await registry.headers(platform)


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamProvider]:
    with UpstreamProvider() as provider:
        provider.redirect_uris = [CALLBACK]
        provider.user = {"sub": "f3a1c0de-" + str(time.time_ns()), "preferred_username": "amina.k",
                         "email": "amina@ngo.example.org", "name": "Amina K",
                         "realm_access": {"roles": ["rn-caseworker", "offline_access"]}, "amr": ["pwd", "otp"]}
        yield provider


@dataclass
class Trusted:
    agency: Client
    idp: dict[str, Any]


async def trust(registry: Registry, admin: dict[str, str], upstream: UpstreamProvider,
                agency: Client | None = None, **overrides: Any) -> Trusted:
    agency = agency or await registry.agency(["registry:read", "cases:read"], name="Shelter network")
    body: dict[str, Any] = {"agency": agency.agency_id, "issuer": upstream.issuer, "client_id": upstream.client_id,
                            "client_secret": upstream.client_secret, "roles_claim": "realm_access.roles",
                            "role_map": ROLE_MAP, "mfa_amr": ["otp", "mfa"]}
    body.update(overrides)
    response = await registry.http.post("/identity-providers", headers=admin, json=body)
    assert response.status_code == 201, response.text
    return Trusted(agency, response.json())


async def through_upstream(http: httpx.AsyncClient, idp_id: str, challenge: str) -> httpx.Response:
    """Start at the registry, let the upstream approve, come back: the registry's answer to the callback."""
    query = authorize_url(challenge).split("?", 1)[1]
    start = await http.get(f"/oauth/federated/{idp_id}?{query}")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient(trust_env=False) as network:
        approved = await network.get(start.headers["location"])
    assert approved.status_code == 302, approved.text
    assert approved.headers["location"].startswith(CALLBACK)
    return await http.get(approved.headers["location"])


async def sign_in_through(registry: Registry, idp_id: str) -> dict[str, Any]:
    """The whole brokered sign-in and the code exchange: the registry's token response."""
    verifier, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, idp_id, challenge)
        assert back.status_code == 302, back.text
        assert back.headers["location"].startswith("/oauth/authorize?")
        code = code_of(await http.get(back.headers["location"]))
    response = await exchange(registry, code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refused_records(registry: Registry, agency_id: str) -> list[dict[str, Any]]:
    records = [r["payload"]["data"] for r in await registry.outbox("access.recorded.v1")]
    return [r for r in records if r.get("action") == "sign_in.refused" and r.get("agency") == agency_id]


async def people_of(registry: Registry, agency_id: str) -> list[tuple[str, list[str]]]:
    async with unit_of_work(registry.sessions) as session:
        rows = (await session.execute(text("SELECT id, roles FROM people WHERE agency_id = :a ORDER BY created_at"),
                                      {"a": agency_id})).all()
    return [(r[0], list(r[1])) for r in rows]


# --- the flow ----------------------------------------------------------------------------------------------------


async def test_a_person_of_the_trusting_agency_signs_in_through_its_provider(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    assert trusted.idp["redirect_uri"] == CALLBACK and trusted.idp["has_client_secret"] is True
    assert "client_secret" not in trusted.idp
    body = await sign_in_through(registry, trusted.idp["id"])
    access = claims_of(body["access_token"])
    # The registry's own token, the same profile as a password + TOTP sign-in.
    assert access["iss"] == ISSUER and access["aud"] == registry.settings.audience
    assert access["sub"].startswith("person-") and access["agency"] == trusted.agency.agency_id
    assert access["roles"] == ["caseworker"] and "cases:read" in access["scope"].split()
    assert access["amr"] == ["pwd", "otp"] and access["acr"] == "urn:refnet:acr:mfa"
    principal = await registry.validator.validate(body["access_token"])
    assert principal.agency_id == trusted.agency.agency_id and "cases:read" in principal.scopes
    assert claims_of(body["id_token"])["sub"] == access["sub"]
    # The upstream was asked with PKCE and authenticated with the client secret; no upstream token kept.
    exchange_sent = upstream.token_requests[-1]
    assert exchange_sent["code_verifier"] and exchange_sent["redirect_uri"] == CALLBACK
    # Linked by (issuer, sub): nothing of the person's name or e-mail stored; the login is the login claim.
    async with unit_of_work(registry.sessions) as session:
        person = (await session.execute(text("SELECT login, password_hash, totp_secret_wrapped FROM people "
                                              "WHERE id = :p"), {"p": access["sub"]})).one()
        link = (await session.execute(text("SELECT issuer, subject FROM federated_identities WHERE person_id = :p"),
                                      {"p": access["sub"]})).one()
        dump = (await session.execute(text("SELECT row_to_json(t)::text FROM federated_logins t"))).scalars().all()
    assert person == ("amina.k", None, None)
    assert link == (upstream.issuer, upstream.user["sub"])
    assert not any("Amina" in row or "amina@" in row for row in dump)
    # Roles refreshed at each sign-in, the same person.
    upstream.user["realm_access"] = {"roles": ["rn-supervisor"]}
    again = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])
    assert again["sub"] == access["sub"] and again["roles"] == ["supervisor"]
    assert await people_of(registry, trusted.agency.agency_id) == [(access["sub"], ["supervisor"])]
    # The audit record names the person by id and the provider by its trust's id.
    records = [r["payload"]["data"] for r in await registry.outbox("access.recorded.v1")]
    records = [r for r in records if r.get("action") == "sign_in.federated" and r.get("acting_user") == access["sub"]]
    assert len(records) == 2 and records[0]["details"]["identity_provider"] == trusted.idp["id"]


async def test_a_brokered_person_cannot_be_given_a_local_password_by_a_reset(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """Their agency's provider is where they are disabled; a reset link would open a way in around it."""
    trusted = await trust(registry, admin, upstream)
    person = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])["sub"]
    reset = await registry.http.post(f"/agencies/{trusted.agency.agency_id}/staff/{person}/reset", headers=admin)
    assert reset.status_code == 409 and reset.json()["type"].endswith("person-signs-in-elsewhere"), reset.text
    async with unit_of_work(registry.sessions) as session:
        links = (await session.execute(text("SELECT count(*) FROM person_invites WHERE person_id = :p"),
                                       {"p": person})).scalar_one()
    assert links == 0


async def test_the_brokered_persons_token_reads_their_agencys_cases_at_intake(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider,
        new_database: Callable[[str], str]) -> None:
    """The registry's token from a brokered sign-in works at intake like any other: the person registers a case
    for their agency and reads the agency's case list; another agency's person sees none of it."""
    url = new_database("intake_fed")
    await asyncio.to_thread(upgrade, "intake", url)
    key_file = Path(tempfile.mkdtemp(prefix="intake-key-")) / "master.b64"
    write_key_file(key_file, MasterKey.generate())
    intake = create_intake(IntakeSettings(database_url=url, kafka_bootstrap="127.0.0.1:9", log_json=False,
                                          issuer=ISSUER, master_key_file=str(key_file)))
    async with intake.router.lifespan_context(intake):
        # intake checks the registry's tokens with the registry's keys, fetched from the registry itself.
        await intake.state.token_validator.aclose()
        intake.state.token_validator = TokenValidator(ISSUER, registry.settings.audience,
                                                      registry.settings.effective_jwks_url,
                                                      http_client=registry.http, min_refetch_seconds=0)
        trusted = await trust(registry, admin, upstream)
        token = (await sign_in_through(registry, trusted.idp["id"]))["access_token"]
        with UpstreamProvider() as other_upstream:
            other_upstream.redirect_uris, other_upstream.user = [CALLBACK], dict(upstream.user)
            other = await trust(registry, admin, other_upstream)
            other_token = (await sign_in_through(registry, other.idp["id"]))["access_token"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=intake), base_url="http://intake") as http:
            headers = {"Authorization": "Bearer " + token, "X-Purpose": "case_management"}
            created = await http.post("/cases", json=case_body(), headers=headers)
            assert created.status_code == 201, created.text
            listed = await http.get("/cases", headers=headers)
            assert listed.status_code == 200, listed.text
            assert [c["id"] for c in listed.json()["items"]] == [created.json()["id"]]
            theirs = await http.get("/cases", headers={"Authorization": "Bearer " + other_token})
            assert theirs.status_code == 200 and theirs.json()["items"] == []
            read = await http.get(f"/cases/{created.json()['id']}", headers={
                "Authorization": "Bearer " + other_token, "X-Purpose": "case_management"})
            assert read.status_code == 404


async def test_the_registry_can_authenticate_at_the_provider_with_its_own_key(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """private_key_jwt: the provider knows the registry's JWKS; no client secret is kept anywhere."""
    upstream.client_jwks = (await registry.http.get("/.well-known/jwks.json")).json()
    trusted = await trust(registry, admin, upstream, auth_method="private_key_jwt", client_secret=None)
    assert trusted.idp["has_client_secret"] is False
    access = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])
    assert access["agency"] == trusted.agency.agency_id
    # Without the registry's keys the provider refuses the client, and so no one is signed in.
    upstream.client_jwks = {"keys": []}
    _, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, trusted.idp["id"], challenge)
    assert back.status_code == 403 and "did not complete" in back.text


async def test_the_sign_in_form_sends_a_person_of_such_an_agency_to_its_provider(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    _, challenge = pkce()
    async with browser(registry) as http:
        url = authorize_url(challenge)
        page = await http.get(url)
        assert 'value="federated"' in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        sent = await http.post(url, data={"csrf": csrf, "step": "federated", "agency": trusted.agency.agency_id})
        assert sent.status_code == 303
        assert sent.headers["location"].startswith(f"/oauth/federated/{trusted.idp['id']}?")
        onward = await http.get(sent.headers["location"])
        assert onward.status_code == 302 and onward.headers["location"].startswith(upstream.issuer + "/authorize?")
        # An agency without its own provider: the password form, saying so.
        other = await registry.agency(["registry:read"])
        plain = await http.post(url, data={"csrf": csrf, "step": "federated", "agency": other.agency_id})
        assert plain.status_code == 400 and "does not use its own sign-in" in plain.text


async def test_the_upstream_request_carries_pkce_state_and_nonce(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    _, challenge = pkce()
    async with browser(registry) as http:
        start = await http.get(f"/oauth/federated/{trusted.idp['id']}?" + authorize_url(challenge).split("?", 1)[1])
    sent = httpx.URL(start.headers["location"]).params
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["code_challenge"] != challenge  # the registry's own verifier, not the console's
    assert len(sent["state"]) >= 32 and len(sent["nonce"]) >= 32 and sent["redirect_uri"] == CALLBACK
    assert sent["client_id"] == upstream.client_id and "openid" in sent["scope"].split()


# --- refusals ----------------------------------------------------------------------------------------------------


def _expired(up: UpstreamProvider) -> None:
    now = int(time.time())
    up.id_token_claims = {"iat": now - 4000, "exp": now - 3600}


HOSTILE: dict[str, Callable[[UpstreamProvider], None]] = {
    "signed_by_another_key": lambda up: setattr(up, "signing", "foreign"),
    "wrong_iss": lambda up: setattr(up, "id_token_claims", {"iss": "http://127.0.0.1:9/realms/other"}),
    "wrong_aud": lambda up: setattr(up, "id_token_claims", {"aud": "another-client"}),
    "aud_list_without_azp": lambda up: setattr(up, "id_token_claims", {"aud": [up.client_id, "another"]}),
    "expired": _expired,
    "wrong_nonce": lambda up: setattr(up, "id_token_claims", {"nonce": "forged-nonce"}),
    "missing_nonce": lambda up: setattr(up, "id_token_claims", {"nonce": None}),
    "alg_none": lambda up: setattr(up, "signing", "none"),
    "hs256_with_client_secret": lambda up: setattr(up, "signing", "hs256"),
    "missing_sub": lambda up: setattr(up, "id_token_claims", {"sub": None}),
    "sub_not_a_string": lambda up: setattr(up, "id_token_claims", {"sub": {"id": 1}}),
    "exp_not_a_number": lambda up: setattr(up, "id_token_claims", {"exp": "tomorrow"}),
    "typ_access_token": lambda up: setattr(up, "header_typ", "at+jwt"),
    "not_a_jwt": lambda up: setattr(up, "signing", "garbage"),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
async def test_an_id_token_that_does_not_verify_is_refused(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider, attack: str) -> None:
    trusted = await trust(registry, admin, upstream)
    HOSTILE[attack](upstream)
    _, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, trusted.idp["id"], challenge)
        assert back.status_code == 403, back.text
        assert "could not be verified" in back.text
        assert "refnet_signin" not in http.cookies
    assert await people_of(registry, trusted.agency.agency_id) == []
    refused = await refused_records(registry, trusted.agency.agency_id)
    assert [r["details"]["reason"] for r in refused] == ["id_token"]


CLAIM_REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    # name: (trust overrides, user claims, reason recorded, words on the page)
    "role_maps_to_nothing": ({}, {"realm_access": {"roles": ["offline_access", "rn-unknown"]}}, "no_roles",
                             "no role that RefNet knows"),
    "tenant_of_another_organisation": ({"tenant_claim": "tid", "tenant_value": "tenant-ours"},
                                       {"tid": "tenant-theirs"}, "tenant", "does not belong to the organisation"),
    "tenant_claim_missing": ({"tenant_claim": "tid", "tenant_value": "tenant-ours"}, {}, "tenant",
                             "does not belong to the organisation"),
    "caseworker_without_second_factor": ({}, {"amr": ["pwd"]}, "second_factor", "needs a second factor"),
    "second_factor_not_counted_by_the_trust": ({"mfa_amr": []}, {}, "second_factor", "needs a second factor"),
}


@pytest.mark.parametrize("case", sorted(CLAIM_REFUSALS))
async def test_claims_that_do_not_map_are_refused(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider, case: str) -> None:
    overrides, user, reason, words = CLAIM_REFUSALS[case]
    trusted = await trust(registry, admin, upstream, **overrides)
    upstream.user.update(user)
    _, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, trusted.idp["id"], challenge)
    assert back.status_code == 403 and words in back.text, back.text
    assert await people_of(registry, trusted.agency.agency_id) == []
    assert [r["details"]["reason"] for r in await refused_records(registry, trusted.agency.agency_id)] == [reason]


async def test_an_agency_admin_may_sign_in_without_a_second_factor_and_the_token_says_so(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    upstream.user.update({"realm_access": {"roles": ["rn-admin"]}, "amr": ["pwd", "otp"], "acr": "1"})
    access = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])
    assert access["roles"] == ["agency_admin"] and access["acr"] == "urn:refnet:acr:mfa"


async def test_a_second_factor_the_trust_does_not_count_is_not_carried_on(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream, mfa_amr=[], mfa_acr=["gold"])
    upstream.user.update({"realm_access": {"roles": ["rn-admin"]}, "amr": ["pwd", "otp"]})
    access = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])
    assert access["amr"] == ["pwd"] and access["acr"] == "urn:refnet:acr:pwd"
    # The acr the trust counts: a second factor (the token says mfa).
    upstream.user.update({"realm_access": {"roles": ["rn-caseworker"]}, "amr": ["pwd"], "acr": "gold"})
    access = claims_of((await sign_in_through(registry, trusted.idp["id"]))["access_token"])
    assert access["roles"] == ["caseworker"] and access["amr"] == ["pwd", "mfa"]
    assert access["acr"] == "urn:refnet:acr:mfa"


async def test_a_provider_cannot_sign_in_as_another_providers_people(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """Agency B's provider answers with an ID token in agency A's provider's name (its iss, signed with A's
    key): B's trust does not accept it, and no one of A is signed in."""
    trusted_a = await trust(registry, admin, upstream)
    with UpstreamProvider() as provider_b:
        provider_b.redirect_uris = [CALLBACK]
        provider_b.user = dict(upstream.user)
        trusted_b = await trust(registry, admin, provider_b, agency=await registry.agency(["registry:read"]))
        provider_b.issue_as = upstream
        _, challenge = pkce()
        async with browser(registry) as http:
            back = await through_upstream(http, trusted_b.idp["id"], challenge)
    assert back.status_code == 403
    assert [r["details"]["reason"] for r in await refused_records(registry, trusted_b.agency.agency_id)] == ["id_token"]
    assert await people_of(registry, trusted_a.agency.agency_id) == []


async def test_an_issuer_trusted_for_agency_a_cannot_sign_in_people_of_agency_b(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """An account linked to a person of agency A stays A's: when the operator moves the issuer's trust to
    agency B, that account is refused rather than signed in as a person of B (or moved to B)."""
    trusted_a = await trust(registry, admin, upstream)
    person = claims_of((await sign_in_through(registry, trusted_a.idp["id"]))["access_token"])["sub"]
    removed = await registry.http.delete(f"/identity-providers/{trusted_a.idp['id']}", headers=admin)
    assert removed.status_code == 204
    trusted_b = await trust(registry, admin, upstream, agency=await registry.agency(["registry:read"]))
    _, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, trusted_b.idp["id"], challenge)
    assert back.status_code == 403 and "another agency" in back.text
    assert await people_of(registry, trusted_b.agency.agency_id) == []
    assert await people_of(registry, trusted_a.agency.agency_id) == [(person, ["caseworker"])]


async def test_removing_the_trust_ends_its_peoples_sessions(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    body = await sign_in_through(registry, trusted.idp["id"])
    assert (await registry.http.delete(f"/identity-providers/{trusted.idp['id']}", headers=admin)).status_code == 204
    renewed = await registry.http.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "refnet-console", "refresh_token": body["refresh_token"]})
    assert renewed.status_code == 400
    revoked = await registry.outbox("token.revoked.v1", claims_of(body["access_token"])["jti"])
    assert len(revoked) == 1
    _, challenge = pkce()
    async with browser(registry) as http:
        gone = await http.get(f"/oauth/federated/{trusted.idp['id']}?" + authorize_url(challenge).split("?", 1)[1])
    assert gone.status_code == 404


async def test_a_brokered_sign_in_ends_after_its_maximum_however_active(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """A person removed at the agency's provider loses RefNet within the maximum: refreshing does not stretch it."""
    trusted = await trust(registry, admin, upstream)
    body = await sign_in_through(registry, trusted.idp["id"])
    renewed = await registry.http.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "refnet-console", "refresh_token": body["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    async with unit_of_work(registry.sessions) as session:
        ends = (await session.execute(text(
            "SELECT expires_at - auth_time FROM sign_in_sessions WHERE person_id = :p"),
            {"p": claims_of(body["access_token"])["sub"]})).scalar_one()
        assert ends.total_seconds() == registry.settings.federated_session_max_seconds
        await session.execute(text("UPDATE sign_in_sessions SET expires_at = now() - interval '1 second' "
                                   "WHERE person_id = :p"), {"p": claims_of(body["access_token"])["sub"]})
    again = await registry.http.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "refnet-console",
        "refresh_token": renewed.json()["refresh_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_an_oversized_token_answer_is_not_read_and_signs_no_one_in(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    upstream.user["padding"] = "x" * (registry.settings.outbound_policy().max_response_bytes + 1)
    _, challenge = pkce()
    async with browser(registry) as http:
        back = await through_upstream(http, trusted.idp["id"], challenge)
    assert back.status_code == 403 and "cannot be reached" in back.text
    assert [r["details"]["reason"] for r in await refused_records(registry, trusted.agency.agency_id)] == [
        "unavailable"]


async def test_the_callback_is_bound_to_the_browser_and_good_once(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    trusted = await trust(registry, admin, upstream)
    _, challenge = pkce()
    async with browser(registry) as http:
        start = await http.get(f"/oauth/federated/{trusted.idp['id']}?" + authorize_url(challenge).split("?", 1)[1])
        async with httpx.AsyncClient(trust_env=False) as network:
            callback = (await network.get(start.headers["location"])).headers["location"]
        # Someone else's browser (no state cookie) gets nowhere with the callback URL (login CSRF).
        async with browser(registry) as other:
            elsewhere = await other.get(callback)
        assert elsewhere.status_code == 400 and "refnet_signin" not in other.cookies
        assert (await http.get(callback)).status_code == 302
        http.cookies.set("refnet_federation", httpx.URL(callback).params["state"], domain="registry.test",
                         path="/oauth/federated/callback")
        replayed = await http.get(callback)
        assert replayed.status_code == 403 and "already used" in replayed.text


async def test_the_federations_access_records_fit_the_audit_log(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    """Adding, using, refusing and removing a trust: each record passes audit's own check (no personal field
    names, ids in RefNet's formats) and names the trust by id."""
    trusted = await trust(registry, admin, upstream)
    await sign_in_through(registry, trusted.idp["id"])
    upstream.user["realm_access"] = {"roles": ["nothing-mapped"]}
    _, challenge = pkce()
    async with browser(registry) as http:
        assert (await through_upstream(http, trusted.idp["id"], challenge)).status_code == 403
    assert (await registry.http.delete(f"/identity-providers/{trusted.idp['id']}", headers=admin)).status_code == 204
    async with unit_of_work(registry.sessions) as session:
        rows = (await session.execute(text(
            "SELECT id, type, subject, aggregateid, payload FROM outbox WHERE payload::text LIKE :p ORDER BY seq"),
            {"p": f"%{trusted.idp['id']}%"})).mappings().all()
    actions = []
    for row in rows:
        envelope = dict(row["payload"])
        event = Event(id=str(row["id"]), source=envelope["source"], type=row["type"], subject=row["subject"],
                      partition_key=row["aggregateid"], time=datetime.now(UTC), data=dict(envelope["data"]))
        actions.append(draft_from_event(event).action)  # raises NotAuditable otherwise
    assert actions == ["identity_provider.add", "sign_in.federated", "sign_in.refused", "identity_provider.remove"]
    assert upstream.user["sub"] not in str([dict(r["payload"]) for r in rows])


# --- the operator's API ------------------------------------------------------------------------------------------


async def test_trusts_are_the_operators_and_checked(
        registry: Registry, admin: dict[str, str], upstream: UpstreamProvider) -> None:
    agency = await registry.agency(["registry:read", "cases:read"])
    base = {"agency": agency.agency_id, "issuer": upstream.issuer, "client_id": "refnet",
            "client_secret": upstream.client_secret, "roles_claim": "roles", "role_map": {"cw": "caseworker"}}
    # An agency's own token cannot add one.
    assert (await registry.http.post("/identity-providers", headers=await registry.headers(agency),
                                     json=base)).status_code == 403
    for change, field in (({"algorithms": ["HS256"]}, "algorithms"), ({"algorithms": ["none"]}, "algorithms"),
                          ({"role_map": {"cw": "root"}}, "role_map"), ({"role_map": {"aud": "auditor"}}, "role_map"),
                          ({"issuer": "ftp://idp.example.org"}, "issuer"), ({"scope": "profile"}, "scope"),
                          ({"client_secret": None}, "client_secret"), ({"tenant_claim": "tid"}, "tenant_value"),
                          ({"roles_claim": "a b"}, "roles_claim")):
        response = await registry.http.post("/identity-providers", headers=admin, json={**base, **change})
        assert response.status_code == 422, (change, response.text)
        assert field in [e["loc"][-1] for e in response.json()["errors"]], response.text
    created = await registry.http.post("/identity-providers", headers=admin, json=base)
    assert created.status_code == 201
    again = await registry.http.post("/identity-providers", headers=admin, json=base)
    assert again.status_code == 409
    listed = await registry.http.get("/identity-providers", headers=admin, params={"agency_id": agency.agency_id})
    assert [i["id"] for i in listed.json()["items"]] == [created.json()["id"]]
    assert upstream.client_secret not in listed.text
    async with unit_of_work(registry.sessions) as session:
        stored = (await session.execute(text("SELECT client_secret_wrapped FROM identity_providers WHERE id = :i"),
                                        {"i": created.json()["id"]})).scalar_one()
    assert upstream.client_secret.encode() not in stored
    assert (await registry.http.delete("/identity-providers/idp-" + "0" * 32, headers=admin)).status_code == 404
