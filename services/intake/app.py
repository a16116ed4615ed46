"""intake: Cases, consent, and the personal data that only the right agency may read.

``create_app`` assembles the service: its typed dependencies (``deps.Deps``, built by ``provide`` around the
app's life; declared beside the use cases so that the routes can name it), its routes, its consumers and its
background job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.intake import api, consumers, jobs
from services.intake.crypto import KeyUnavailable, Undecryptable
from services.intake.deps import Deps
from services.intake.service import (
    Cases,
    Consents,
    Erasure,
    MasterKeys,
    Overrides,
    Reads,
    Resources,
    Sealing,
)
from services.intake.settings import IntakeSettings
from shared.app import Runtime, build_app
from shared.consumer import EventConsumer
from shared.errors import Problem, problem_response

log = structlog.get_logger("refnet.intake")


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()

    @asynccontextmanager
    async def provide(runtime: Runtime) -> AsyncIterator[Deps]:
        # The key files are re-read when a case names a key this process does not hold (a rotation).
        keys = MasterKeys.from_files(settings.keyring)
        res = Resources(sessions=runtime.sessions, keys=keys, source=settings.source)
        referral_events, agency_events = consumers.build(settings, runtime.sessions)
        # The consumers close their own clients when their tasks stop; nothing else here holds one.
        yield Deps(
            cases=Cases(res), consents=Consents(res),
            # A refusal a referral event could change waits for what the broker holds (read-your-writes).
            reads=Reads(res, referrals_applied=referral_events.applied_what_the_broker_holds),
            overrides=Overrides(res, validity=timedelta(hours=settings.override_valid_hours)),
            erasure=Erasure(res), sealing=Sealing(res), keys=keys,
            referral_events=referral_events, agency_events=agency_events,
        )

    def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
        deps = runtime.need(Deps)

        async def trafficking_facts_sweep() -> None:
            await jobs.seal_sweeps(deps.sealing)

        return [trafficking_facts_sweep, deps.referral_events, deps.agency_events]

    app = build_app(
        settings=settings,
        title="RefNet intake",
        description="Cases, consent, and the personal data that only the right agency may read.",
        routers=[api.router],
        wiring=wiring,
        provide=provide,
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
