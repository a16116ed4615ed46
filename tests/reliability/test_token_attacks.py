"""Token attacks (issue #8, part 4), against every secured operation of every service.

Forged tokens are made with the attacker's means (a key of their own, the issuer's *public* key, no signature) and,
for the claim checks, with the issuer's real signing key from the stack's key file: a token signed right but expired,
for another audience or from another issuer must still be refused. People's tokens (issue 20) the same way: roles
widened, another agency, someone else's subject, a life beyond ten minutes -- and a person may not name anyone else
in X-Acting-User. A control token forged the same way with valid
claims is accepted, so each refusal is for the one thing the attack changed.

Revocation and suspension are live: a revoked token and a suspended agency's token stop working at every service
within seconds (the registry announces both as events; shared/revocation.py), well before they expire; a suspended
agency's new token request fails at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from shared.client_auth import ASSERTION_TYPE, client_assertion
from tests.e2e.network import Network, eventually
from tests.e2e.staff import Staff
from tests.reliability.report import FULL, Report
from tests.reliability.stack import (
    TOKEN_LIFETIME_SECONDS,
    NewAgency,
    Operation,
    operations,
    register_agency,
    request_token,
)
from tests.support.issuer import new_person

#: One cheap read per service for the tokens of the agencies made here, and the scopes they need.
PROBES = {"registry": "/taxonomy", "intake": "/cases", "referral": "/referrals", "audit": "/audit/checkpoint"}
PROBE_SCOPES = ["registry:read", "cases:read", "referrals:read", "audit:read"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


class Issuer:
    """What an attacker knows of the issuer (its public JWKS), and, for the claim checks, its signing key."""

    def __init__(self, net: Network) -> None:
        self.url = httpx.get(net.url("registry") + "/.well-known/oauth-authorization-server").json()["issuer"]
        self.public = httpx.get(net.url("registry") + "/.well-known/jwks.json").json()["keys"][0]
        private = json.loads((net.home / "keys" / "registry-signing-key.jwks.json").read_text())["keys"][0]
        self.signing_key = ECKey.import_key(private)
        self.kid = private["kid"]
        self.client_id = net.credentials("iom")["client_id"]
        self.agency_id = net.agency("iom")

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.url, "sub": self.client_id, "aud": "refnet", "agency": self.agency_id,
                  "client_id": self.client_id, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
                  "scope": "registry:read registry:write cases:read cases:write consent:write referrals:read "
                           "referrals:write events:read audit:read admin cases:clearance"}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], key: ECKey | None = None, **header: Any) -> str:
        head = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid} | header
        return jwt.encode(head, claims, key or self.signing_key, algorithms=["ES256"])


def attacks(issuer: Issuer, valid_iom_token: str) -> dict[str, str]:
    attacker = ECKey.generate_key("P-256")
    claims = issuer.claims()
    head, payload, signature = valid_iom_token.split(".")
    widened = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    widened["scope"] += " admin audit:read"
    widened["agency"] = "agy_unhcr"

    def hs256(secret: bytes) -> str:
        body = unsigned({"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}, claims)
        return f"{body}.{b64url(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"

    public_pem = ECKey.import_key(issuer.public).as_pem(private=False)
    raw_point = b"".join(base64.urlsafe_b64decode(issuer.public[c] + "==") for c in ("x", "y"))
    return {
        "forged: a real token's claims widened, its signature kept":
            f"{head}.{b64url(json.dumps(widened).encode())}.{signature}",
        "forged: signed by the attacker's key under the issuer's kid": issuer.sign(claims, attacker),
        "forged: signed by the attacker's key under a kid of its own":
            issuer.sign(claims, attacker, kid=attacker.thumbprint()),
        "forged: the attacker's key embedded in the header (jwk)":
            issuer.sign(claims, attacker, kid=attacker.thumbprint(), jwk=attacker.as_dict(private=False)),
        "forged: the attacker's JWKS named in the header (jku)":
            issuer.sign(claims, attacker, kid=attacker.thumbprint(), jku="http://127.0.0.1:9/jwks.json"),
        "alg none": unsigned({"alg": "none", "typ": "at+jwt"}, claims) + ".",
        "alg None, signature kept": unsigned({"alg": "None", "typ": "at+jwt", "kid": issuer.kid}, claims)
        + "." + signature,
        "HS256 keyed with the issuer's public JWK": hs256(json.dumps(issuer.public).encode()),
        "HS256 keyed with the issuer's public key PEM": hs256(public_pem),
        "HS256 keyed with the issuer's raw public point": hs256(raw_point),
        "expired (real key)": issuer.sign(issuer.claims(iat=int(time.time()) - 900, exp=int(time.time()) - 120)),
        "not yet valid (real key)": issuer.sign(issuer.claims(nbf=int(time.time()) + 600)),
        "issued in the future (real key)": issuer.sign(issuer.claims(iat=int(time.time()) + 600)),
        "wrong audience (real key)": issuer.sign(issuer.claims(aud="another-api")),
        "wrong issuer (real key)": issuer.sign(issuer.claims(iss="https://evil.example")),
        "no exp (real key)": issuer.sign(issuer.claims(exp=None)),
        "not an access token: typ JWT (real key)": issuer.sign(claims, typ="JWT"),
        "no agency (real key)": issuer.sign(issuer.claims(agency=None)),
        "exp is a string (real key)": issuer.sign(issuer.claims(exp="9999999999")),
        "a JWE-shaped token": "a.b.c.d.e",
        "garbage": "not-a-token",
        "8 KiB of header": unsigned({"alg": "ES256", "typ": "at+jwt", "x": "A" * 9000}, claims) + ".sig",
    }


def _request(http: httpx.Client, net: Network, op: Operation, authorization: str | None) -> httpx.Response:
    headers = {"X-Purpose": "case_management"} | ({"Authorization": authorization} if authorization else {})
    return http.request(op.method.upper(), op.url(net, **dict.fromkeys(op.path_params, "x1")), headers=headers,
                        json={} if op.body_media_type == "application/json" else None)


def _refused(response: httpx.Response, challenge: str = 'Bearer error="invalid_token"') -> bool:
    return (response.status_code == 401 and response.headers.get("www-authenticate", "").startswith(challenge)
            and response.headers.get("content-type", "").startswith("application/problem+json"))


def test_forged_none_confused_expired_and_misaddressed_tokens_are_refused_everywhere(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    issuer = Issuer(net)
    secured = [op for op in operations(net) if op.scopes is not None]
    tried = 0
    accepted: dict[str, list[str]] = {}
    with httpx.Client(timeout=30) as http:
        # The control: the same forging, valid claims, is accepted (so each refusal below is for its one change).
        control = issuer.sign(issuer.claims())
        for service, path in PROBES.items():
            answer = http.get(net.url(service) + path, headers={"Authorization": f"Bearer {control}"})
            assert answer.status_code == 200, f"the control token is refused by {service}: {answer.text}"
        for name, token in attacks(issuer, net.token("iom")).items():
            for op in secured:
                response = _request(http, net, op, f"Bearer {token}")
                tried += 1
                if not _refused(response):
                    accepted.setdefault(name, []).append(f"{op.label}: {response.status_code}")
        for name, authorization in {"no Authorization header": None, "Basic credentials": "Basic aW9tOmlvbQ==",
                                    "Bearer without a token": "Bearer"}.items():
            for op in secured:
                response = _request(http, net, op, authorization)
                tried += 1
                if response.status_code != 401 or "Bearer" not in response.headers.get("www-authenticate", ""):
                    accepted.setdefault(name, []).append(f"{op.label}: {response.status_code}")
    report.add("token attacks: forged and misaddressed",
               injected="forged signatures, alg none, HS256 keyed with the issuer's public key (3 forms), attacker "
                        "keys (kid, jwk, jku), expired / not-yet-valid / wrong audience / wrong issuer tokens signed "
                        "with the real key, malformed tokens, no token",
               checked="401 with an RFC 6750 challenge on every secured operation of every service; a control "
                       "token forged with valid claims is accepted",
               figures={"attacks": len(attacks(issuer, net.token("iom"))) + 3, "secured operations": len(secured),
                        "requests": tried, "accepted": sum(len(v) for v in accepted.values())},
               failures=sum(len(v) for v in accepted.values()))
    assert not accepted, json.dumps(accepted, indent=1)


# --- people's tokens (issue 20) ------------------------------------------------------------------------------


def person_attacks(staff: Staff, valid_caseworker_token: str) -> dict[str, str]:
    """A person's token changed the ways an insider or a thief would want: more roles, another agency, longer life."""
    attacker = ECKey.generate_key("P-256")
    head, payload, signature = valid_caseworker_token.split(".")
    real = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def kept_signature(**changes: Any) -> str:
        return f"{head}.{b64url(json.dumps(real | changes).encode())}.{signature}"

    now = int(time.time())
    return {
        "person: roles widened to supervisor, signature kept": kept_signature(
            roles=["supervisor"], scope=real["scope"] + " overrides:approve"),
        "person: another agency claimed, signature kept": kept_signature(agency=staff.net.agency("unhcr")),
        "person: someone else's subject, signature kept": kept_signature(sub=new_person()),
        "person: supervisor signed by the attacker's key": staff.sign(staff.claims("iom", ("supervisor",)), attacker),
        "person: wrong issuer (real key)": staff.forge("iom", iss="https://evil.example"),
        "person: wrong audience (real key)": staff.forge("iom", aud="another-api"),
        "person: expired (real key)": staff.forge("iom", iat=now - 900, exp=now - 120),
        "person: lives an hour, beyond the profile's ten minutes (real key)": staff.forge("iom", exp=now + 3600),
        "person: no iat (real key)": staff.forge("iom", iat=None),
        "person: a role RefNet does not know (real key)": staff.forge("iom", ("root",), scope="cases:read"),
        "person: roles not a list (real key)": staff.forge("iom", roles="supervisor"),
        "person: a subject that is no id (real key)": staff.forge("iom", person="Example Person"),
    }


