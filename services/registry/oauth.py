"""JOSE and credential mechanics of the authorization server (joserfc), with no database and no HTTP routes.

JWS parsing and verification are joserfc's (``jws.extract_compact``, ``jws.validate_compact``). authlib's
``JWTBearerClientAssertion`` decodes assertions with joserfc's default algorithm list and a synchronous client
lookup; the registry needs an explicit allow-list (ES256, ES384, RS256, RS384, EdDSA), asynchronous key and
jti storage, and its own error mapping, so the RFC 7523 steps are called here, each one mapped to an RFC 6749
error (``domain.OAuthError``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ExceededSizeError, JoseError, MissingAlgorithmError, UnsupportedAlgorithmError
from joserfc.jwk import ECKey, JWKRegistry, Key
from joserfc.jws import CompactSignature, JWSAlgModel, JWSRegistry

from services.registry.domain import ASSERTION_ALGORITHMS, OAuthError
from shared.outbound import OutboundPolicy, call, guarded_client

ACCESS_TOKEN_ALG = "ES256"  # noqa: S105 -- an algorithm name, not a secret
_MAX_ASSERTION_LENGTH = 8192
_MAX_JWKS_BYTES = 64 * 1024
# joserfc's model of each accepted assertion algorithm (JWSRegistry.algorithms, looked up once).
_ASSERTION_MODELS: dict[str, JWSAlgModel] = {alg: JWSRegistry.algorithms[alg] for alg in ASSERTION_ALGORITHMS}


class _AssertionRegistry(JWSRegistry):
    """joserfc's JWS rules (sizes, "crit", well-typed header parameters) with the assertion algorithms only,
    looked up without the per-call warning joserfc's own lookup gives for EdDSA, which is accepted on purpose."""

    def get_alg(self, name: str) -> JWSAlgModel:
        model = _ASSERTION_MODELS.get(name)
        if model is None:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return model


_ASSERTION_REGISTRY = _AssertionRegistry(algorithms=list(ASSERTION_ALGORITHMS), strict_check_header=False)
_ACCESS_TOKEN_REGISTRY = JWSRegistry(algorithms=[ACCESS_TOKEN_ALG])


# --- the authorization server's signing keys ---------------------------------------------------------------


@dataclass(frozen=True)
class NewSigningKey:
    kid: str
    private_pem: str
    public_jwk: dict[str, Any]


def generate_signing_key() -> NewSigningKey:
    return _signing_key(ECKey.generate_key("P-256", private=True))


def _signing_key(key: Key, kid: str | None = None) -> NewSigningKey:
    if not isinstance(key, ECKey) or not key.is_private or key.curve_name != "P-256":
        raise ValueError("a signing key must be a private P-256 (ES256) key")
    kid = kid or key.thumbprint()  # RFC 7638
    public = dict(key.as_dict(private=False))
    public.update({"kid": kid, "use": "sig", "alg": ACCESS_TOKEN_ALG})
    return NewSigningKey(kid=kid, private_pem=key.as_pem(private=True).decode(), public_jwk=public)


def signing_key_from_pem(pem: str) -> NewSigningKey:
    return _signing_key(ECKey.import_key(pem))


def read_signing_key_file(content: str) -> list[NewSigningKey]:
    """The keys of ``REFNET_REGISTRY_SIGNING_KEY_FILE``: a private JWK set (deploy/secrets/README.md; the
    first key signs, the next is the previous one, still published) or a single PEM key."""
    content = content.strip()
    if not content.startswith("{"):
        return [signing_key_from_pem(content)]
    try:
        document = json.loads(content)
    except ValueError:
        raise ValueError("the signing key file is neither a JWK set nor a PEM key") from None
    entries = document.get("keys", [document]) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("the signing key file holds no keys")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("the signing key file holds something that is not a JWK")
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) and entry.get("kid") else None
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError):
            raise ValueError("a key in the signing key file cannot be read") from None
        keys.append(_signing_key(key, kid))
    return keys


def signing_key_file_content(keys: list[tuple[str, str]]) -> str:
    """A private JWK set (``[(kid, private_pem), ...]``, the signing key first) for the key file secret."""
    entries = []
    for kid, pem in keys:
        jwk = dict(ECKey.import_key(pem).as_dict(private=True))
        jwk.update({"kid": kid, "use": "sig", "alg": ACCESS_TOKEN_ALG})
        entries.append(jwk)
    return json.dumps({"keys": entries}, indent=2) + "\n"


