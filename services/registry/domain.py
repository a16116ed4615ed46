"""The registry's rules, free of I/O: scopes, agency kinds, the service taxonomy, client-assertion claims,
scope grants, languages and capacity, and the signing-key lifecycle. Unit-tested alone (tests/unit/registry)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

# --- scopes and agencies -----------------------------------------------------------------------------------

#: Every scope the registry can grant (docs/contract.md "Scopes", plus the referral service's own clearance scope
#: for its service-to-service calls to intake).
SCOPES: frozenset[str] = frozenset({
    "registry:read", "registry:write", "cases:write", "cases:read", "consent:write", "referrals:read",
    "referrals:write", "events:read", "audit:read", "admin", "cases:clearance", "stats:read",
})
#: And an agency that runs a witness of the audit log (``refnet audit witness``): checkpoints and consistency
#: proofs, never entries.
SCOPES = SCOPES | frozenset({"audit:witness"})

#: Kinds an agency can be registered with through the API.
AGENCY_KINDS = ("un_agency", "ngo", "government", "service_provider", "oversight")
#: Clients of the platform itself (the operator's admin client, the referral service); seeded, never
#: registered through the API.
PLATFORM_KIND = "platform"

#: Scopes only the platform's bootstrap grants (deploy/seed.py), never the API: ``admin`` manages
#: every agency and its scopes; ``cases:clearance`` (the referral service's) reads cases in full at intake.
#: An admin who could grant them could make any client -- one it holds the key of -- as strong as itself, or
#: stronger.
PLATFORM_SCOPES: frozenset[str] = frozenset({"admin", "cases:clearance"})

AgencyStatus = Literal["active", "suspended"]

#: Scopes only an agency of a given kind may hold: platform statistics are for oversight (docs/domain.md rule 9).
SCOPES_OF_KIND: Mapping[str, str] = {"stats:read": "oversight"}


def scopes_not_for_kind(kind: str, scopes: Iterable[str]) -> list[str]:
    """The scopes among ``scopes`` that an agency of ``kind`` may not hold."""
    return sorted(s for s in set(scopes) if SCOPES_OF_KIND.get(s, kind) != kind)


def holdable_scopes(kind: str, scopes: Iterable[str]) -> list[str]:
    """What a token may carry of the agency's scopes: a scope its kind may not hold never reaches a token,
    even if a row came to hold it some other way than the API (which refuses it)."""
    refused = set(scopes_not_for_kind(kind, scopes))
    return sorted(set(scopes) - refused)



def scopes_the_api_may_not_grant(requested: Iterable[str], held: Iterable[str] = ()) -> list[str]:
    """The platform scopes ``requested`` would add to those the agency ``held`` (keeping one it already
    holds is not granting it): the API refuses them."""
    return sorted((set(requested) & PLATFORM_SCOPES) - set(held))


def credentials_settable_by_api(held: Iterable[str]) -> bool:
    """Whoever holds a client's credentials holds its scopes: new credentials for a client with a platform
    scope would hand that scope to whoever chose them, so only the bootstrap sets those."""
    return not set(held) & PLATFORM_SCOPES


def may_introspect(caller_kind: str, caller_client_id: str, token_client_id: object) -> bool:
    """RFC 7662 section 4 (token scanning): the platform's own clients (its resource servers and operator,
    kind ``platform``, registered only by the bootstrap) may introspect any token; any other client only
    tokens issued to itself."""
    return caller_kind == PLATFORM_KIND or token_client_id == caller_client_id

# --- the service taxonomy (docs/domain.md "Service taxonomy") --------------------------------------------------

# BCP 47-ish: a primary language subtag, optionally a region or script ("en", "fr", "pt-BR", "zh-Hant").
LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
DEFAULT_LANGUAGE = "en"

CapacityStatus = Literal["accepting", "full", "closed"]


def check_capacity(available: int, total: int) -> str | None:
    """None when the figures make sense, else why not."""
    if available < 0 or total < 0:
        return "capacity figures cannot be negative"
    if available > total:
        return "available cannot exceed total"
    return None


# --- languages ---------------------------------------------------------------------------------------------


def parse_accept_language(header: str | None) -> list[str]:
    """Language ranges of an Accept-Language header, best first (RFC 9110 12.5.4); * and q=0 dropped."""
    if not header:
        return []
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        tag = tag.strip().lower()
        if tag and tag != "*" and quality > 0 and len(tag) <= 35:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def pick_language(accept_language: str | None, available: Iterable[str]) -> str | None:
    """The best of available for the caller: an exact match, then a primary-subtag match, then English,
    then any. None when there is nothing to pick from."""
    choices = list(available)
    if not choices:
        return None
    lowered = {c.lower(): c for c in choices}
    for wanted in parse_accept_language(accept_language):
        if wanted in lowered:
            return lowered[wanted]
        primary = wanted.split("-", 1)[0]
        for candidate in choices:
            if candidate.lower().split("-", 1)[0] == primary:
                return candidate
    if DEFAULT_LANGUAGE in lowered:
        return lowered[DEFAULT_LANGUAGE]
    return sorted(choices)[0]


def localized(texts: Mapping[str, str], language: str | None) -> str | None:
    if language is None:
        return None
    return texts.get(language)


# --- OAuth: errors, client assertions, scopes --------------------------------------------------------------

OAuthErrorCode = Literal[
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope", "unsupported_token_type",
]


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error. description is shown to the caller: never a secret or a token."""

    def __init__(self, error: OAuthErrorCode, description: str, *, status: int | None = None) -> None:
        super().__init__(description)
        self.error: OAuthErrorCode = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)


