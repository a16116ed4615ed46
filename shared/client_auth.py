"""The client side of RFC 7523: how a RefNet client proves who it is to the token endpoint.

A client (an agency's case system, the ``refnet`` CLI, the referral service calling intake) signs a short
JWT with its private key -- the key never leaves it -- and sends it as ``client_assertion`` in a client
credentials grant. The server side lives in the registry.

``ClientCredentials`` is the OAuth client RefNet's own processes use for the client credentials grant: the
services calling each other (referral asking intake for clearance) and the CLIs. Integrators, the demo and
the example case system use ``refnet_client`` instead (authlib underneath), which depends on nothing of
RefNet's. Tokens are cached until shortly before they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def request_token(http: httpx.AsyncClient, credentials: dict[str, Any], scope: str, *,
                        assertion_lifetime: int = 60, thumbprint_kid: bool = True) -> tuple[str, float]:
    """One client credentials grant: (access token, its lifetime in seconds), or ``TokenUnavailable`` saying
    why in words fit for a terminal or a log (the endpoint's status and ``error_description``, never a secret).

    ``credentials`` is a credentials file's JSON: ``client_id``, ``token_url``, and ``private_key_pem``
    (``private_key_jwt``, RFC 7523) or ``client_secret`` (HTTP Basic); ``audience`` when the client reaches the
    token endpoint by an internal address the issuer does not know itself by (``refnet bootstrap platform``).
    """
    client_id, token_url = credentials["client_id"], credentials["token_url"]
    form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})  # none: all it may have
    auth = None
    if credentials.get("client_secret"):
        auth = httpx.BasicAuth(client_id, credentials["client_secret"])
    else:
        try:
            assertion = client_assertion(client_id, credentials.get("audience") or token_url,
                                         credentials["private_key_pem"], lifetime=assertion_lifetime,
                                         thumbprint_kid=thumbprint_kid)
        except ValueError as exc:
            raise TokenUnavailable(f"the credentials' {exc.args[0].removeprefix('the ')}") from exc
        form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    try:
        response = await http.post(token_url, data=form, auth=auth)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise TokenUnavailable("the token endpoint is unreachable") from exc
    if response.status_code != 200:
        detail = ""
        if response.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(response.json().get("error_description", ""))[:200]
        raise TokenUnavailable(f"the token endpoint refused ({response.status_code}) {detail}".strip())
    try:
        body = response.json()
        token = body["access_token"]
        lifetime = float(body.get("expires_in", 300))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TokenUnavailable("the token endpoint answered without an access_token") from exc
    if not isinstance(token, str):
        raise TokenUnavailable("the token endpoint answered without an access_token")
    return token, lifetime


class ClientCredentials:
    """A service's own client: tokens from ``request_token``, cached until shortly before they expire."""

    def __init__(self, credentials: dict[str, Any], scope: str, *,
                 transport: httpx.AsyncBaseTransport | None = None, refresh_margin_seconds: float = 30.0) -> None:
        self.credentials = dict(credentials)
        self.client_id: str = credentials["client_id"]
        self.token_url: str = credentials["token_url"]
        self.scope = scope
        self.refresh_margin_seconds = refresh_margin_seconds
        self._http = httpx.AsyncClient(transport=transport, timeout=10.0, follow_redirects=False)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> ClientCredentials:
        return cls(json.loads(Path(path).read_text()), **options)

    async def token(self) -> str:
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            token, lifetime = await request_token(self._http, self.credentials, self.scope)
            self._token = token
            self._expires = time.monotonic() + max(lifetime - self.refresh_margin_seconds, 0.0)
            return token

    def invalidate(self) -> None:
        self._token = None

    async def aclose(self) -> None:
        await self._http.aclose()
