"""The access token referral presents to intake's clearance endpoint (scope ``cases:clearance``).

Two sources behind one protocol: a static bearer from settings (``REFNET_REFERRAL_SERVICE_TOKEN``), and the
OAuth 2.0 client credentials grant against the registry with an RFC 7523 client assertion signed by the
referral service's own key (``REFNET_REFERRAL_CREDENTIALS_FILE``: the JSON credentials file the launcher
writes for the ``referral-service`` platform client). Tokens are cached until shortly before they expire.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from shared.client_auth import ASSERTION_TYPE, client_assertion


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

    def __init__(self, credentials: dict[str, Any], scope: str = "cases:clearance", *,
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