#: Algorithms a client may sign its assertion with (asymmetric only: "none" and HMAC are never accepted).
ASSERTION_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "RS256", "RS384", "EdDSA")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_JTI_LENGTH = 256


@dataclass(frozen=True)
class AssertionPolicy:
    audiences: frozenset[str]  # the token endpoint URL(s) and the issuer
    max_lifetime_seconds: int = 300
    leeway_seconds: int = 30


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OAuthError("invalid_client", f"The assertion's '{name}' claim is not a NumericDate.")
    return float(value)


def check_assertion_claims(claims: Mapping[str, Any], client_id: str, policy: AssertionPolicy,
                           now: float) -> tuple[str, float]:
    """RFC 7523 section 3 on a verified assertion. Returns (jti, exp)."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise OAuthError("invalid_client", "The assertion's 'iss' and 'sub' must both be the client id.")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not any(isinstance(a, str) and a in policy.audiences for a in audiences):
        raise OAuthError("invalid_client", "The assertion's 'aud' must name the token endpoint or the issuer.")
    exp = _numeric(claims, "exp")
    if exp is None:
        raise OAuthError("invalid_client", "The assertion has no 'exp' claim.")
    if exp <= now - policy.leeway_seconds:
        raise OAuthError("invalid_client", "The assertion has expired.")
    if exp > now + policy.max_lifetime_seconds + policy.leeway_seconds:
        raise OAuthError("invalid_client",
                         f"The assertion's 'exp' is more than {policy.max_lifetime_seconds} s ahead.")
    nbf = _numeric(claims, "nbf")
    if nbf is not None and nbf > now + policy.leeway_seconds:
        raise OAuthError("invalid_client", "The assertion is not valid yet ('nbf').")
    iat = _numeric(claims, "iat")
    if iat is not None and iat > now + policy.leeway_seconds:
        raise OAuthError("invalid_client", "The assertion was issued in the future ('iat').")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH or not jti.isprintable():
        raise OAuthError("invalid_client", "The assertion needs a 'jti' claim (a string of 1-256 characters).")
    return jti, exp


def check_client_active(status: str) -> None:
    """A suspended agency's token requests fail at once (its issued tokens expire within one lifetime)."""
    if status != "active":
        raise OAuthError("invalid_client", "The client is suspended.")


def is_suspension(before: str, after: str) -> bool:
    """The change that cancels the agency's open referrals (agency.suspended.v1), not a repeat of it."""
    return before == "active" and after == "suspended"


_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")


def grant_scopes(requested: str | None, held: Iterable[str]) -> list[str]:
    """The scopes to put in the token: all held when none are asked for, else exactly those asked for,
    provided the agency holds every one (RFC 6749 3.3; invalid_scope otherwise)."""
    held_set = set(held)
    if requested is None or not requested.strip():
        return sorted(held_set)
    wanted = requested.split()
    if any(not _SCOPE_TOKEN.fullmatch(s) for s in wanted):
        raise OAuthError("invalid_scope", "The scope parameter is malformed.")
    missing = sorted(set(wanted) - held_set)
    if missing:
        # Naming the missing scopes is safe: the caller asked for them.
        raise OAuthError("invalid_scope", f"The client does not hold the scope(s): {' '.join(missing)[:200]}.")
    return sorted(set(wanted))


