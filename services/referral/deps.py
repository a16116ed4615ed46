"""What referral's routes, consumers and jobs are given: one typed object, built by ``app.provide`` for the
process's life, and the dependency through which a route receives it."""

from __future__ import annotations

import dataclasses

from fastapi import Request

from services.referral.clearance import ClearanceClient
from services.referral.jobs import DeadlineScheduler, RegistryCatchUp, WebhookDispatcher
from services.referral.service import Feed, Referrals, Statistics, Subscriptions, Suggestions
from services.referral.service.indicators import Indicators
from shared.app import deps_of
from shared.crypto import Keyring


@dataclasses.dataclass(frozen=True)
class Deps:
    """What referral's routes, consumers and jobs use, built once per process by ``provide``."""

    referrals: Referrals
    subscriptions: Subscriptions
    feed: Feed
    statistics: Statistics
    indicators: Indicators
    suggestions: Suggestions
    clearance: ClearanceClient
    keyring: Keyring | None  # None: no master key configured (free text and webhook secrets answer 503)
    deadlines: DeadlineScheduler
    registry_catchup: RegistryCatchUp
    webhooks: WebhookDispatcher


async def deps(request: Request) -> Deps:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    return deps_of(request, Deps)
