"""The rules of agencies' own identity providers (issue #20 part 5), pure: no I/O.

The registry brokers an agency's OpenID Connect provider (as Keycloak's identity brokering does): a person of
that agency signs in there, the registry verifies the ID token it gets back, maps its claims to a RefNet person
of that agency, and goes on with its own flow -- so the APIs and the console keep trusting one issuer, and
every token has the same profile. What a trust says, and how an ID token's claims are read, is decided here;
fetching and verifying is service/federation.py's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.registry import domain

#: Signature algorithms an ID token may use: asymmetric only (no ``none``, no HMAC keyed with a secret the
#: registry shares with the upstream). A trust may narrow this list, never widen it.
ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                                       "ES512", "EdDSA")
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256")
#: How the registry authenticates at the upstream's token endpoint. private_key_jwt signs with the registry's
#: own signing key: the upstream is given the registry's JWKS URL, no secret to keep.
AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post", "private_key_jwt")
SECRET_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
#: RFC 8176's registered method names: the only amr values carried on (anything else an upstream says is
#: dropped, so no free text reaches tokens or the audit log).
RFC8176_AMR = frozenset({"face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pwd", "rba",
                         "retina", "sc", "sms", "swk", "tel", "user", "vbm", "wia"})
#: The amr values RefNet reads as "a second factor was used" (service/sign_in.py, ``SignedIn.acr``).
SECOND_FACTOR_AMR = frozenset({domain.AMR_OTP, "mfa"})
#: A claim path: names separated by dots (``realm_access.roles``), each a JSON member name without spaces.
CLAIM_PATH = re.compile(r"[A-Za-z0-9_:/-]{1,80}(\.[A-Za-z0-9_:/-]{1,80}){0,4}")
MAX_SUBJECT_LENGTH = 255  # OpenID Connect Core 2: sub is at most 255 ASCII characters
FEDERATED_LOGIN_SECONDS = 600  # a sign-in sent upstream must come back within this long
CLOCK_LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class Trust:
    """What an operator says about one agency's provider (the secret aside)."""

    issuer: str
    discovery_url: str
    jwks_uri: str | None
    client_id: str
    auth_method: str
    scope: str
    login_claim: str
    roles_claim: str
    role_map: Mapping[str, str]
    tenant_claim: str | None
    tenant_value: str | None
    mfa_amr: tuple[str, ...]
    mfa_acr: tuple[str, ...]
    algorithms: tuple[str, ...]


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """None when ``url`` may name a provider's issuer or endpoint: absolute https (http only when the
    development settings allow it), no fragment, no query, no credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a valid URL"
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return "only https URLs are allowed"
    if not parts.hostname or parts.fragment or parts.query or parts.username or parts.password or len(url) > 500:
        return "an absolute URL with a host, without query, fragment or credentials, at most 500 characters"
    return None


def default_discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def check_trust(trust: Trust, agency_kind: str, *, has_secret: bool, allow_http: bool) -> list[tuple[str, str]]:
    """What is wrong with a trust, as (field, why) pairs; empty when it may be registered."""
    wrong: list[tuple[str, str]] = []
    for name, url in (("issuer", trust.issuer), ("discovery_url", trust.discovery_url),
                      ("jwks_uri", trust.jwks_uri)):
        reason = url_problem(url, allow_http=allow_http) if url is not None else None
        if reason:
            wrong.append((name, reason))
    if not trust.client_id or len(trust.client_id) > 255 or not trust.client_id.isprintable():
        wrong.append(("client_id", "the client id RefNet is registered with at the provider, 1-255 characters"))
    if trust.auth_method not in AUTH_METHODS:
        wrong.append(("auth_method", f"one of {', '.join(AUTH_METHODS)}"))
    elif (trust.auth_method in SECRET_AUTH_METHODS) != has_secret:
        wrong.append(("client_secret", "a client secret is needed with client_secret_basic or client_secret_post, "
                                       "and given with no other method"))
    scopes = trust.scope.split()
    if "openid" not in scopes or len(trust.scope) > 300:
        wrong.append(("scope", "the scopes asked of the provider include openid (at most 300 characters)"))
    for name, path in (("login_claim", trust.login_claim), ("roles_claim", trust.roles_claim),
                       ("tenant_claim", trust.tenant_claim)):
        if path is not None and not CLAIM_PATH.fullmatch(path):
            wrong.append((name, "a claim name, or a dotted path such as realm_access.roles"))
    if (trust.tenant_claim is None) != (trust.tenant_value is None):
        wrong.append(("tenant_value", "a tenant claim and its value go together"))
    elif trust.tenant_value is not None and not 0 < len(trust.tenant_value) <= 200:
        wrong.append(("tenant_value", "1-200 characters"))
    if not trust.role_map:
        wrong.append(("role_map", "map at least one of the provider's role values to a RefNet role"))
    for upstream, role in trust.role_map.items():
        if not upstream or len(upstream) > 200:
            wrong.append(("role_map", "a provider's role value is 1-200 characters"))
            break
        reason = domain.check_roles(agency_kind, [role])
        if reason:
            wrong.append(("role_map", reason))
            break
    if len(trust.role_map) > 50:
        wrong.append(("role_map", "at most 50 entries"))
    if not trust.algorithms or set(trust.algorithms) - set(ALLOWED_ALGORITHMS):
        wrong.append(("algorithms", f"a non-empty subset of {', '.join(ALLOWED_ALGORITHMS)}"))
    for name, values in (("mfa_amr", trust.mfa_amr), ("mfa_acr", trust.mfa_acr)):
        if len(values) > 20 or any(not v or len(v) > 200 for v in values):
            wrong.append((name, "at most 20 values of 1-200 characters"))
    return wrong


# --- reading an ID token's claims ----------------------------------------------------------------------------


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``); a top-level claim whose own name has dots (Entra's
    URIs, Keycloak's mappers) is found too. None when absent."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()  # a space-separated string (some providers' roles or scope-like claims)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def mapped_roles(claims: Mapping[str, Any], trust: Trust, agency_kind: str) -> list[str]:
    """The RefNet roles the ID token's role claim maps to (unmapped values ignored), in domain.ROLES order;
    empty when nothing maps (the sign-in is refused then)."""
    upstream = set(_strings(claim_at(claims, trust.roles_claim)))
    roles = {trust.role_map[v] for v in upstream if v in trust.role_map}
    chosen: list[str] = [r for r in domain.ROLES if r in roles]
    return chosen if chosen and domain.check_roles(agency_kind, chosen) is None else []


def tenant_matches(claims: Mapping[str, Any], trust: Trust) -> bool:
    """Whether the ID token is of the agency's organisation (e.g. Entra ID's ``tid``), when the trust says so."""
    if trust.tenant_claim is None:
        return True
    value = claim_at(claims, trust.tenant_claim)
    return isinstance(value, str) and value == trust.tenant_value


def second_factor_proven(claims: Mapping[str, Any], trust: Trust) -> bool:
    """Whether the upstream's ``amr`` or ``acr`` is one the trust counts as a second factor."""
    amr = set(_strings(claims.get("amr")))
    acr = claims.get("acr")
    return bool(amr & set(trust.mfa_amr)) or (isinstance(acr, str) and acr in trust.mfa_acr)