def test_forged_and_misaddressed_people_tokens_are_refused_everywhere(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    staff = Staff(net)
    secured = [op for op in operations(net) if op.scopes is not None]
    accepted: dict[str, list[str]] = {}
    tried = 0
    with httpx.Client(timeout=30) as http:
        # The control: a caseworker's token as the registry issues it is accepted where a caseworker may read.
        control = staff.token("iom")
        for service, path in PROBES.items():
            if service != "audit":  # audit:read is the auditor's, not the caseworker's
                answer = http.get(net.url(service) + path, headers={"Authorization": f"Bearer {control}"})
                assert answer.status_code == 200, f"a person's token is refused by {service}: {answer.text}"
        attacks_made = person_attacks(staff, control)
        for name, token in attacks_made.items():
            for op in secured:
                response = _request(http, net, op, f"Bearer {token}")
                tried += 1
                if not _refused(response):
                    accepted.setdefault(name, []).append(f"{op.label}: {response.status_code}")
    report.add("token attacks: people's tokens",
               injected="a person's token with roles widened, agency or subject changed (signature kept), signed by an "
                        "attacker, from another issuer or audience, expired, living beyond ten minutes, unknown roles",
               checked="401 with an RFC 6750 challenge on every secured operation of every service; a caseworker's "
                       "token as the registry issues it is accepted",
               figures={"attacks": len(attacks_made), "secured operations": len(secured), "requests": tried,
                        "accepted": sum(len(v) for v in accepted.values())},
               failures=sum(len(v) for v in accepted.values()))
    assert not accepted, json.dumps(accepted, indent=1)


def test_a_person_cannot_act_as_someone_else_anywhere(reliability_network: Network, report: Report) -> None:
    """With a person's own token, X-Acting-User may only repeat the person: naming anyone else is refused by every
    secured operation (before its scope or body is looked at), so no audit entry can name the wrong person."""
    net = reliability_network
    staff = Staff(net)
    secured = [op for op in operations(net) if op.scopes is not None]
    person = staff.person("iom", ("supervisor",)).id
    token = staff.token("iom", ("supervisor",))
    wrong: dict[str, str] = {}
    with httpx.Client(timeout=30) as http:
        for op in secured:
            headers = {"Authorization": f"Bearer {token}", "X-Purpose": "case_management",
                       "X-Acting-User": "caseworker.1"}
            response = http.request(op.method.upper(), op.url(net, **dict.fromkeys(op.path_params, "x1")),
                                    headers=headers, json={} if op.body_media_type == "application/json" else None)
            if response.status_code != 403 or response.json().get("type") != \
                    "urn:refnet:problem:acting-user-contradicts-token" or person in response.text:
                wrong[op.label] = f"{response.status_code} {response.text[:200]}"
        same = http.get(net.url("intake") + "/cases", headers={"Authorization": f"Bearer {token}",
                                                               "X-Acting-User": person})
        # Nor may an agency's system put a RefNet person's id on its act: that person acts with their own token.
        system = http.get(net.url("intake") + "/cases", headers={"Authorization": f"Bearer {net.token('iom')}",
                                                                 "X-Acting-User": person})
    report.add("token attacks: acting as someone else",
               injected="a supervisor's own token with X-Acting-User naming another user",
               checked="403 acting-user-contradicts-token on every secured operation; the header repeating the "
                       "token's subject is accepted",
               figures={"secured operations": len(secured), "accepted": len(wrong)},
               failures=len(wrong) + (same.status_code != 200) + (system.status_code != 400))
    assert not wrong, json.dumps(wrong, indent=1)
    assert same.status_code == 200, same.text
    assert system.status_code == 400 and system.json()["type"] == "urn:refnet:problem:acting-user-is-a-person", \
        system.text


# --- revocation and suspension -----------------------------------------------------------------------------


def _probe_all(http: httpx.Client, net: Network, token: str) -> dict[str, int]:
    return {service: http.get(net.url(service) + path, headers={"Authorization": f"Bearer {token}"}).status_code
            for service, path in PROBES.items()}


def _token_of(net: Network, agency: NewAgency) -> str:
    answer = request_token(net, agency.client_id, agency.private_pem, PROBE_SCOPES)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _refused_everywhere(http: httpx.Client, net: Network, token: str) -> Callable[[], Any]:
    async def probe() -> dict[str, int]:
        return _probe_all(http, net, token)

    return probe


async def test_a_revoked_token_is_refused_by_every_service_within_seconds(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    agency = register_agency(net, f"Revoking NGO {uuid.uuid4().hex[:6]}", PROBE_SCOPES)
    with httpx.Client(timeout=30) as http:
        token, other = _token_of(net, agency), _token_of(net, agency)
        assert set((await eventually(_refused_everywhere(http, net, token), lambda a: set(a.values()) == {200}))
                   .values()) == {200}, "the new agency's token does not work yet"
        token_url = net.url("registry") + "/oauth/token"
        revoked_at = time.monotonic()
        revoke = http.post(net.url("registry") + "/oauth/revoke", data={
            "token": token, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(agency.client_id, token_url, agency.private_pem)})
        assert revoke.status_code == 200, revoke.text
        answers = await eventually(_refused_everywhere(http, net, token), lambda a: set(a.values()) == {401},
                                   seconds=30)
        took = time.monotonic() - revoked_at
        still_good = _probe_all(http, net, other)  # revocation is of one token, not of the agency
        introspected = http.post(net.url("registry") + "/oauth/introspect", data={
            "token": token, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(agency.client_id, token_url, agency.private_pem)}).json()
        expired: dict[str, int] = {}
        if FULL:  # the last line: the other token, never revoked, is refused once its lifetime and leeway are over
            time.sleep(TOKEN_LIFETIME_SECONDS + 31)
            expired = _probe_all(http, net, other)
    failures = [s for s, status in answers.items() if status != 401] + [
        s for s, status in still_good.items() if status != 200] + [s for s, status in expired.items() if status != 401]
    report.add("token attacks: revoked token",
               injected="a token revoked by its client (RFC 7009), used again at every service",
               checked="refused (401) by all four services within seconds; the agency's other token still works",
               figures={"services": len(answers), "refused everywhere after (s)": round(took, 1),
                        "token lifetime (s)": TOKEN_LIFETIME_SECONDS}, failures=len(failures))
    assert set(answers.values()) == {401}, answers
    assert set(still_good.values()) == {200}, still_good
    assert introspected == {"active": False}
    assert set(expired.values()) <= {401}, expired
    assert took < TOKEN_LIFETIME_SECONDS / 2, "refused only because it expired, not because it was revoked"


async def test_a_suspended_agencys_tokens_stop_working_everywhere_and_it_gets_no_new_one(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    agency = register_agency(net, f"Suspended NGO {uuid.uuid4().hex[:6]}", PROBE_SCOPES)
    with httpx.Client(timeout=30) as http:
        token = _token_of(net, agency)
        assert set((await eventually(_refused_everywhere(http, net, token), lambda a: set(a.values()) == {200}))
                   .values()) == {200}, "the new agency's token does not work yet"
        suspended_at = time.monotonic()
        patched = http.patch(net.url("registry") + f"/agencies/{agency.agency_id}", headers=net.headers("admin"),
                             json={"status": "suspended"})
        assert patched.status_code == 200, patched.text
        new_request = request_token(net, agency.client_id, agency.private_pem, PROBE_SCOPES)
        answers = await eventually(_refused_everywhere(http, net, token), lambda a: set(a.values()) == {401},
                                   seconds=30)
        took = time.monotonic() - suspended_at
    report.add("token attacks: suspended agency",
               injected="the operator suspends an agency holding a valid token",
               checked="its token refused by all four services within seconds (not only at expiry); its new token "
                       "request refused at once (invalid_client)",
               figures={"services": len(answers), "refused everywhere after (s)": round(took, 1),
                        "token lifetime (s)": TOKEN_LIFETIME_SECONDS},
               failures=sum(status != 401 for status in answers.values()) + (new_request.status_code != 401))
    assert new_request.status_code == 401 and new_request.json()["error"] == "invalid_client", new_request.text
    assert set(answers.values()) == {401}, answers
    assert took < TOKEN_LIFETIME_SECONDS / 2, "refused only because it expired, not because of the suspension"
