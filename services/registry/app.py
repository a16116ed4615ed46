"""registry: Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 authorization server."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry import api, consumers
from services.registry.settings import RegistrySettings
from shared.app import build_app


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    return build_app(
        settings=settings or RegistrySettings(),
        title="RefNet registry",
        description="Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 authorization server.",
        routers=[api.router],
        wiring=consumers.wiring,
    )
