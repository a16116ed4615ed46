"""referral: The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems."""

from __future__ import annotations

from fastapi import FastAPI

from services.referral import api, consumers
from services.referral.settings import ReferralSettings
from shared.app import build_app


def create_app(settings: ReferralSettings | None = None) -> FastAPI:
    return build_app(
        settings=settings or ReferralSettings(),
        title="RefNet referral",
        description="The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems.",
        routers=[api.router],
        wiring=consumers.wiring,
    )
