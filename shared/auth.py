"""Access-token validation for every RefNet service acting as an OAuth resource server.

Tokens are RFC 9068 JWT access tokens. They are checked locally against the issuer's JWKS, fetched over
HTTP and cached, so a request never waits on the issuer unless a key is missing. Nothing here knows the
registry: any OAuth/OIDC server with an issuer URL and a JWKS URL will do (ARCHITECTURE.md, "OAuth between
agencies").

Failures follow RFC 6750 section 3: 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` for a bad
token, a bare ``Bearer`` challenge when no bearer token was sent at all, and 403 with
``error="insufficient_scope"`` when the token is good but lacks a scope. Each is a ``Problem``, so the
body is RFC 9457 problem+json. Details name what is wrong, never the token's content.

Use it in a route::

    @router.get("/cases")
    async def list_cases(principal: Annotated[Principal, Depends(require_scopes("cases:read"))]) -> ...:

with ``app.state.token_validator = TokenValidator.from_settings(settings)`` set at startup.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import math
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key
from joserfc.jws import JWSAlgModel, JWSRegistry

from shared.errors import Problem
from shared.revocation import RevocationList
from shared.settings import ServiceSettings

__all__ = [
    "ACTING_USER_HEADER",
    "DEFAULT_ALGORITHMS",
    "Authenticated",
    "Principal",
    "TokenValidator",
    "authenticate",
    "bearer_scheme",
    "get_token_validator",
    "insufficient_scope",
    "invalid_token",
    "issuer_unavailable",
    "missing_token",
    "parse_acting_user",
    "require_scopes",
]

log = structlog.get_logger("refnet.auth")

DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "RS256", "RS384", "PS256", "EdDSA")
ACTING_USER_HEADER = "X-Acting-User"

# RFC 9068 section 2.1 names "at+jwt"; RFC 7515 section 4.1.9 lets a sender use the full media type.
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Only asymmetric algorithms: a resource server holds public keys, so an HMAC "signed" with one is forgery,
# and "none" is no signature at all. The constructor refuses anything outside this set.
_ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
     "EdDSA", "Ed25519", "Ed448"}
)
# Large enough for any sane access token (a few hundred scopes), small enough that a hostile header cannot
# make us base64-decode and parse megabytes.
_MAX_TOKEN_LENGTH = 8192
_MAX_JWKS_BYTES = 256 * 1024
_MAX_JWKS_KEYS = 64
_FAILED_FETCH_RETRY_SECONDS = 5.0
# RFC 6750 section 2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The base64url alphabet without padding (RFC 7515 section 2): what a compact JWS holds besides its two dots.
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Distinct token headers whose checks are remembered: an issuer uses one per signing key.
_MAX_CACHED_HEADERS = 32
# Beyond any date datetime can hold (year 9999), so such a value fails as out of range, not as an overflow.
_MAX_NUMERIC_DATE = 2**53
# The last second of year 9999: any integer below it is a datetime, so the quick claim check cannot overflow.
_MAX_QUICK_DATE = 253_402_300_799
# An acting user is an opaque id or an e-mail-like login inside the calling agency. It ends up in audit
# entries and logs, so no spaces, quotes or control characters.
_ACTING_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:\-]{0,127}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
# Characters allowed inside an RFC 6750 error_description / scope quoted string.
_NOT_QUOTABLE = re.compile(r"[^\x20\x21\x23-\x5B\x5D-\x7E]")


# --- the caller -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an agency's OAuth client, and optionally the person acting inside that agency."""

    client_id: str
    agency_id: str
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    acting_user: str | None = None

    def has_scopes(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes


# --- problems -------------------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    # A quoted-string in the challenge must not carry '"', '\' or non-ASCII (RFC 6750 section 3).
    return '"' + _NOT_QUOTABLE.sub("?", value) + '"'


def invalid_token(detail: str) -> Problem:
    return Problem(
        401,
        "invalid-token",
        detail,
        title="Unauthorized",
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description={_quoted(detail)}'
        },
    )


def missing_token(detail: str = "A bearer access token is required.") -> Problem:
    # RFC 6750 section 3.1: no error code when the request carried no bearer credentials at all.
    return Problem(401, "missing-token", detail, title="Unauthorized", headers={"WWW-Authenticate": "Bearer"})


