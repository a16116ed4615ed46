"""Signing people in at an OpenID Connect provider: authorization code + PKCE (S256), ID token checked against
the nonce, refresh tokens spent once (the provider rotates them), RP-initiated logout.

authlib's Starlette OAuth client does the protocol; its cookie-held state is not used: the console keeps the
state, nonce and verifier in its own server-side session (``service.sessions``), so nothing of the sign-in
lives in the browser but an opaque session id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import structlog
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from joserfc.jws import extract_compact

log = structlog.get_logger("refnet.console")


class SignInFailed(Exception):
    """The provider's answer could not be used (an error, a bad ID token, an unreachable provider)."""


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    id_token: str | None
    expires_at: float  # epoch seconds

    @classmethod
    def of(cls, answer: dict[str, Any], previous: Tokens | None = None) -> Tokens:
        expires_at = answer.get("expires_at")
        if not isinstance(expires_at, int | float):
            expires_at = time.time() + float(answer.get("expires_in") or 300)
        return cls(
            access_token=str(answer["access_token"]),
            # A provider that does not rotate keeps the refresh token it gave before.
            refresh_token=answer.get("refresh_token") or (previous.refresh_token if previous else None),
            id_token=answer.get("id_token") or (previous.id_token if previous else None),
            expires_at=float(expires_at),
        )


@dataclass(frozen=True)
class Person:
    """Who signed in: ids only (the provider's ``sub`` and agency), and the roles the token carries."""

    sub: str
    agency: str
    roles: tuple[str, ...]
    login: str


class Provider:
    def __init__(self, issuer: str, client_id: str, client_secret: str, scopes: str, timeout: float) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth_method = "client_secret_basic" if client_secret else "none"
        oauth = OAuth()
        app = oauth.register(
            name="refnet",
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_id=client_id,
            client_secret=client_secret or None,
            client_kwargs={"scope": scopes, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": self.auth_method, "timeout": timeout},
        )
        assert isinstance(app, StarletteOAuth2App)
        self.app = app
        self.timeout = timeout

    async def metadata(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await self.app.load_server_metadata()
        except Exception as exc:
            raise SignInFailed(f"the provider's discovery document could not be read ({type(exc).__name__})") from exc
        return found

    async def authorization(self, redirect_uri: str) -> dict[str, str]:
        """The URL to send the browser to, with the state, nonce and PKCE verifier to keep until it is back."""
        await self.metadata()
        # prompt=login: the console runs on shared computers; a sign-in the provider still remembers (someone
        # who left by the quick exit) must not sign the next person in as them.
        found: dict[str, str] = await self.app.create_authorization_url(redirect_uri, prompt="login")
        return found

    async def exchange(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> tuple[Tokens, Person]:
        try:
            answer = await self.app.fetch_access_token(redirect_uri=redirect_uri, code=code,
                                                       code_verifier=code_verifier)
            claims = await self.app.parse_id_token(answer, nonce=nonce)
        except (OAuthError, ValueError, KeyError) as exc:
            raise SignInFailed(f"the provider's answer was refused ({type(exc).__name__})") from exc
        except Exception as exc:
            raise SignInFailed(f"the provider could not be reached ({type(exc).__name__})") from exc
        if claims is None:
            raise SignInFailed("the provider sent no ID token")
        tokens = Tokens.of(answer)
        return tokens, self.person_of(dict(claims), tokens)

    def person_of(self, claims: dict[str, Any], tokens: Tokens) -> Person:
        """The person from the ID token; roles and agency from the access token's claims when the ID token has
        none (the APIs decide by the access token; the console only chooses pages)."""
        access: dict[str, Any] = {}
        try:  # the payload only: the APIs verify the access token themselves, on every call
            payload = json.loads(extract_compact(tokens.access_token.encode()).payload)
            access = payload if isinstance(payload, dict) else {}
        except Exception:
            access = {}
        roles = claims.get("roles") or access.get("roles") or []
        agency = claims.get("agency") or access.get("agency") or access.get("client_id") or ""
        login = claims.get("preferred_username") or access.get("preferred_username") or ""
        return Person(sub=str(claims["sub"]), agency=str(agency),
                      roles=tuple(str(r) for r in roles if isinstance(r, str)), login=str(login))

    async def refresh(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            raise SignInFailed("no refresh token")
        metadata = await self.metadata()
        client = AsyncOAuth2Client(self.client_id, self.client_secret or None,
                                   token_endpoint_auth_method=self.auth_method, timeout=self.timeout)
        try:
            async with client:
                answer = await client.refresh_token(metadata["token_endpoint"], refresh_token=tokens.refresh_token)
        except Exception as exc:
            raise SignInFailed(f"the refresh was refused ({type(exc).__name__})") from exc
        return Tokens.of(dict(answer), previous=tokens)

    async def revoke(self, tokens: Tokens) -> None:
        """Revoke the refresh token at sign-out (RFC 7009), if the provider offers it; failures are logged."""
        try:
            metadata = await self.metadata()
            endpoint = metadata.get("revocation_endpoint")
            if not endpoint or not tokens.refresh_token:
                return
            client = AsyncOAuth2Client(self.client_id, self.client_secret or None,
                                       token_endpoint_auth_method=self.auth_method, timeout=self.timeout)
            async with client:
                await client.revoke_token(endpoint, token=tokens.refresh_token, token_type_hint="refresh_token")  # noqa: S106 -- a hint's name
        except Exception as exc:
            log.info("console_revoke_failed", error=type(exc).__name__)

    async def logout_url(self, tokens: Tokens | None, post_logout_redirect_uri: str) -> str | None:
        """The provider's end-session URL (RP-initiated logout), or None if it has none."""
        try:
            metadata = await self.metadata()
        except SignInFailed:
            return None
        if not metadata.get("end_session_endpoint"):
            return None
        found = await self.app.create_logout_url(
            post_logout_redirect_uri=post_logout_redirect_uri,
            id_token_hint=tokens.id_token if tokens else None, client_id=self.client_id)
        return str(found["url"])

