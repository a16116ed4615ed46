"""referral: The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems.

``create_app`` assembles it: ``provide`` builds the one typed ``Deps`` (use cases, the clearance client, the
master keyring, the background jobs) and closes what it opened on shutdown; ``wiring`` lists the consumers and
jobs that run beside the routes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.referral import api, consumers, events
from services.referral import jobs as background
from services.referral.clearance import ClearanceClient, HttpClearanceClient
from services.referral.deps import Deps
from services.referral.jobs import DeadlineScheduler, RegistryCatchUp, WebhookDispatcher
from services.referral.service import Clock, Feed, Referrals, Statistics, Subscriptions, Suggestions, system_clock
from services.referral.service.indicators import Indicators
from services.referral.settings import ReferralSettings
from shared.app import Runtime, build_app
from shared.client_auth import ClientCredentials, StaticToken, TokenSource
from shared.consumer import EventConsumer
from shared.crypto import Keyring, KeyUnavailable, Undecryptable
from shared.errors import Problem, problem_response
from shared.outbound import Resolver

log = structlog.get_logger("refnet.referral")




def create_app(settings: ReferralSettings | None = None, *, clearance: ClearanceClient | None = None,
               clock: Clock = system_clock, webhook_transport: httpx.AsyncBaseTransport | None = None,
               resolver: Resolver | None = None) -> FastAPI:
    """``clearance`` replaces the HTTP client of intake's clearance, ``webhook_transport`` the network
    under webhook deliveries and ``resolver`` the DNS lookups of webhook hosts (tests); ``clock`` drives the
    referral deadlines."""

    settings = settings or ReferralSettings()
    policy = settings.outbound_policy()
    if resolver is not None:
        policy = dataclasses.replace(policy, resolver=resolver)

    @asynccontextmanager
    async def provide(runtime: Runtime) -> AsyncIterator[Deps]:
        client = clearance
        http: HttpClearanceClient | None = None
        if client is None:
            tokens: TokenSource = (ClientCredentials.from_file(settings.credentials_file, scope="cases:clearance")
                                   if settings.credentials_file else StaticToken(settings.service_token))
            http = HttpClearanceClient(settings.intake_url, tokens, timeout=settings.clearance_timeout_seconds)
            client = http
        try:
            try:
                keyring: Keyring | None = settings.keyring()
                log.info("master_key_loaded", key_id=keyring.current.key_id if keyring else None)
            except KeyUnavailable as exc:
                # Without a key no free text is accepted or shown (503) rather than kept in clear; the rest works.
                keyring = None
                log.warning("master_key_unavailable", reason=str(exc))
            catchup = RegistryCatchUp(runtime.sessions, bootstrap=settings.kafka_bootstrap,
                                      consumer=f"{settings.consumer_group_prefix}-registry",
                                      empty_grace_seconds=settings.registry_empty_grace_seconds)
            referrals = Referrals(runtime.sessions, source=settings.source, clearance=client, clock=clock,
                                  acknowledge_within=settings.acknowledge_within(), keyring=keyring,
                                  registry_loaded=lambda: catchup.loaded)
            runtime.ready_when.append(lambda: catchup.loaded)  # no traffic to a replica that would say registry-loading
            yield Deps(
                referrals=referrals,
                subscriptions=Subscriptions(
                    runtime.sessions, policy=policy, max_per_agency=settings.webhook_max_subscriptions_per_agency,
                    keyring=keyring, secret_grace=timedelta(seconds=settings.webhook_secret_grace_seconds)),
                feed=Feed(runtime.sessions, max_wait_seconds=settings.feed_max_wait_seconds,
                          max_waiting_per_agency=settings.feed_max_waiting_per_agency),
                statistics=Statistics(runtime.sessions, clock=clock),
                indicators=Indicators(runtime.sessions, clock=clock),
                suggestions=Suggestions(runtime.sessions),
                clearance=client,
                keyring=keyring,
                deadlines=DeadlineScheduler(referrals, runtime.engine,
                                            interval_seconds=settings.deadline_interval_seconds),
                registry_catchup=catchup,
                webhooks=WebhookDispatcher(
                    runtime.sessions, runtime.engine, source=settings.source, policy=policy,
                    transport=webhook_transport, poll_seconds=settings.webhook_poll_seconds,
                    backoff_base_seconds=settings.webhook_backoff_base_seconds,
                    backoff_max_seconds=settings.webhook_backoff_max_seconds,
                    max_failures=settings.webhook_max_failures, max_parallel=settings.webhook_max_parallel,
                    max_parallel_per_agency=settings.webhook_max_parallel_per_agency, keyring=keyring),
            )
        finally:
            if http is not None:
                await http.aclose()

    def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
        deps = runtime.need(Deps)
        jobs: list[EventConsumer | Callable[[], Coroutine[Any, Any, None]]] = [
            EventConsumer.from_settings(settings, runtime.sessions, name=deps.registry_catchup.consumer,
                                        topics=[events.REGISTRY_EVENTS],
                                        handlers=consumers.registry_handlers(deps.referrals)),
            deps.registry_catchup.run,
            EventConsumer.from_settings(settings, runtime.sessions, name=f"{settings.consumer_group_prefix}-intake",
                                        topics=[events.INTAKE_EVENTS],
                                        handlers=consumers.intake_handlers(deps.referrals)),
            deps.deadlines.run,
            deps.webhooks.run,
        ]
        keyring = deps.keyring
        if keyring is not None:

            async def seal_clear_text() -> None:
                await background.seal_clear_text(deps.referrals, keyring, runtime.sessions)

            jobs.append(seal_clear_text)
        return jobs

    app = build_app(
        settings=settings,
        title="RefNet referral",
        description="The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems.",
        routers=[api.router],
        wiring=wiring,
        provide=provide,
    )

    @app.exception_handler(KeyUnavailable)
    @app.exception_handler(Undecryptable)
    async def _key_problem(request: Request, exc: Exception) -> JSONResponse:
        log.error("data_key_unavailable", error=type(exc).__name__)
        return problem_response(Problem(503, "master-key-unavailable",
                                        "The case's data key cannot be opened with the configured master key."),
                                request)

    return app
