"""Who the client is: the agency's credentials, where RefNet's services are, and the OAuth 2.0 client that gets
tokens with the agency's private key (client credentials grant, ``private_key_jwt`` client authentication,
RFC 7523) -- authlib's httpx integration, configured the way RefNet's registry accepts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc.jwk import ECKey, OKPKey, RSAKey

from refnet_client.errors import RefNetError

#: How long a client assertion is valid. authlib signs for an hour unless told otherwise; RefNet's registry
#: refuses an assertion whose ``exp`` is more than 300 s ahead (as SMART Backend Services ask).
ASSERTION_LIFETIME_SECONDS = 60
#: A token is asked for again this many seconds before it expires (authlib's ``leeway``).
TOKEN_LEEWAY_SECONDS = 30

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class ShortPrivateKeyJWT(PrivateKeyJWT):
    """authlib's ``private_key_jwt`` with a short-lived assertion (``lifetime`` seconds), a fresh one per token
    request. ``PrivateKeyJWT.sign`` passes no lifetime (authlib then signs for 3600 s), and a fixed ``exp``
    given as ``claims`` would go stale -- and authlib would store its first ``jti`` in that same dict and
    send it again, a replay the registry refuses. So ``sign`` asks authlib's own signer for ``expires_in``.
    """

    def __init__(self, token_endpoint: str | None = None, *, alg: str, lifetime: int = ASSERTION_LIFETIME_SECONDS,
                 headers: dict[str, Any] | None = None) -> None:
        super().__init__(token_endpoint, headers=headers, alg=alg)
        self.lifetime = lifetime

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                        header=dict(self.headers or {}), alg=self.alg, expires_in=self.lifetime))


def signing_key(private_key_pem: str) -> tuple[ECKey | OKPKey | RSAKey, str]:
    """The agency's private key as a joserfc key object, and the JWS algorithm it signs with."""
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return ECKey.import_key(private_key_pem), _EC_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(private_key_pem), "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(private_key_pem), "RS256"
    raise ValueError("the private key is not an EC (P-256/384/521), Ed25519 or RSA key")


@dataclass(frozen=True)
class Credentials:
    """A credentials file as ``refnet`` writes them (``.refnet/credentials/<name>.json``, mode 0600):
    ``client_id``, ``token_url`` and ``private_key_pem`` (or ``client_secret``); ``agency_id``, ``name`` and
    ``scopes`` to know whom it speaks for; ``audience`` when the token endpoint is reached by an address the
    issuer does not know itself by."""

    client_id: str
    token_url: str
    private_key_pem: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    agency_id: str | None = None
    name: str | None = None
    scopes: tuple[str, ...] = ()
    audience: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Credentials:
        missing = [k for k in ("client_id", "token_url") if not data.get(k)]
        if not data.get("private_key_pem") and not data.get("client_secret"):
            missing.append("private_key_pem")
        if missing:
            raise ValueError(f"the credentials lack {', '.join(missing)}")
        return cls(client_id=str(data["client_id"]), token_url=str(data["token_url"]),
                   private_key_pem=data.get("private_key_pem"), client_secret=data.get("client_secret"),
                   agency_id=data.get("agency_id"), name=data.get("name"), scopes=tuple(data.get("scopes") or ()),
                   audience=data.get("audience"))

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        return cls.from_dict(json.loads(Path(path).read_text()))


LOCAL_PORTS = {"registry": 8001, "intake": 8002, "referral": 8003, "audit": 8004}


@dataclass(frozen=True)
class Endpoints:
    """The base URLs of RefNet's four services."""

    registry: str = "http://127.0.0.1:8001"
    intake: str = "http://127.0.0.1:8002"
    referral: str = "http://127.0.0.1:8003"
    audit: str = "http://127.0.0.1:8004"

    def __post_init__(self) -> None:
        for name in LOCAL_PORTS:
            object.__setattr__(self, name, getattr(self, name).rstrip("/"))

    @classmethod
    def from_state(cls, path: str | Path) -> Endpoints:
        """From a local stack's ``.refnet/state.json`` (a service -> its URL) or ``refnet status --json`` output
        (a service -> ``{"url": ..., "state": ...}``); a service it does not name keeps its local default."""
        services = json.loads(Path(path).read_text()).get("services") or {}
        urls: dict[str, str] = {}
        for name in LOCAL_PORTS:
            entry = services.get(name)
            url = entry.get("url") if isinstance(entry, dict) else entry
            if isinstance(url, str) and url:
                urls[name] = url
        return cls(**urls)

    def url(self, service: str) -> str:
        return str(getattr(self, service))


def oauth_options(credentials: Credentials, scope: str | None) -> dict[str, Any]:
    """The arguments of authlib's ``OAuth2Client`` / ``AsyncOAuth2Client`` for this agency."""
    options: dict[str, Any] = {"client_id": credentials.client_id, "scope": scope or None,
                               "token_endpoint": credentials.token_url, "grant_type": "client_credentials",
                               "leeway": TOKEN_LEEWAY_SECONDS}
    if credentials.private_key_pem:
        key, alg = signing_key(credentials.private_key_pem)
        options |= {"client_secret": key,
                    # aud: the token endpoint, or the name the issuer knows itself by (credentials' audience).
                    "token_endpoint_auth_method": ShortPrivateKeyJWT(credentials.audience or credentials.token_url,
                                                                     alg=alg)}
    else:
        options |= {"client_secret": credentials.client_secret,
                    "token_endpoint_auth_method": "client_secret_basic"}
    return options


def refuse_unless_issued(response: httpx.Response) -> httpx.Response:
    """authlib's ``access_token_response`` hook: a refused token request raises ``RefNetError`` with its status
    and OAuth 2.0 error (authlib's own error would drop the status, or take a problem for a token)."""
    if response.status_code != 200:
        raise RefNetError.from_response(response)
    return response