def session_amr(claims: Mapping[str, Any], proven: bool) -> list[str]:
    """The amr the registry's tokens carry for a brokered sign-in: the upstream's RFC 8176 values; ``mfa``
    added when the trust counts a second factor as proven, and the second-factor values dropped when it does
    not (the registry's tokens say only what RefNet accepted)."""
    amr = [v for v in dict.fromkeys(_strings(claims.get("amr"))) if v in RFC8176_AMR][:10]
    if proven:
        return amr if set(amr) & SECOND_FACTOR_AMR else [*amr, "mfa"]
    return [v for v in amr if v not in SECOND_FACTOR_AMR]


def subject_of(claims: Mapping[str, Any]) -> str | None:
    sub = claims.get("sub")
    if isinstance(sub, str) and 0 < len(sub) <= MAX_SUBJECT_LENGTH and sub.isprintable():
        return sub
    return None


def login_for(claims: Mapping[str, Any], trust: Trust, subject: str) -> str:
    """The login a brokered person gets at the registry: the login claim's value when it is a valid login
    (an opaque identifier; an e-mail address never is), else an opaque one derived from issuer and subject."""
    value = claim_at(claims, trust.login_claim)
    if isinstance(value, str) and domain.check_login(value.lower()) is None:
        return value.lower()
    return derived_login(trust.issuer, subject)


def derived_login(issuer: str, subject: str) -> str:
    return "fed-" + hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:20]


def refusal_text(reason: str, agency_name: str) -> str:
    """What the person reads when a brokered sign-in is refused (never a claim's value)."""
    texts = {
        "no_roles": f"Your account at {agency_name} has no role that RefNet knows. Ask your agency's "
                    "administrator to give you a RefNet role.",
        "tenant": "This account does not belong to the organisation RefNet trusts for this agency.",
        "second_factor": f"Your role needs a second factor, and {agency_name}'s sign-in did not use one. Sign "
                         "in there again with your second factor (or ask your agency's administrator to require "
                         "one).",
        "other_agency": "This account is linked to a person of another agency; it cannot sign in here.",
        "disabled": "This account is disabled at RefNet. Ask your agency's administrator.",
        "expired": "The sign-in took too long or was already used; start again.",
        "upstream_error": f"{agency_name}'s sign-in did not complete. Start again.",
        "unavailable": f"{agency_name}'s sign-in cannot be reached now. Try again later.",
    }
    return texts.get(reason, f"{agency_name}'s answer could not be verified, so RefNet did not sign you in.")


def check_values(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
