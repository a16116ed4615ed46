"""registry: Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 authorization server.

``create_app`` wires it: ``provide`` opens the signing keys (no KEK, no start), builds the use cases into one
typed ``Deps`` and closes its clients on shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.registry import api, consumers, federation_api, oidc, staff_api
from services.registry.deps import Deps
from services.registry.domain import OAuthError
from services.registry.keyvault import KeyUnavailable, SigningKeyVault, Undecryptable
from services.registry.oauth import read_signing_key_file
from services.registry.service import Agencies, Authorization, Directory, SigningKeys
from services.registry.service.federation import Federation
from services.registry.service.people import Staff
from services.registry.service.sign_in import SignIn, token_grant
from services.registry.settings import RegistrySettings
from shared.app import Runtime, build_app
from shared.errors import Problem, problem_response
from shared.outbound import Resolver

log = structlog.get_logger("refnet.registry")




def create_app(settings: RegistrySettings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    """``resolver`` replaces the DNS lookups of agencies' jwks_uri hosts (tests)."""

    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def provide(runtime: Runtime) -> AsyncIterator[Deps]:
        # No KEK, no start: the signing keys are never stored in clear (KeyUnavailable names the setting).
        vault = SigningKeyVault(settings.kek_ring)
        log.info("kek_loaded", kek_id=vault.current.key_id)
        file_keys = []
        if settings.signing_key_file:
            content = await asyncio.to_thread(Path(settings.signing_key_file).read_text)
            file_keys = read_signing_key_file(content)
        signing_keys = SigningKeys(runtime.sessions, vault, settings.signing_key_grace_seconds)
        # Without a key file the database keeps the keys (one is generated on first start).
        current_kid = await signing_keys.start(file_keys)
        if file_keys and file_keys[0].kid != current_kid:
            # The database decides (it saw every rotation); the file only seeds an empty database.
            log.warning("signing_key_file_ignored", file_kid=file_keys[0].kid, current_kid=current_kid)
        outbound = settings.outbound_policy()
        if resolver is not None:
            outbound = dataclasses.replace(outbound, resolver=resolver)
        authorization = Authorization(runtime.sessions, settings, vault, outbound)
        sign_in = SignIn(runtime.sessions, settings, vault)
        authorization.person_grants = functools.partial(token_grant, sign_in)
        federation = Federation(runtime.sessions, settings, vault, outbound)
        try:
            yield Deps(settings=settings, agencies=Agencies(runtime.sessions, settings.source, outbound),
                       authorization=authorization, signing_keys=signing_keys,
                       directory=Directory(runtime.sessions, settings.source),
                       staff=Staff(runtime.sessions, settings, vault), sign_in=sign_in, federation=federation)
        finally:
            await authorization.aclose()
            await federation.aclose()

    app = build_app(
        settings=settings,
        title="RefNet registry",
        description="Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 "
        "authorization server.",
        routers=[api.router, oidc.router, staff_api.router, federation_api.router],
        wiring=consumers.wiring,
        provide=provide,
    )

    async def oauth_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OAuthError)
        return api.oauth_error_response(exc, "authorization" in request.headers)

    async def signing_key_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("signing_key_unavailable", error=type(exc).__name__)
        return problem_response(Problem(503, "signing-key-unavailable",
                                        "The signing key cannot be opened with the configured key-encryption "
                                        "key."), request)

    app.add_exception_handler(OAuthError, oauth_error)
    app.add_exception_handler(KeyUnavailable, signing_key_unavailable)
    app.add_exception_handler(Undecryptable, signing_key_unavailable)
    return app