def client_id_hint(value: object) -> str | None:
    """A claimed client id fit to key rate limits and access records with (never trusted for anything else)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}", value):
        return value
    return None


# --- the signing-key lifecycle ------------------------------------------------------------------------------
#
# The authorization server's token-signing keys go next -> current -> previous -> retired. ``next`` is
# published ahead and signs from ``activates_at``; ``current`` signs; ``previous`` signed tokens that may still
# be alive, so it stays published; ``retired`` is no longer published. A key that stops signing remembers when
# (``retired_at``); its private part is destroyed once that is older than the grace period, its public part
# stays. The service applies these rules to the rows in one transaction, with the database's time as ``now``.

SigningKeyStatus = Literal["next", "current", "previous", "retired"]
#: The statuses of keys that sign, or are about to: they always hold their private part.
SIGNING_STATUSES: tuple[SigningKeyStatus, ...] = ("next", "current")
#: The statuses of keys the JWKS publishes.
PUBLISHED_STATUSES: tuple[SigningKeyStatus, ...] = ("next", "current", "previous")


@dataclass(frozen=True)
class SigningKeyState:
    """What the lifecycle rules need to know of one signing key."""

    kid: str
    status: str
    activates_at: datetime | None = None
    retired_at: datetime | None = None
    has_private_part: bool = True


def with_status(key: SigningKeyState, status: SigningKeyStatus, now: datetime) -> SigningKeyState:
    """``key`` given ``status``: a key that stops signing remembers when it first stopped; one that signs has
    no ``retired_at``."""
    if status in SIGNING_STATUSES:
        return replace(key, status=status, retired_at=None)
    return replace(key, status=status, retired_at=key.retired_at or now)


def _moved(keys: Iterable[SigningKeyState], now: datetime,
           moves: Mapping[str, SigningKeyStatus]) -> list[SigningKeyState]:
    """Every key, those whose status is a key of ``moves`` given the status it maps to."""
    return [with_status(k, moves[k.status], now) if k.status in moves else k for k in keys]


def seeded_keys(kids: Sequence[str], now: datetime) -> list[SigningKeyState]:
    """An empty store seeded from a key file: its first key signs, its second stays published as the previous
    one, any other is retired."""
    statuses: list[SigningKeyStatus] = ["current", "previous"]
    return [with_status(SigningKeyState(kid, "new"), statuses[i] if i < 2 else "retired", now)
            for i, kid in enumerate(kids)]


def promoted(keys: Iterable[SigningKeyState], kid: str, now: datetime) -> list[SigningKeyState]:
    """``kid`` signs from now on: the current key becomes the previous one, the previous one is retired."""
    moved = _moved(keys, now, {"previous": "retired", "current": "previous"})
    return [with_status(k, "current", now) if k.kid == kid else k for k in moved]


def rotated(keys: Iterable[SigningKeyState], new_kid: str, now: datetime, *, activate_in_seconds: float = 0,
            keep_previous: bool = True) -> list[SigningKeyState]:
    """The keys after adding ``new_kid``: published at once, signing from ``activate_in_seconds`` on (at once
    when 0). A ``next`` key not yet signing is replaced (retired). Without ``keep_previous`` (a compromised
    key) the current key is retired at once instead of staying published as the previous one."""
    after = _moved(keys, now, {"next": "retired"} if keep_previous else {"next": "retired", "current": "retired"})
    after.append(SigningKeyState(new_kid, "next", activates_at=now + timedelta(seconds=activate_in_seconds)))
    if activate_in_seconds <= 0:
        after = promoted(after, new_kid, now)
    return after


def previous_retired(keys: Iterable[SigningKeyState], now: datetime) -> list[SigningKeyState]:
    """Once every token the previous key signed has expired: it is no longer published."""
    return _moved(keys, now, {"previous": "retired"})


def due_to_sign(keys: Iterable[SigningKeyState], now: datetime) -> str | None:
    """The ``next`` key whose time to sign has come, if any (it is promoted before signing)."""
    return next((k.kid for k in keys if k.status == "next" and k.activates_at is not None
                 and k.activates_at <= now), None)


def signer(keys: Iterable[SigningKeyState]) -> str | None:
    """The kid that signs: the current key's."""
    return next((k.kid for k in keys if k.status == "current"), None)


