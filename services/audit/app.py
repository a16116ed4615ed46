"""audit: An append-only, tamper-evident log of every consent and every access, and the auditor's API."""

from __future__ import annotations

from fastapi import FastAPI

from services.audit import api, consumers
from services.audit.settings import AuditSettings
from shared.app import build_app


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    return build_app(
        settings=settings or AuditSettings(),
        title="RefNet audit",
        description="An append-only, tamper-evident log of every consent and every access, and the auditor's API.",
        routers=[api.router],
        wiring=consumers.wiring,
    )
