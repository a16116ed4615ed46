"""People's access tokens in a running stack (issue 20's profile), for the scenarios and the isolation and token suites.

Until the registry signs people in, they are minted here with the registry's own signing key from the stack's key
file -- exactly as its token endpoint will issue them: same issuer, key and audience as agencies' system tokens,
``sub`` the person, ``client_id`` the first-party console, ``agency``, ``roles``, the scopes those roles give,
``amr``/``acr``, ten minutes at most.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.e2e.network import Network
from tests.support.issuer import ACR_MFA, CONSOLE_CLIENT, new_person, role_scopes


class Staff:
    """Mints staff members' tokens -- people's tokens for the demo agencies of ``net``, signed by the registry's key."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.issuer = httpx.get(net.url("registry") + "/.well-known/oauth-authorization-server").json()["issuer"]
        private = json.loads((net.home / "keys" / "registry-signing-key.jwks.json").read_text())["keys"][0]
        self.key = ECKey.import_key(private)
        self.kid = private["kid"]

    def claims(self, agency: str, roles: tuple[str, ...] = ("caseworker",), *, person: str | None = None,
               scope: str | None = None, **changes: Any) -> dict[str, Any]:
        """The claims of a person of demo agency ``agency``; ``changes`` override (None removes) a claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": "refnet", "sub": person or new_person(), "client_id": CONSOLE_CLIENT,
            "agency": self.net.agency(agency), "roles": list(roles),
            "scope": role_scopes(roles) if scope is None else scope, "amr": ["pwd", "otp"], "acr": ACR_MFA,
            "auth_time": now, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], key: ECKey | None = None) -> str:
        return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": self.kid}, claims, key or self.key,
                          algorithms=["ES256"])

    def token(self, agency: str, roles: tuple[str, ...] = ("caseworker",), **options: Any) -> str:
        return self.sign(self.claims(agency, roles, **options))

    def headers(self, agency: str, roles: tuple[str, ...] = ("caseworker",), purpose: str = "case_management",
                **options: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(agency, roles, **options)}", "X-Purpose": purpose}
