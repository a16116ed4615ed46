"""Access-token validation for every RefNet service acting as an OAuth resource server.

Tokens are RFC 9068 JWT access tokens, checked locally against the issuer's JWKS (``shared.auth.keys``), so a
request never waits on the issuer unless a key is missing. Nothing here knows the registry: any OAuth/OIDC
server with an issuer URL and a JWKS URL will do. joserfc parses the compact serialization, enforces the
header rules ("crit", registered parameter types), the fit of key and algorithm, and verifies the
signature; what is ours is the access-token profile (RFC 9068: ``typ``, the required claims, one audience)
and the verified-token cache, which is where the speed comes from: a client sends the same token on every
request of its lifetime, and a signature that verified once verifies for ever.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import Key
from joserfc.jws import CompactSignature, JWSAlgModel, JWSRegistry

from shared.auth.keys import IssuerKeys
from shared.auth.principal import ACTING_USER, ROLES, Principal
from shared.auth.problems import invalid_token, safe_label
from shared.revocation import RevocationList
from shared.settings import ServiceSettings

DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "RS256", "RS384", "PS256", "EdDSA")

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
# The base64url alphabet without padding (RFC 7515 section 2): what a compact JWS holds besides its two dots.
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# A person's access token lives at most ten minutes (issue 20's profile); a little leeway for rounding.
PERSON_TOKEN_MAX_LIFETIME = 600 + 5
# Beyond any date datetime can hold (year 9999), so such a value fails as out of range, not as an overflow.
_MAX_NUMERIC_DATE = 2**53


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NumericDate is a finite JSON number; json.loads happily yields NaN/Infinity and integers too large for a
    # float, and bool is an int (hence type(), not isinstance: JSON yields exactly int, float or bool).
    kind = type(value)
    if kind is float and math.isfinite(value):
        return float(value)
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


def _string_list(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise invalid_token(f"The '{name}' claim is not a list of strings.")
    return tuple(value)


def _person(claims: dict[str, Any], sub: str, client_id: str, agency: str, scopes: frozenset[str], jti: str,
            expires_at: datetime, exp: float, iat: float | None) -> Principal:
    """The principal of a person's token (issue 20's profile): the person is its subject and the acting user."""
    # The subject becomes the acting user of every audit entry: the issuer's opaque person id, never a name.
    if not ACTING_USER.fullmatch(sub):
        raise invalid_token("The 'sub' claim of a person's token is not a person id.")
    # A person's token is short-lived by profile, so a stolen one is worth little: one that claims longer is
    # not from the issuer we agreed with.
    if iat is None:
        raise invalid_token("A person's token has no 'iat' claim.")
    if exp - iat > PERSON_TOKEN_MAX_LIFETIME:
        raise invalid_token("A person's token lives longer than the profile allows.")
    roles = _string_list(claims, "roles")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise invalid_token("The 'roles' claim names a role RefNet does not know.")
    acr = claims.get("acr")
    if acr is not None and (not isinstance(acr, str) or not acr):
        raise invalid_token("The 'acr' claim is not a non-empty string.")
    return Principal(client_id=client_id, agency_id=agency, scopes=scopes, token_id=jti, expires_at=expires_at,
                     acting_user=sub, person=sub, roles=frozenset(roles), amr=_string_list(claims, "amr"), acr=acr)


class TokenValidator:
    """Validates RFC 9068 JWT access tokens from one issuer for one audience."""

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
        #: Tokens the issuer revoked and agencies it suspended (shared.revocation), if it announces them.
        self.revocations = revocations
        self.keys = IssuerKeys(jwks_url, min_refetch_seconds=min_refetch_seconds,
                               max_age_seconds=jwks_max_age_seconds, fetch_timeout_seconds=fetch_timeout_seconds,
                               http_client=http_client)

        # Non-strict header checking: other issuers add header parameters joserfc does not know (x5t#S256,
        # custom ones); "crit" is still enforced by joserfc. Header size is raised for issuers that put
        # certificate chains in the header.
        self._registry = JWSRegistry(algorithms=list(algs), strict_check_header=False)
        self._registry.max_header_length = 4096
        # joserfc's model of each allowed algorithm (the lookup also warns that "EdDSA" is deprecated by RFC
        # 9864; it is still what issuers send). An algorithm joserfc lacks is not accepted.
        self._models: dict[str, JWSAlgModel] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            for name in algs:
                if name in JWSRegistry.algorithms:
                    self._models[name] = self._registry.get_alg(name)

        # Tokens whose signature and fixed claims were verified, by their exact text, with the time claims that
        # are checked again on every use. Emptied whenever the keys are fetched again, and bypassed once they
        # are due for a refresh, so a withdrawn key's tokens are checked afresh.
        self.verified_cache_size = verified_cache_size
        self._verified: OrderedDict[str, tuple[Principal, float, float | None, float | None]] = OrderedDict()
        self._verified_generation = 0

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

    @property
    def min_refetch_seconds(self) -> float:
        return self.keys.min_refetch_seconds

    @property
    def fetch_count(self) -> int:
        """JWKS fetch attempts made, successful or not (for metrics and tests)."""
        return self.keys.fetch_count

    async def aclose(self) -> None:
        await self.keys.aclose()

    async def __aenter__(self) -> TokenValidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def validate(self, token: str) -> Principal:
        """Return the caller a valid access token names, or raise a 401/503 ``Problem``."""
        self._forget_if_keys_changed()
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, not_before, issued = cached
            now = time.time()
            leeway = self.leeway_seconds
            in_time = expires > now - leeway and (not_before is None or not_before <= now + leeway) and (
                issued is None or issued <= now + leeway)
            if self.keys.fresh() and in_time:
                self._check_revocation(principal, issued)
                return principal
            del self._verified[token]  # the full check below refreshes the keys or says what is wrong

        signed, kid, alg = self._extract(token)
        candidates = self.keys.known(kid, alg)
        if candidates is None:  # the keys are missing or due for a refresh, or this kid is new
            candidates = await self.keys.fitting(kid, alg, self._models[alg])
        claims = self._verify(signed, candidates)
        principal, exp, nbf, iat = self._check_claims(claims)
        self._check_revocation(principal, iat)
        if self.verified_cache_size > 0:
            self._forget_if_keys_changed()  # a fetch may have happened while this token was checked
            if len(self._verified) >= self.verified_cache_size:
                self._verified.popitem(last=False)  # the oldest
            self._verified[token] = (principal, exp, nbf, iat)
        return principal

    def _forget_if_keys_changed(self) -> None:
        """The keys were fetched again: what was verified under the old set is verified afresh."""
        if self._verified_generation != self.keys.generation:
            self._verified.clear()
            self._verified_generation = self.keys.generation

    def _check_revocation(self, principal: Principal, issued_at: float | None) -> None:
        if self.revocations is not None:
            refusal = self.revocations.refusal(jti=principal.token_id, agency_id=principal.agency_id,
                                               issued_at=issued_at)
            if refusal is not None:
                raise invalid_token(refusal)

    def _extract(self, token: str) -> tuple[CompactSignature, str | None, str]:
        """The parsed token and its (kid, alg), once its shape and header pass every check.

        The algorithm is checked here, against our own allow-list, before key lookup and verification: the
        classic confusion attack (HS256 keyed with the issuer's public key) must never reach a verifier.
        """
        if len(token) > _MAX_TOKEN_LENGTH:
            raise invalid_token("The token is too long.")
        data = token.encode("ascii", "replace")  # "?" for non-ASCII, refused just below
        # Nothing but base64url characters and exactly two dots (a JWE has four); header and payload non-empty.
        header_segment, _, rest = data.partition(b".")
        if data.translate(None, _B64URL_ALPHABET) != b".." or not header_segment or rest.startswith(b"."):
            raise invalid_token("The token is not a JWS compact serialization (header.payload.signature).")
        if len(header_segment) > self._registry.max_header_length:
            raise invalid_token("The token header is too long.")
        try:
            signed = jws.extract_compact(data, registry=self._registry)
        except (JoseError, ValueError) as exc:
            raise invalid_token("The token header or payload is not base64url-encoded JSON.") from exc
        header = signed.headers()

        alg = header.get("alg")
        if not isinstance(alg, str):
            raise invalid_token("The token header has no 'alg'.")
        if alg not in self._models:
            raise invalid_token(f"The token algorithm '{safe_label(alg)}' is not accepted.")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            # RFC 9068 section 4: explicit typing keeps ID tokens and other JWTs from passing for access tokens.
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
        return signed, kid, alg

    def _verify(self, signed: CompactSignature, candidates: list[Key]) -> dict[str, Any]:
        """The claims, once joserfc verifies the signature with one of ``candidates`` (the keys that fit the
        token's algorithm)."""
        for key in candidates:
            try:
                if jws.validate_compact(signed, key, registry=self._registry):
                    break
            except BadSignatureError:
                continue
            except (JoseError, ValueError) as exc:
                raise invalid_token(f"The token is malformed ({type(exc).__name__}).") from exc
        else:
            raise invalid_token("The token signature does not verify.")
        # Decoded only now that the issuer is known to have signed it.
        try:
            claims = json.loads(signed.payload)  # RFC 8259 section 8.1: JSON is UTF-8
        except ValueError as exc:  # UnicodeError and JSONDecodeError are ValueErrors
            raise invalid_token("The token payload is not base64url-encoded JSON.") from exc
        if not isinstance(claims, dict):
            raise invalid_token("The token payload is not a JSON object.")
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> tuple[Principal, float, float | None, float | None]:
        """(the caller, exp, nbf, iat) of verified claims, or a 401 naming the first claim that is wrong."""
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
        # RFC 9068 section 2.2: "client_id" names the client the token was issued to; for client credentials
        # "sub" is that client too. A token whose subject is not its client is a person's.
        client_id = sub if claims.get("client_id") is None else _required_string(claims, "client_id")
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
        if client_id == sub:
            principal = Principal(client_id=client_id, agency_id=agency, scopes=scopes, token_id=jti,
                                  expires_at=expires_at)
        else:
            principal = _person(claims, sub, client_id, agency, scopes, jti, expires_at, exp, iat)
        return principal, exp, nbf, iat
