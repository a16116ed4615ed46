"""A registry on a fresh database, served in-process, with helpers to register agencies and get tokens.

The app's own resource-server validator fetches the registry's JWKS from the app itself (ASGI transport), so
the tokens the registry issues are checked by the foundation's ``TokenValidator`` exactly as other services
check them. The broker address is unreachable on purpose: events stay in the outbox, where tests read them.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import Key
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.app import create_app
from services.registry.service import Credentials, add_agency
from services.registry.settings import RegistrySettings
from shared.auth import TokenValidator
from shared.db import unit_of_work
from shared.kek import KeyEncryptionKey, write_key_file
from shared.migrations import upgrade
from shared.outbound import Resolver
from tests.support.issuer import generate_signing_key

ISSUER = "http://registry.test"
TOKEN_URL = ISSUER + "/oauth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALL_SCOPES = ["registry:read", "registry:write", "cases:read", "cases:write", "referrals:read", "admin"]


@dataclass
class Client:
    agency_id: str
    client_id: str
    key: Key | None
    alg: str = "ES256"
    scopes: list[str] = field(default_factory=list)

    def assertion(self, *, key: Key | None = None, alg: str | None = None, **claims: Any) -> str:
        """A client assertion; a claim given as None is left out."""
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL,
                                "iat": now, "exp": now + 120, "jti": secrets.token_hex(12)}
        for name, value in claims.items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        signer = key or self.key
        assert signer is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode({"alg": alg or self.alg, "kid": signer.kid}, body, signer,
                              algorithms=[alg or self.alg])

    def form(self, scope: str | None = None, **claims: Any) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(**claims)}
        if scope is not None:
            form["scope"] = scope
        return form


@dataclass
class Registry:
    http: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    settings: RegistrySettings
    validator: TokenValidator

    async def agency(self, scopes: list[str] | None = None, *, alg: str = "ES256", name: str = "Test agency",
                     secret_hash: str | None = None, kind: str = "ngo") -> Client:
        """An agency added as the bootstrap adds it (``kind="platform"``: one of the platform's own clients)."""
        key = None if secret_hash else generate_signing_key(alg)
        credentials = Credentials(secret_hash=secret_hash) if secret_hash else Credentials(
            jwks={"keys": [dict(key.as_dict(private=False))]} if key else None)
        async with unit_of_work(self.sessions) as session:
            agency = await add_agency(session, self.settings.source, name=name, kind=kind, country="IT",
                                      scopes=scopes if scopes is not None else ALL_SCOPES,
                                      credentials=credentials)
        return Client(agency.id, agency.client_id, key, alg, sorted(agency.scopes))

    async def token(self, client: Client, scope: str | None = None) -> str:
        response = await self.http.post("/oauth/token", data=client.form(scope))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def headers(self, client: Client, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(client, scope)}"}

    async def outbox(self, type_suffix: str, subject: str | None = None) -> list[dict[str, Any]]:
        async with unit_of_work(self.sessions) as session:
            rows = (await session.execute(text(
                "SELECT topic, aggregateid, type, subject, payload FROM outbox WHERE type LIKE :t "
                "AND (CAST(:s AS TEXT) IS NULL OR subject = :s) ORDER BY seq"),
                {"t": "%" + type_suffix, "s": subject})).mappings().all()
        return [dict(r) for r in rows]


def new_kek_file() -> Path:
    """A fresh key-encryption key in a private file (under the session's TMPDIR)."""
    path = Path(tempfile.mkdtemp(prefix="registry-kek-")) / "kek.b64"
    write_key_file(path, KeyEncryptionKey.generate())
    return path


def make_settings(database_url: str, **overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {"database_url": database_url, "kafka_bootstrap": "127.0.0.1:9", "issuer": ISSUER,
                              "log_json": False, "relay_poll_seconds": 5.0, "token_burst": 1000,
                              "token_requests_per_minute": 60000,
                              # Agencies' key sets in tests are on this machine over plain http (LocalIssuer).
                              "outbound_allow_http": True, "outbound_allow_private": True}
    if "kek_file" not in overrides:
        values["kek_file"] = str(new_kek_file())
    values.update(overrides)
    return RegistrySettings(**values)


async def serve(settings: RegistrySettings, resolver: Resolver | None = None) -> AsyncIterator[Registry]:
    await asyncio.to_thread(upgrade, "registry", settings.database_url)
    app = create_app(settings, resolver=resolver)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        own = httpx.AsyncClient(transport=transport, base_url=ISSUER)
        validator = TokenValidator(settings.issuer, settings.audience, settings.effective_jwks_url,
                                   http_client=own, min_refetch_seconds=0)
        await app.state.token_validator.aclose()
        app.state.token_validator = validator
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield Registry(http, app.state.runtime.sessions, settings, validator)
        await own.aclose()


@pytest.fixture(scope="session")
async def registry(new_database: Callable[[str], str]) -> AsyncIterator[Registry]:
    async for running in serve(make_settings(new_database("registry"))):
        yield running
