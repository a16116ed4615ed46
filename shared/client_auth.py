"""The client side of RFC 7523: how a RefNet client proves who it is to the token endpoint.

A client (an agency's case system, the ``refnet`` CLI, the referral service calling intake) signs a short
JWT with its private key -- the key never leaves it -- and sends it as ``client_assertion`` in a client
credentials grant. The server side lives in the registry.

``ClientCredentials`` is the one OAuth client every RefNet caller uses for the client credentials grant:
the services calling each other (referral asking intake for clearance), the CLIs, the demo and the example
case system. Tokens are cached until shortly before they expire.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _key_and_alg(private_pem: str) -> tuple[ECKey | OKPKey | RSAKey, str]:
    key = load_pem_private_key(private_pem.encode(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
        return ECKey.import_key(private_pem), alg
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(private_pem), "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(private_pem), "RS256"
    raise ValueError("the private key is not an EC, Ed25519 or RSA key")


def client_assertion(client_id: str, audience: str, private_pem: str, *, lifetime: int = 60,
                     thumbprint_kid: bool = True, now: float | None = None) -> str:
    """RFC 7523 section 3: iss = sub = client_id, aud = the token endpoint, a short exp, a random jti.

    ``thumbprint_kid`` names the key by its RFC 7638 thumbprint, as the launcher and ``refnet agency add``
    register it; leave it off when the registered JWKS may name the key otherwise (the server then tries
    each of the client's keys).
    """
    key, alg = _key_and_alg(private_pem)
    issued = int(now if now is not None else time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": issued, "exp": issued + lifetime,
              "jti": secrets.token_urlsafe(24)}
    header = {"alg": alg, "typ": "JWT"}
    if thumbprint_kid:
        header["kid"] = key.thumbprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc's notice on the name "EdDSA"
        return jwt.encode(header, claims, key, algorithms=[alg])


class TokenUnavailable(Exception):
    """No token could be had: callers answer 503, as for any outage of a service they depend on."""


class TokenSource(Protocol):
    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


class StaticToken:
    def __init__(self, value: str) -> None:
        self.value = value

    async def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        return None


class ClientCredentials:
    """Client credentials grant with ``private_key_jwt`` (ES256), or HTTP Basic when the file has a secret."""

    def __init__(self, credentials: dict[str, Any], scope: str, *,
                 transport: httpx.AsyncBaseTransport | None = None, refresh_margin_seconds: float = 30.0) -> None:
        self.client_id: str = credentials["client_id"]
        self.token_url: str = credentials["token_url"]
        # The assertion's audience: the issuer's token endpoint when the service reaches the registry by an
        # internal address the issuer does not know itself by (``refnet bootstrap platform`` writes both).
        self.audience: str = credentials.get("audience") or self.token_url
        self.secret: str | None = credentials.get("client_secret")
        self.private_pem: str | None = None if self.secret else credentials["private_key_pem"]
        self.scope = scope
        self.refresh_margin_seconds = refresh_margin_seconds
        self._http = httpx.AsyncClient(transport=transport, timeout=10.0, follow_redirects=False)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> ClientCredentials:
        return cls(json.loads(Path(path).read_text()), **options)

    def assertion(self) -> str:
        assert self.private_pem is not None
        return client_assertion(self.client_id, self.audience, self.private_pem)

    async def token(self) -> str:
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            form = {"grant_type": "client_credentials", "scope": self.scope}
            auth = None
            if self.secret:
                auth = httpx.BasicAuth(self.client_id, self.secret)
            else:
                form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
            try:
                response = await self._http.post(self.token_url, data=form, auth=auth)  # type: ignore[arg-type]
            except httpx.HTTPError as exc:
                raise TokenUnavailable("the token endpoint is unreachable") from exc
            if response.status_code != 200:
                raise TokenUnavailable(f"the token endpoint answered {response.status_code}")
            try:
                body = response.json()
                token = str(body["access_token"])
                lifetime = float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError) as exc:
                raise TokenUnavailable("the token response is not readable") from exc
            self._token = token
            self._expires = time.monotonic() + max(lifetime - self.refresh_margin_seconds, 0.0)
            return token

    def invalidate(self) -> None:
        self._token = None

    async def aclose(self) -> None:
        await self._http.aclose()
