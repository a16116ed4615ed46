"""intake: Cases, consent, and the personal data that only the right agency may read."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.intake import api, consumers
from services.intake.crypto import Keyring, KeyUnavailable, Undecryptable
from services.intake.settings import IntakeSettings
from shared.app import Runtime, build_app
from shared.errors import Problem, problem_response

log = structlog.get_logger("refnet.intake")


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()

    def reload_keys(runtime: Runtime) -> Keyring | None:
        """Re-read the key files, keeping the keys this process already had (data keys it wrapped while a
        rotation ran must stay readable until the rotation sweeps them)."""
        try:
            fresh = settings.keyring()
        except KeyUnavailable:
            return runtime.extras.get("keyring")
        keyring: Keyring = fresh.merged(runtime.extras.get("keyring"))
        runtime.extras["keyring"] = keyring
        log.info("master_keys_reloaded", current_key_id=keyring.current.key_id, keys=1 + len(keyring.previous))
        return keyring

    async def load_keys(runtime: Runtime) -> None:
        runtime.extras["reload_keys"] = lambda: reload_keys(runtime)
        try:
            runtime.extras["keyring"] = settings.keyring()
            log.info("master_key_loaded", key_id=runtime.extras["keyring"].current.key_id)
        except KeyUnavailable as exc:
            # Without a key no personal data is accepted or shown (503), rather than kept under a
            # throwaway key; the rest of the service (health, clearance) still answers.
            runtime.extras["keyring"] = None
            log.warning("master_key_unavailable", reason=str(exc))

    app = build_app(
        settings=settings,
        title="RefNet intake",
        description="Cases, consent, and the personal data that only the right agency may read.",
        routers=[api.router],
        wiring=consumers.wiring,
        on_startup=load_keys,
    )

    @app.exception_handler(KeyUnavailable)
    @app.exception_handler(Undecryptable)
    async def _key_problem(request: Request, exc: Exception) -> JSONResponse:
        log.error("data_key_unavailable", error=type(exc).__name__)
        return problem_response(
            Problem(503, "master-key-unavailable",
                    "The case's data key cannot be opened with the configured master key."),
            request,
        )

    return app