def private_part_expired(key: SigningKeyState, now: datetime, grace_seconds: float) -> bool:
    """Has ``key`` not signed for longer than the grace period, so its private part must be destroyed?"""
    return (key.status not in SIGNING_STATUSES and key.has_private_part and key.retired_at is not None
            and key.retired_at <= now - timedelta(seconds=grace_seconds))


def published(keys: Iterable[SigningKeyState]) -> list[SigningKeyState]:
    """The keys the JWKS publishes: the current key first, then ``next``, then ``previous``."""
    return sorted((k for k in keys if k.status in PUBLISHED_STATUSES), key=lambda k: (k.status != "current", k.status))


def key_file_keys(keys: Iterable[SigningKeyState]) -> list[SigningKeyState]:
    """The keys of the key file secret: the newest published key with its private part first (``next``, else
    ``current``), then the one before it."""
    order = {"next": 0, "current": 1, "previous": 2}
    held = [k for k in keys if k.status in PUBLISHED_STATUSES and k.has_private_part]
    return sorted(held, key=lambda k: order[k.status])[:2]


# --- people: staff roles, their scopes, and signing in (issue #20) -----------------------------------------
#
# Staff accounts belong to one agency. A person's access token carries what the person's roles allow, cut to
# what the agency's kind may hold; the sign-in rules (passwords, second factor, lockout, inactivity) are here,
# the argon2id and TOTP mechanics in service/people.py.

#: Scopes only a person's token carries (a role grants them; no agency client ever holds them).
PERSON_ONLY_SCOPES: frozenset[str] = frozenset({"overrides:approve", "staff:admin", "webhooks:admin"})
SCOPES = SCOPES | PERSON_ONLY_SCOPES

Role = Literal["caseworker", "supervisor", "agency_admin", "auditor"]
ROLES: tuple[Role, ...] = ("caseworker", "supervisor", "agency_admin", "auditor")

_CASEWORK = ("registry:read", "cases:read", "cases:write", "consent:write", "referrals:read", "referrals:write")
#: What each role allows (the token profile agreed for issue #20); stats:read reaches only an oversight
#: agency's auditor (SCOPES_OF_KIND).
ROLE_SCOPES: Mapping[str, frozenset[str]] = {
    "caseworker": frozenset(_CASEWORK),
    "supervisor": frozenset({*_CASEWORK, "overrides:approve"}),
    "agency_admin": frozenset({"registry:read", "registry:write", "staff:admin", "webhooks:admin"}),
    "auditor": frozenset({"registry:read", "audit:read", "stats:read"}),
}
#: Roles only an agency of a given kind may give: auditors work for oversight agencies.
ROLES_OF_KIND: Mapping[str, str] = {"auditor": "oversight"}
#: The roles that read case data (or the audit log about it): they sign in with a second factor, always.
SECOND_FACTOR_ROLES: frozenset[str] = frozenset({"caseworker", "supervisor", "auditor"})

AMR_PASSWORD = "pwd"  # noqa: S105 -- RFC 8176 method name
AMR_OTP = "otp"
ACR_MFA = "urn:refnet:acr:mfa"
ACR_PASSWORD = "urn:refnet:acr:pwd"  # noqa: S105 -- an acr value
#: A person's access token lives at most this long (the token profile; shared/auth refuses a longer one),
#: whatever lifetime the operator gives agencies' system tokens.
PERSON_TOKEN_MAX_LIFETIME_SECONDS = 600

#: A login names a person inside the agency's own directory: an opaque identifier, never an e-mail address.
LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256  # argon2 hashes anything; this only bounds the work a request can ask for


def check_roles(kind: str, roles: Iterable[str]) -> str | None:
    """None when an agency of ``kind`` may give a person ``roles``, else why not."""
    chosen = list(roles)
    if not chosen:
        return "a person needs at least one role"
    unknown = sorted(set(chosen) - set(ROLES))
    if unknown:
        return f"unknown role(s): {', '.join(unknown)[:100]}; roles are {', '.join(ROLES)}"
    if len(set(chosen)) != len(chosen):
        return "a role is listed twice"
    if kind == PLATFORM_KIND:
        return "the platform's own clients have no staff"
    for role in chosen:
        only = ROLES_OF_KIND.get(role)
        if only is not None and only != kind:
            return f"the role {role} is only for agencies of kind {only}"
    return None


