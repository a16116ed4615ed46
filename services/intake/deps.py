"""What intake's routes, consumers and jobs are given: one typed object, built by ``app.provide`` for the
process's life, and the dependency through which a route receives it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.intake.service.cases import Cases
from services.intake.service.common import MasterKeys
from services.intake.service.consent import Consents
from services.intake.service.erasure import Erasure
from services.intake.service.keys import Sealing
from services.intake.service.overrides import Overrides
from services.intake.service.reads import Reads
from shared.app import deps_of
from shared.consumer import EventConsumer


@dataclass(frozen=True)
class Deps:
    """What intake's routes, consumers and job use: its use cases, its master keys and its consumers."""

    cases: Cases
    consents: Consents
    reads: Reads
    overrides: Overrides
    erasure: Erasure
    sealing: Sealing
    keys: MasterKeys
    referral_events: EventConsumer
    agency_events: EventConsumer


async def deps(request: Request) -> Deps:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    return deps_of(request, Deps)