def sign_access_token(key: ECKey, kid: str, claims: dict[str, Any]) -> str:
    """``key``: opened once per key (keyvault.SigningKeyVault), not imported again per token."""
    header = {"alg": ACCESS_TOKEN_ALG, "typ": "at+jwt", "kid": kid}
    return jwt.encode(header, claims, key, algorithms=[ACCESS_TOKEN_ALG])


def _parse(token: str, registry: JWSRegistry) -> tuple[CompactSignature, dict[str, Any]]:
    """joserfc's reading of a JWS compact serialization (sizes, strict base64url, a JSON header with "alg") and
    its payload as a JSON object. Raises joserfc's errors, or ValueError (UnicodeError is one)."""
    obj = jws.extract_compact(token.encode("ascii"), registry=registry)
    claims = json.loads(obj.payload)
    if not isinstance(obj.headers(), dict) or not isinstance(claims, dict):
        raise ValueError("not a JSON object")
    return obj, claims


def verify_access_token(token: str, public_jwks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The claims of a token this server signed with one of ``public_jwks``, else None (no time checks)."""
    if len(token) > _MAX_ASSERTION_LENGTH:
        return None
    try:
        header = _parse(token, _ACCESS_TOKEN_REGISTRY)[0].headers()
    except (JoseError, ValueError):
        return None
    if header.get("alg") != ACCESS_TOKEN_ALG:
        return None
    for jwk in public_jwks:
        if jwk.get("kid") != header.get("kid"):
            continue
        try:
            return dict(jwt.decode(token, JWKRegistry.import_key(jwk), algorithms=[ACCESS_TOKEN_ALG]).claims)
        except (JoseError, ValueError):
            return None
    return None


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims before any check ({} when it is not one): only to decide what to check next."""
    if len(token) > _MAX_ASSERTION_LENGTH:
        return {}
    try:
        return _parse(token, _ACCESS_TOKEN_REGISTRY)[1]
    except (JoseError, ValueError):
        return {}


# --- client assertions (RFC 7523) --------------------------------------------------------------------------

_NOT_A_JWS = "The client assertion is not a signed JWT (JWS compact form)."
_MALFORMED = "The client assertion is malformed."


@functools.lru_cache(maxsize=64)
def _parse_assertion(assertion: str) -> tuple[CompactSignature, dict[str, Any]]:
    """Remembered for the last few assertions: the rate limiter, the authentication and a refusal's record each
    read the same one. The objects are shared, so callers must not change them."""
    if len(assertion) > _MAX_ASSERTION_LENGTH:
        raise OAuthError("invalid_client", "The client assertion is too long.")
    try:
        obj, claims = _parse(assertion, _ASSERTION_REGISTRY)
    except MissingAlgorithmError:
        raise OAuthError("invalid_client", _algorithm_refused()) from None
    except ExceededSizeError:
        raise OAuthError("invalid_client", _MALFORMED) from None
    except (JoseError, ValueError):
        raise OAuthError("invalid_client", _NOT_A_JWS) from None
    if obj.headers().get("alg") not in ASSERTION_ALGORITHMS:
        raise OAuthError("invalid_client", _algorithm_refused())
    return obj, claims


def _algorithm_refused() -> str:
    return f"The client assertion's algorithm is not accepted; use one of {', '.join(ASSERTION_ALGORITHMS)}."


def read_unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of an assertion before any key is touched; the algorithm is checked here, so "none"
    and HMAC (e.g. HS256 keyed with the client's public key) never reach a verifier. The dicts are shared
    (remembered for the last few assertions), so callers must not change them."""
    obj, claims = _parse_assertion(assertion)
    return obj.headers(), claims


def verify_assertion(assertion: str, header: dict[str, Any], claims: dict[str, Any],
                     keys: list[Key]) -> dict[str, Any]:
    """The claims (``read_unverified``'s, now verified), or invalid_client.

    joserfc checks the header rules ("crit"), the fit of each key to the algorithm (allow-listed there) and the
    signature over the assertion's own first two segments, which are the bytes those claims were decoded from.
    """
    obj, _ = _parse_assertion(assertion)
    if "b64" in header:
        # RFC 7797 unencoded payloads are not for JWTs (RFC 7797 section 7): the payload must be base64url.
        raise OAuthError("invalid_client", _MALFORMED)
    try:
        _ASSERTION_REGISTRY.check_header(header)
    except JoseError:
        raise OAuthError("invalid_client", _MALFORMED) from None
    model = _ASSERTION_MODELS[header["alg"]]
    kid = header.get("kid")
    for key in keys:
        if kid is not None and key.kid != kid:
            continue
        try:
            model.check_key(key)
        except JoseError:
            continue  # a key of another type, curve, use or algorithm: not this assertion's
        try:
            if jws.validate_compact(obj, key, registry=_ASSERTION_REGISTRY):
                return dict(claims)
        except (JoseError, ValueError):
            raise OAuthError("invalid_client", _MALFORMED) from None
    raise OAuthError("invalid_client", "The client assertion's signature does not verify with the client's keys.")


def client_keys(jwks: dict[str, Any]) -> list[Key]:
    """``import_public_jwks`` of a registered client's JWKS, remembered by its content: the keys are parsed
    once, not on every token request, and a client whose keys change gets the new ones at once."""
    return _imported_jwks(json.dumps(jwks, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=1024)
def _imported_jwks(canonical: str) -> list[Key]:
    return import_public_jwks(json.loads(canonical))


def import_public_jwks(jwks: dict[str, Any]) -> list[Key]:
    """Public asymmetric signature keys of a JWKS; ValueError when it holds none or holds private parts."""
    entries = jwks.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ValueError("a JWKS needs a non-empty 'keys' array")
    keys: list[Key] = []
    for entry in entries[:16]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA", "OKP"):
            raise ValueError("only EC, RSA and OKP public keys are accepted")
        if any(p in entry for p in ("d", "p", "q", "dp", "dq", "qi")):
            raise ValueError("the JWKS holds private key material; register public keys only")
        if entry.get("use") not in (None, "sig"):
            raise ValueError("keys must be signature keys")
        try:
            keys.append(JWKRegistry.import_key(entry))
        except Exception:
            raise ValueError("a key of the JWKS cannot be read") from None
    return keys


class RemoteJWKS:
    """Clients registered with a ``jwks_uri``: fetched through the guarded client (shared.outbound: public
    addresses only, a total deadline, at most ``_MAX_JWKS_BYTES`` read), cached for ``max_age`` seconds."""

    def __init__(self, policy: OutboundPolicy, max_age: float = 300.0, min_refetch: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = dataclasses.replace(policy, max_response_bytes=min(policy.max_response_bytes, _MAX_JWKS_BYTES))
        self.max_age = max_age
        self.min_refetch = min_refetch
        self.transport = transport
        self._cache: dict[str, tuple[float, list[Key]]] = {}
        self._http: httpx.AsyncClient | None = None

    async def keys(self, uri: str, *, refresh: bool = False) -> list[Key]:
        """The client's keys; ``refresh`` refetches (the client may have rotated), but at most once per
        ``min_refetch`` seconds, so failing assertions cannot make us hammer the client's server."""
        cached = self._cache.get(uri)
        if cached:
            age = time.monotonic() - cached[0]
            if age < (self.min_refetch if refresh else self.max_age):
                return cached[1]
        if self._http is None:
            self._http = guarded_client(self.policy, self.transport)
        try:
            response = await call(self._http, self.policy, "GET", uri, headers={"accept": "application/json"})
            if (response.status_code != 200 or not response.complete
                    or response.headers.get("content-encoding", "identity") != "identity"):
                raise ValueError("unusable JWKS response")
            document = json.loads(response.content)
            if not isinstance(document, dict):
                raise ValueError("a JWKS is a JSON object")
            keys = import_public_jwks(document)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError):
            if cached:
                return cached[1]
            raise OAuthError("invalid_client", "The client's JWKS cannot be fetched.") from None
        self._cache[uri] = (time.monotonic(), keys)
        return keys

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


# --- client secrets ----------------------------------------------------------------------------------------


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Secrets are 256-bit random values the registry generated (never chosen by people), so a salted
    # SHA-256 resists guessing as well as a slow hash would, and keeps the token endpoint cheap.
    salt = secrets.token_hex(16)
    digest = hashlib.sha256((salt + secret).encode()).hexdigest()
    return f"sha256${salt}${digest}"


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored or stored.count("$") != 2:
        # Spend the same work as a real check, so timing does not tell registered secrets apart.
        hashlib.sha256(secret.encode()).hexdigest()
        return False
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(hashlib.sha256((salt + secret).encode()).hexdigest(), digest)


# --- rate limiting -----------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key (claimed client id + address), in process memory, bounded in size."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens, last refill, already refused since the last allowed request)
        self._buckets: OrderedDict[str, tuple[float, float, bool]] = OrderedDict()

    def check(self, key: str) -> tuple[bool, bool]:
        """(allowed, first refusal of a run): a run of refusals is announced once, not per request."""
        now = time.monotonic()
        tokens, last, refused = self._buckets.pop(key, (self.burst, now, False))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now, not allowed)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed, not allowed and not refused

    def allow(self, key: str) -> bool:
        return self.check(key)[0]

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate) if self.rate > 0 else 60)
