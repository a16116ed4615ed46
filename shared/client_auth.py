"""The client side of RFC 7523: how a RefNet client proves who it is to the token endpoint.

A client (an agency's case system, the ``refnet`` CLI, the referral service calling intake) signs a short
JWT with its private key -- the key never leaves it -- and sends it as ``client_assertion`` in a client
credentials grant. The server side lives in the registry.
"""

from __future__ import annotations

import secrets
import time
import warnings

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