def person_scopes(kind: str, roles: Iterable[str]) -> list[str]:
    """The scopes a person's access token carries: what the roles allow, that the agency's kind may hold."""
    allowed: set[str] = set()
    for role in roles:
        allowed |= ROLE_SCOPES.get(role, frozenset())
    return holdable_scopes(kind, allowed)


def needs_second_factor(roles: Iterable[str]) -> bool:
    return bool(set(roles) & SECOND_FACTOR_ROLES)


def authentication_context(used_second_factor: bool) -> tuple[list[str], str]:
    """(amr, acr) of a sign-in (RFC 8176 method names)."""
    if used_second_factor:
        return [AMR_PASSWORD, AMR_OTP], ACR_MFA
    return [AMR_PASSWORD], ACR_PASSWORD


def check_login(login: str) -> str | None:
    if not LOGIN.fullmatch(login):
        return "a login is 2-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def check_password(password: str, login: str) -> str | None:
    """None when ``password`` may be set for ``login``, else why not (never repeating the password)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password has at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    folded = password.casefold()
    if login.casefold() in folded or folded in login.casefold():
        return "a password may not contain the login"
    if len(set(password)) < 4:
        return "a password needs more than three different characters"
    return None


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5
    window_seconds: int = 900
    lock_seconds: int = 900


@dataclass(frozen=True)
class FailureState:
    """A person's recent failed sign-in attempts."""

    failures: int = 0
    first_failure_at: datetime | None = None
    locked_until: datetime | None = None


def is_locked(state: FailureState, now: datetime) -> bool:
    return state.locked_until is not None and state.locked_until > now


def after_failure(state: FailureState, now: datetime, policy: LockoutPolicy) -> FailureState:
    """The state after one more failed attempt: counted within the window, locked once it reaches the limit."""
    window_open = (state.first_failure_at is not None
                   and state.first_failure_at > now - timedelta(seconds=policy.window_seconds))
    failures = state.failures + 1 if window_open else 1
    first = state.first_failure_at if window_open else now
    locked_until = state.locked_until
    if failures >= policy.max_failures:
        locked_until = now + timedelta(seconds=policy.lock_seconds)
        failures, first = 0, None  # the lock starts a new count once it ends
    return FailureState(failures, first, locked_until)


def idle_expired(last_seen: datetime, now: datetime, idle_seconds: float) -> bool:
    """Sign-out after inactivity: a sign-in session or a refresh token unused for ``idle_seconds`` is over."""
    return last_seen <= now - timedelta(seconds=idle_seconds)


#: PKCE (RFC 7636): only S256; ``plain`` would hand the verifier to whoever sees the authorization request.
CODE_CHALLENGE_METHODS: tuple[str, ...] = ("S256",)
#: The token endpoint's grants: client_credentials for agencies' systems, the person grants for first-party
#: clients (the metadata documents and the token endpoint's OpenAPI form list these).
PERSON_GRANT_TYPES: tuple[str, ...] = ("authorization_code", "refresh_token")
GRANT_TYPES: tuple[str, ...] = ("client_credentials", *PERSON_GRANT_TYPES)
#: What a client may ask for: openid (a first-party client), and the scopes agencies' clients may be given.
OIDC_SCOPES: tuple[str, ...] = ("openid",)


def scopes_supported() -> list[str]:
    return [*OIDC_SCOPES, *sorted(SCOPES)]


def check_code_challenge(challenge: str | None, method: str | None) -> str | None:
    """None when an authorization request's PKCE parameters are acceptable, else why not."""
    if not challenge:
        return "code_challenge is required (PKCE, S256)"
    if method not in CODE_CHALLENGE_METHODS:
        return "code_challenge_method must be S256"
    return None


def may_manage_staff(scopes: Iterable[str], caller_agency: str, agency_id: str) -> bool:
    """The platform's admin client manages any agency's staff; a person with ``staff:admin`` (an agency admin)
    only their own agency's. Anyone else is told the agency's staff does not exist (404)."""
    held = set(scopes)
    return "admin" in held or ("staff:admin" in held and caller_agency == agency_id)


def redirect_uri_ok(uri: str) -> bool:
    """A first-party client's redirect URI: absolute https, or http on a loopback address (a local console,
    RFC 8252 7.3), no fragment (RFC 6749 3.1.2)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.fragment or not parts.hostname or len(uri) > 500:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))
