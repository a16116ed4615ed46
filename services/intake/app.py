"""intake: Cases, consent, and the personal data that only the right agency may read."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake import api, consumers
from services.intake.settings import IntakeSettings
from shared.app import build_app


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    return build_app(
        settings=settings or IntakeSettings(),
        title="RefNet intake",
        description="Cases, consent, and the personal data that only the right agency may read.",
        routers=[api.router],
        wiring=consumers.wiring,
    )