def insufficient_scope(required: Iterable[str], missing: Iterable[str]) -> Problem:
    required_list = sorted(required)
    missing_list = sorted(missing)
    detail = f"The access token lacks the scope(s): {' '.join(missing_list)}."
    return Problem(
        403,
        "insufficient-scope",
        detail,
        title="Forbidden",
        headers={
            "WWW-Authenticate": (
                f'Bearer error="insufficient_scope", error_description={_quoted(detail)}, '
                f"scope={_quoted(' '.join(required_list))}"
            )
        },
        required_scopes=required_list,
    )


def issuer_unavailable(retry_after: float) -> Problem:
    seconds = max(1, math.ceil(retry_after))
    return Problem(
        503,
        "issuer-unavailable",
        "The token issuer's signing keys cannot be fetched right now; try again later.",
        headers={"Retry-After": str(seconds)},
    )


# --- validation -----------------------------------------------------------------------------------------


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_decode_json = json.JSONDecoder().decode  # json.loads without its per-call dispatch and encoding sniffing


def _b64url(segment: bytes) -> bytes:
    # base64.urlsafe_b64decode does the same in three more Python calls; the caller has already checked that
    # the segment holds base64url characters only.
    return binascii.a2b_base64((segment + b"=" * (-len(segment) % 4)).translate(_URLSAFE_TO_STANDARD))


def _b64url_json(segment: bytes, what: str) -> dict[str, Any]:
    try:
        value = _decode_json(_b64url(segment).decode("utf-8"))  # RFC 8259 section 8.1: JSON is UTF-8
    except (binascii.Error, ValueError) as exc:  # UnicodeError and JSONDecodeError are ValueErrors
        raise invalid_token(f"The token {what} is not base64url-encoded JSON.") from exc
    if not isinstance(value, dict):
        raise invalid_token(f"The token {what} is not a JSON object.")
    return value


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NumericDate is a finite JSON number; json.loads happily yields NaN/Infinity and integers too large for a
    # float, and bool is an int (hence type(), not isinstance: JSON yields exactly int, float or bool).
    kind = type(value)
    if kind is float and math.isfinite(value):
        return value
    if kind is int and -_MAX_NUMERIC_DATE < value < _MAX_NUMERIC_DATE:
        return float(value)
    raise invalid_token(f"The '{name}' claim is not a NumericDate.")


def _required_string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        raise invalid_token(f"The token has no '{name}' claim.")
    if not isinstance(value, str) or not value:
        raise invalid_token(f"The '{name}' claim is not a non-empty string.")
    return value


Verifier = Callable[[bytes, bytes], bool]

_ECDSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}


