"""registry: Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 authorization server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.registry import api, consumers
from services.registry.domain import OAuthError
from services.registry.keyvault import KeyUnavailable, SigningKeyVault, Undecryptable
from services.registry.oauth import read_signing_key_file
from services.registry.service import RegistryService, destroy_expired_private_keys, sync_signing_keys
from services.registry.settings import RegistrySettings
from shared.app import Runtime, build_app
from shared.db import unit_of_work
from shared.errors import Problem, problem_response
from shared.outbound import Resolver

log = structlog.get_logger("refnet.registry")


def create_app(settings: RegistrySettings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    """``resolver`` replaces the DNS lookups of agencies' jwks_uri hosts (tests)."""
    settings = settings or RegistrySettings()

    async def on_startup(runtime: Runtime) -> None:
        # No KEK, no start: the signing keys are never stored in clear (KeyUnavailable names the setting).
        vault = SigningKeyVault(settings.kek_ring)
        log.info("kek_loaded", kek_id=vault.current.key_id)
        file_keys = []
        if settings.signing_key_file:
            content = await asyncio.to_thread(Path(settings.signing_key_file).read_text)
            file_keys = read_signing_key_file(content)
        async with unit_of_work(runtime.sessions) as session:
            # Without a key file the database keeps the keys (one is generated on first start).
            current_kid = await sync_signing_keys(session, file_keys, vault.current)
            if file_keys and file_keys[0].kid != current_kid:
                # The database decides (it saw every rotation); the file only seeds an empty database.
                log.warning("signing_key_file_ignored", file_kid=file_keys[0].kid, current_kid=current_kid)
            await destroy_expired_private_keys(session, settings.signing_key_grace_seconds)
        runtime.extras["registry"] = RegistryService(runtime.sessions, settings, vault, resolver=resolver)

    def wiring(runtime: Runtime) -> list[Any]:
        async def close_registry_on_shutdown() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await runtime.extras["registry"].aclose()

        return [*consumers.wiring(runtime), close_registry_on_shutdown]

    app = build_app(
        settings=settings,
        title="RefNet registry",
        description="Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 "
        "authorization server.",
        routers=[api.router],
        wiring=wiring,
        on_startup=on_startup,
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