def _verifier(model: JWSAlgModel, key: Key) -> Verifier:
    """``(signing input, signature) -> verifies`` for ``key`` under ``model`` (joserfc has checked they fit).

    joserfc's ECDSA check builds a hash and an ECDSA object and converts the signature through hex on every
    call, a sixth of an ES256 verify; for ES* the same steps run here with those objects made once per key.
    Other algorithms are joserfc's own check.
    """
    hash_type = _ECDSA_HASHES.get(model.name)
    if hash_type is None or not isinstance(key, ECKey):
        return lambda signing_input, signature: model.verify(signing_input, signature, key)
    public = key.get_op_key("verify")  # refuses a key whose "key_ops" exclude verify
    algorithm = ec.ECDSA(hash_type())
    size = (key.curve_key_size + 7) // 8

    def verify(signing_input: bytes, signature: bytes) -> bool:
        # RFC 7518 section 3.4: R and S, each big-endian and exactly the curve's size.
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        try:
            public.verify(der, signing_input, algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


class TokenValidator:
    """Validates RFC 9068 JWT access tokens from one issuer for one audience.

    The JWKS is fetched on first use and cached. A token whose ``kid`` is not in the cache triggers a
    refetch (the issuer rotated keys), but fetches are rate-limited to one per ``min_refetch_seconds``, and
    concurrent requests share a single fetch, so tokens with made-up ``kid`` values cannot turn us into a
    load generator against the issuer. The cache is also refreshed after ``jwks_max_age_seconds`` so that a
    key the issuer withdrew stops being trusted; if that refresh fails, the cached keys stay in use.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        leeway_seconds: int = 30,
        min_refetch_seconds: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        jwks_max_age_seconds: float = 3600.0,
        fetch_timeout_seconds: float = 5.0,
        revocations: RevocationList | None = None,
        verified_cache_size: int = 1024,
    ) -> None:
        if not issuer or not audience or not jwks_url:
            raise ValueError("issuer, audience and jwks_url are all required")
        algs = tuple(algorithms)
        # joserfc falls back to its "recommended" list (which includes HS256) when given no algorithms, so
        # an empty list must never reach it; and a symmetric or "none" algorithm must never be allowed.
        if not algs:
            raise ValueError("at least one algorithm must be allowed")
        unsafe = [a for a in algs if a not in _ASYMMETRIC_ALGORITHMS]
        if unsafe:
            raise ValueError(f"algorithms not allowed for access tokens: {unsafe}")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.algorithms: frozenset[str] = frozenset(algs)
        self.leeway_seconds = leeway_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.jwks_max_age_seconds = jwks_max_age_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        #: Tokens the issuer revoked and agencies it suspended (shared.revocation), if it announces them.
        self.revocations = revocations

        # Non-strict header checking: other issuers add header parameters joserfc does not know (x5t#S256,
        # custom ones); "crit" is still enforced by joserfc. Header size is raised for issuers that put
        # certificate chains in the header.
        self._registry = JWSRegistry(algorithms=list(algs), strict_check_header=False)
        self._registry.max_header_length = 4096
        # joserfc's model of each allowed algorithm, looked up once (the lookup also warns that "EdDSA" is
        # deprecated by RFC 9864; it is still what issuers send). An algorithm joserfc lacks is not accepted.
        self._models: dict[str, JWSAlgModel] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            for name in algs:
                if name in JWSRegistry.algorithms:
                    self._models[name] = self._registry.get_alg(name)
        #: (kid, alg) of each checked token header, by its base64url segment; the keys fit for each (kid, alg).
        self._headers: dict[bytes, tuple[str | None, str]] = {}
        self._candidates: dict[tuple[str | None, str], list[Verifier]] = {}

        self._http = http_client
        self._owns_http = http_client is None
        self._lock = asyncio.Lock()
        self._keys: list[Key] | None = None
        self._generation = 0  # bumped on every successful fetch; lets waiters see that someone else fetched
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # monotonic time of the last fetch attempt
        self._last_attempt_failed = False
        #: Number of JWKS fetch attempts made, successful or not (for metrics and tests).
        self.fetch_count = 0
        # Tokens whose signature and fixed claims were verified, by their exact text, with the time claims that
        # are checked again on every use: a client sends the same token on every request of its lifetime, and
        # a signature that verified once verifies forever. Emptied whenever the keys are fetched again, and
        # bypassed once they are due for a refresh, so a withdrawn key's tokens are checked afresh.
        self.verified_cache_size = verified_cache_size
        self._verified: OrderedDict[str, tuple[Principal, float, float | None, float | None]] = OrderedDict()

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, http_client: httpx.AsyncClient | None = None,
        revocations: RevocationList | None = None,
    ) -> TokenValidator:
        return cls(
            settings.issuer,
            settings.audience,
            settings.effective_jwks_url,
            leeway_seconds=settings.token_leeway_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
            http_client=http_client,
            revocations=revocations,
        )

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> TokenValidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- public ------------------------------------------------------------------------------------------

    async def validate(self, token: str) -> Principal:
        """Return the caller a valid access token names, or raise a 401/503 ``Problem``."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, not_before, issued = cached
            now = time.time()
            fresh_keys = self._keys_fresh()
            leeway = self.leeway_seconds
            in_time = expires > now - leeway and (not_before is None or not_before <= now + leeway) and (
                issued is None or issued <= now + leeway)
            if fresh_keys and in_time:
                self._check_revocation(principal, issued)
                return principal
            del self._verified[token]  # the full check below refreshes the keys or says what is wrong

        signed, payload_segment, signature_segment, kid_alg = self._parse_unverified(token)
        candidates = self._candidates.get(kid_alg) if self._keys_fresh() else None
        if candidates is None:  # the keys are missing or due for a refresh, or this kid is new
            candidates = await self._candidate_keys(*kid_alg)
        claims = self._verify(signed, payload_segment, signature_segment, candidates)
        principal, exp, nbf, iat = self._check_claims(claims)
        self._check_revocation(principal, iat)
        if self.verified_cache_size > 0:
            if len(self._verified) >= self.verified_cache_size:
                self._verified.popitem(last=False)  # the oldest
            self._verified[token] = (principal, exp, nbf, iat)
        return principal

    def _keys_fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at <= self.jwks_max_age_seconds

    def _check_revocation(self, principal: Principal, issued_at: float | None) -> None:
        if self.revocations is not None:
            refusal = self.revocations.refusal(jti=principal.token_id, agency_id=principal.agency_id,
                                               issued_at=issued_at)
            if refusal is not None:
                raise invalid_token(refusal)

    # -- steps -------------------------------------------------------------------------------------------
    #
    # The token is split and each segment decoded exactly once, as bytes; joserfc checks the header rules
    # ("crit", registered parameter types) and the fit of key and algorithm, and does the signature check for
    # all but ECDSA (see _verifier), but not a second parse (``jwt.decode`` would split the token and decode
    # header and payload again). The header is checked once per distinct header segment: an issuer's tokens
    # all share one per signing key, and the checks depend on its bytes alone. This path runs once for
    # every token a service sees, so it is kept to as few Python steps as it takes.

    def _parse_unverified(self, token: str) -> tuple[bytes, bytes, bytes, tuple[str | None, str]]:
        """(signed part, payload segment, signature segment, (kid, alg)) once the shape and header are good.

        The algorithm is checked here, against our own allow-list, before key lookup and verification:
        the classic confusion attack (HS256 keyed with the issuer's public key) must never reach a
        verifier that might treat a public key as an HMAC secret.
        """
        if len(token) > _MAX_TOKEN_LENGTH:
            raise invalid_token("The token is too long.")
        data = token.encode("ascii", "replace")  # "?" for non-ASCII, refused just below
        signed, _, signature_segment = data.rpartition(b".")
        header_segment, _, payload_segment = signed.partition(b".")
        # Nothing but base64url characters and exactly two dots (a JWE has four); header and payload non-empty.
        if data.translate(None, _B64URL_ALPHABET) != b".." or not header_segment or not payload_segment:
            raise invalid_token("The token is not a JWS compact serialization (header.payload.signature).")
        kid_alg = self._headers.get(header_segment)
        if kid_alg is None:
            kid_alg = self._check_header(header_segment)
            if len(self._headers) >= _MAX_CACHED_HEADERS:
                del self._headers[next(iter(self._headers))]  # the oldest: made-up headers cannot pin the cache
            self._headers[header_segment] = kid_alg
        return signed, payload_segment, signature_segment, kid_alg

    def _check_header(self, segment: bytes) -> tuple[str | None, str]:
        """(kid, alg) of a header that passes every check."""
        if len(segment) > self._registry.max_header_length:
            raise invalid_token("The token header is too long.")
        header = _b64url_json(segment, "header")

        alg = header.get("alg")
        if not isinstance(alg, str):
            raise invalid_token("The token header has no 'alg'.")
        if alg not in self._models:
            raise invalid_token(f"The token algorithm '{_safe_label(alg)}' is not accepted.")

        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            # RFC 9068 section 4: explicit typing keeps ID tokens and other JWTs from passing for access
            # tokens.
            raise invalid_token("The token 'typ' header is not 'at+jwt'.")

        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise invalid_token("The token 'kid' header is not a non-empty string.")
        if "b64" in header:
            # RFC 7797 unencoded payloads are not for JWTs (RFC 7797 section 7); the payload is base64url.
            raise invalid_token("The token header has 'b64'; access tokens have a base64url payload.")
        try:
            self._registry.check_header(header)  # joserfc: "crit" understood, registered parameters well-typed
        except JoseError as exc:
            raise invalid_token(f"The token is malformed ({type(exc).__name__}).") from exc
        return kid, alg

    async def _candidate_keys(self, kid: str | None, alg: str) -> list[Verifier]:
        now = time.monotonic()
        if self._keys is None:
            await self._refresh(self._generation, must_succeed=True)
        elif (
            self._fetched_at is not None
            and now - self._fetched_at > self.jwks_max_age_seconds
            and not self._lock.locked()
        ):
            # Stale but usable: refresh quietly; if another request is already refreshing, do not queue.
            await self._refresh(self._generation, must_succeed=False)

        candidates = self._matching_keys(kid, alg)
        if candidates:
            return candidates

        # Unknown kid: the issuer may have rotated. Refetch, rate-limited and shared between requests.
        await self._refresh(self._generation, must_succeed=True)
        candidates = self._matching_keys(kid, alg)
        if not candidates:
            raise invalid_token(
                "No signing key of the issuer matches the token's 'kid' and 'alg'."
                if kid is not None
                else "The token has no 'kid' and no signing key of the issuer fits its 'alg'."
            )
        return candidates

    def _matching_keys(self, kid: str | None, alg: str) -> list[Verifier]:
        # Remembered per key set (emptied on every fetch); only non-empty answers, so made-up kids add nothing.
        found = self._candidates.get((kid, alg))
        if found is not None:
            return found
        keys = self._keys or []
        if kid is not None:
            keys = [k for k in keys if k.kid == kid]
        model = self._models[alg]
        usable: list[Verifier] = []
        for key in keys:
            try:
                # Key type, curve, "use" and the key's own "alg" must all fit the token's algorithm.
                model.check_key(key)
                usable.append(_verifier(model, key))
            except JoseError:
                continue
        if usable:
            self._candidates[(kid, alg)] = usable
        return usable

    def _verify(self, signed: bytes, payload_segment: bytes, signature_segment: bytes,
                candidates: list[Verifier]) -> dict[str, Any]:
        """The claims, once the signature over ``signed`` verifies with one of ``candidates`` (the keys that fit
        the token's algorithm)."""
        try:
            signature = _b64url(signature_segment)
        except binascii.Error:
            raise invalid_token("The token signature does not verify.") from None
        for verify in candidates:
            try:
                if verify(signed, signature):
                    break
            except (JoseError, ValueError) as exc:
                raise invalid_token(f"The token is malformed ({type(exc).__name__}).") from exc
        else:
            raise invalid_token("The token signature does not verify.")
        # Decoded only now that the issuer is known to have signed it.
        return _b64url_json(payload_segment, "payload")

    def _check_claims(self, claims: dict[str, Any]) -> tuple[Principal, float, float | None, float | None]:
        """(the caller, exp, nbf, iat) of verified claims, or a 401 naming the first claim that is wrong.

        The claims a well-behaved issuer sends (integer times, one audience string, a scope string) are
        accepted in a few comparisons; anything else, good or bad, takes the full check below, which says
        what is wrong. The quick path accepts nothing the full check refuses.
        """
        get = claims.get
        exp, nbf, iat = get("exp"), get("nbf"), get("iat")
        sub, agency, jti, scope = get("sub"), get("agency"), get("jti"), get("scope")
        now = time.time()
        leeway = self.leeway_seconds
        if (
            get("iss") == self.issuer and get("aud") == self.audience
            and type(exp) is int and type(nbf) is int and type(iat) is int
            and now - leeway < exp < _MAX_QUICK_DATE and 0 <= nbf <= now + leeway and 0 <= iat <= now + leeway
            and type(sub) is str and sub and type(agency) is str and agency and type(jti) is str and jti
            and type(scope) is str
        ):
            # Positional: a frozen dataclass's keyword construction is slower, and this runs for every new token.
            principal = Principal(sub, agency, frozenset(scope.split()), jti, datetime.fromtimestamp(exp, UTC))
            return principal, float(exp), float(nbf), float(iat)
        return self._check_claims_fully(claims)

    def _check_claims_fully(self, claims: dict[str, Any]) -> tuple[Principal, float, float | None, float | None]:
        now = time.time()
        leeway = self.leeway_seconds

        iss = claims.get("iss")
        if iss is None:
            raise invalid_token("The token has no 'iss' claim.")
        if iss != self.issuer:
            raise invalid_token("The token was not issued by the expected issuer.")

        aud = claims.get("aud")
        if aud is None:
            raise invalid_token("The token has no 'aud' claim.")
        if aud != self.audience:  # the common case, a single string, needs no list
            audiences = [aud] if isinstance(aud, str) else aud
            if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
                raise invalid_token("The 'aud' claim is not a string or a list of strings.")
            if self.audience not in audiences:
                raise invalid_token("The token is not meant for this audience.")

        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise invalid_token("The token has no 'exp' claim.")
        if exp <= now - leeway:
            raise invalid_token("The token has expired.")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise invalid_token("The token is not valid yet ('nbf' is in the future).")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise invalid_token("The token was issued in the future ('iat').")

        sub = _required_string(claims, "sub")
        agency = _required_string(claims, "agency")
        # RFC 9068 section 2.2 makes "jti" required; the audit trail names tokens by it.
        jti = _required_string(claims, "jti")

        scope = claims.get("scope")
        if scope is None:
            scopes: frozenset[str] = frozenset()
        elif isinstance(scope, str):
            scopes = frozenset(scope.split())
        elif isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            # Not RFC 9068, but some issuers send a JSON array; its meaning is unambiguous.
            scopes = frozenset(scope)
        else:
            raise invalid_token("The 'scope' claim is not a space-separated string.")

        try:
            expires_at = datetime.fromtimestamp(exp, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise invalid_token("The 'exp' claim is out of range.") from exc
        principal = Principal(client_id=sub, agency_id=agency, scopes=scopes, token_id=jti, expires_at=expires_at)
        return principal, exp, nbf, iat

    # -- JWKS --------------------------------------------------------------------------------------------

    async def _refresh(self, seen_generation: int, *, must_succeed: bool) -> None:
        """Fetch the JWKS unless someone else just did, or the rate limit forbids it.

        ``must_succeed``: a key is needed now, so if the keys cannot be had because the issuer is failing,
        raise 503 rather than pretend the token is bad.
        """
        async with self._lock:
            if self._generation != seen_generation:
                return  # another request fetched while we waited for the lock
            now = time.monotonic()
            if self._attempted_at is not None:
                # After a failure, retry sooner: the outage may be a blip, and without keys we serve 503s.
                window = self.min_refetch_seconds
                if self._last_attempt_failed:
                    window = min(window, _FAILED_FETCH_RETRY_SECONDS)
                wait = window - (now - self._attempted_at)
                if wait > 0:
                    if self._last_attempt_failed and must_succeed:
                        raise issuer_unavailable(wait)
                    return
            self._attempted_at = now
            self.fetch_count += 1
            try:
                keys = await self._fetch()
            except _JWKSUnavailable as exc:
                self._last_attempt_failed = True
                log.warning("jwks_fetch_failed", jwks_url=self.jwks_url, reason=str(exc),
                            have_cached_keys=self._keys is not None)
                if must_succeed:
                    retry = min(self.min_refetch_seconds, _FAILED_FETCH_RETRY_SECONDS)
                    raise issuer_unavailable(retry) from exc
                return
            self._last_attempt_failed = False
            self._keys = keys
            self._candidates = {}
            self._verified.clear()
            self._fetched_at = time.monotonic()
            self._generation += 1
            log.info("jwks_fetched", jwks_url=self.jwks_url, keys=len(keys))

    async def _fetch(self) -> list[Key]:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        try:
            response = await self._http.get(
                self.jwks_url, timeout=self.fetch_timeout_seconds, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise _JWKSUnavailable(f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            raise _JWKSUnavailable(f"HTTP {response.status_code}")
        if len(response.content) > _MAX_JWKS_BYTES:
            raise _JWKSUnavailable("JWKS document too large")
        try:
            document = response.json()
        except ValueError as exc:
            raise _JWKSUnavailable("JWKS is not JSON") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise _JWKSUnavailable("JWKS has no 'keys' array")

        keys: list[Key] = []
        for entry in entries[:_MAX_JWKS_KEYS]:
            if not isinstance(entry, dict):
                continue
            # Only signature keys of asymmetric types; a symmetric key in a public JWKS is a mistake at best.
            if entry.get("use") not in (None, "sig") or entry.get("kty") not in ("EC", "RSA", "OKP"):
                continue
            try:
                keys.append(JWKRegistry.import_key(entry))
            except Exception as exc:
                # RFC 7517 section 5: ignore keys we cannot use rather than fail the whole set.
                log.warning("jwks_key_skipped", kid=_safe_label(str(entry.get("kid"))),
                            error=type(exc).__name__)
                continue
        if not keys:
            raise _JWKSUnavailable("JWKS holds no usable signing keys")
        return keys


class _JWKSUnavailable(Exception):
    """The JWKS could not be fetched or used."""


def _safe_label(value: str) -> str:
    # For naming an attacker-supplied label (alg, kid) in a detail or log without echoing arbitrary bytes.
    return _NOT_QUOTABLE.sub("?", value)[:32]


# --- FastAPI integration --------------------------------------------------------------------------------

#: Declares the bearer scheme in OpenAPI. auto_error=False: we produce our own RFC 6750 / 9457 answers.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="RFC 9068 JWT access token from the RefNet issuer (client credentials grant).",
)


def get_token_validator(request: Request) -> TokenValidator:
    validator = getattr(request.app.state, "token_validator", None)
    if not isinstance(validator, TokenValidator):
        # A wiring mistake in the service, not the caller's fault: let it surface as a 500.
        raise RuntimeError("app.state.token_validator is not set to a TokenValidator")
    return validator


def parse_acting_user(value: str | None) -> str | None:
    """The ``X-Acting-User`` header: optional, but if present it must be a plain, short identifier."""
    if value is None:
        return None
    if not _ACTING_USER.fullmatch(value):
        raise Problem(
            400,
            "invalid-acting-user",
            f"The {ACTING_USER_HEADER} header must be 1-128 characters of letters, digits and . _ @ + : -,"
            " starting with a letter or digit.",
        )
    return value


def _bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise missing_token()
    if len(values) > 1:
        raise invalid_token("More than one Authorization header was sent.")
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 section 3.1: an unsupported scheme counts as "no authentication information".
        raise missing_token("A bearer access token is required; the Authorization scheme is not Bearer.")
    credentials = credentials.strip()
    if not credentials:
        raise invalid_token("The Authorization header carries no token.")
    if not _B64TOKEN.fullmatch(credentials):
        raise invalid_token("The bearer token has characters not allowed in a token.")
    return credentials


async def authenticate(request: Request) -> Principal:
    """Validate the request's bearer token and ``X-Acting-User`` header; no scope check."""
    token = _bearer_token(request)
    try:
        principal = await get_token_validator(request).validate(token)
    except Problem as problem:
        # Refusals are worth a log line (audit turns them into token.refused); the detail holds no token.
        log.info("token_refused", status=problem.status, reason=problem.detail, path=request.url.path)
        raise
    acting_user = parse_acting_user(request.headers.get(ACTING_USER_HEADER))
    if acting_user is not None:
        principal = replace(principal, acting_user=acting_user)
    request.state.principal = principal
    return principal


ScopeDependency = Callable[[Request, HTTPAuthorizationCredentials | None, str | None],
                           Coroutine[Any, Any, Principal]]

_ACTING_USER_PARAMETER: Any = Header(
    default=None, alias=ACTING_USER_HEADER,
    description="The person acting inside the calling agency (recorded with every access).",
    # Documented, not enforced by FastAPI: a bad value is our 400 invalid-acting-user, not a generic 422.
    json_schema_extra={"pattern": f"^{_ACTING_USER.pattern}$", "maxLength": 128},
)


def require_scopes(*scopes: str) -> ScopeDependency:
    """A FastAPI dependency: the authenticated ``Principal``, holding every one of ``scopes``."""
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"not a valid scope token: {scope!r}")
    required = frozenset(scopes)

    async def dependency(
        request: Request,
        # Unused: we parse the header ourselves to tell "missing" from "malformed". It is here so the
        # route declares the bearer security scheme in OpenAPI, with the scopes it needs (OpenAPI 3.1 lets
        # any scheme list them): integrators and the scope tests read them from the document.
        # (A default, not Annotated: with postponed annotations the closure's scopes would be out of reach.)
        credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme, scopes=sorted(required)),
        # Unused too (authenticate reads and checks it): declared so the document names the header.
        acting_user: str | None = _ACTING_USER_PARAMETER,
    ) -> Principal:
        principal = await authenticate(request)
        missing = required - principal.scopes
        if missing:
            log.info("scope_refused", client_id=principal.client_id, missing=sorted(missing),
                     path=request.url.path)
            raise insufficient_scope(required, missing)
        return principal

    dependency.__name__ = f"require_scopes({' '.join(sorted(required))})"
    dependency.__qualname__ = dependency.__name__
    return dependency


#: Any valid token, whatever its scopes.
Authenticated = Annotated[Principal, Depends(require_scopes())]
