"""referral: The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.referral import api, consumers, events
from services.referral.catchup import RegistryCatchUp
from services.referral.clearance import ClearanceClient, HttpClearanceClient
from services.referral.deadlines import DeadlineScheduler
from services.referral.service import Clock, Referrals, WaitingPolls, system_clock
from services.referral.settings import ReferralSettings
from services.referral.tokens import ClientCredentials, StaticToken, TokenSource
from services.referral.webhooks import Subscriptions, WebhookDispatcher, seal_clear_secrets
from shared.app import Runtime, build_app
from shared.consumer import EventConsumer
from shared.crypto import Keyring, KeyUnavailable, Undecryptable
from shared.errors import Problem, problem_response
from shared.loops import stopping
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

    async def on_startup(runtime: Runtime) -> None:
        client = clearance
        if client is None:
            tokens: TokenSource = (ClientCredentials.from_file(settings.credentials_file)
                                   if settings.credentials_file else StaticToken(settings.service_token))
            http = HttpClearanceClient(settings.intake_url, tokens, timeout=settings.clearance_timeout_seconds)
            runtime.extras["clearance_http"] = http
            client = http
        try:
            keyring: Keyring | None = settings.keyring()
            log.info("master_key_loaded", key_id=keyring.current.key_id if keyring else None)
        except KeyUnavailable as exc:
            # Without a key no free text is accepted or shown (503) rather than kept in clear; the rest works.
            keyring = None
            log.warning("master_key_unavailable", reason=str(exc))
        referrals = Referrals(runtime.sessions, source=settings.source, clearance=client, clock=clock,
                              acknowledge_within=settings.acknowledge_within(), keyring=keyring)
        runtime.extras["referrals"] = referrals
        app.state.referrals = referrals
        app.state.subscriptions = Subscriptions(
            runtime.sessions, policy=policy, max_per_agency=settings.webhook_max_subscriptions_per_agency,
            keyring=keyring, secret_grace=timedelta(seconds=settings.webhook_secret_grace_seconds))
        app.state.feed_max_wait_seconds = settings.feed_max_wait_seconds
        app.state.feed_waiting = WaitingPolls(settings.feed_max_waiting_per_agency)

    def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
        referrals: Referrals = runtime.extras["referrals"]
        common = {"service": "referral", "sessions": runtime.sessions, "bootstrap": settings.kafka_bootstrap,
                  "max_attempts": settings.consumer_max_attempts,
                  "retry_backoff_seconds": settings.consumer_retry_backoff_seconds,
                  "enable_idempotence": settings.kafka_enable_idempotence}
        scheduler = DeadlineScheduler(referrals, runtime.engine, interval_seconds=settings.deadline_interval_seconds)
        runtime.extras["deadlines"] = scheduler
        registry = EventConsumer(name=f"{settings.consumer_group_prefix}-registry", topics=[events.REGISTRY_EVENTS],
                                 handlers=consumers.registry_handlers(referrals), **common)  # type: ignore[arg-type]
        catchup = RegistryCatchUp(runtime.sessions, bootstrap=settings.kafka_bootstrap, consumer=registry.name,
                                  empty_grace_seconds=settings.registry_empty_grace_seconds)
        runtime.extras["registry_catchup"] = catchup
        referrals.registry_loaded = lambda: catchup.loaded
        runtime.ready_when.append(referrals.registry_loaded)  # no traffic to a replica that would say registry-loading
        jobs: list[EventConsumer | Callable[[], Coroutine[Any, Any, None]]] = [
            registry,
            catchup.run,
            EventConsumer(name=f"{settings.consumer_group_prefix}-intake", topics=[events.INTAKE_EVENTS],
                          handlers=consumers.intake_handlers(referrals), **common),  # type: ignore[arg-type]
            scheduler.run,
        ]
        dispatcher = WebhookDispatcher(
            runtime.sessions, runtime.engine, source=settings.source, policy=policy, transport=webhook_transport,
            poll_seconds=settings.webhook_poll_seconds, backoff_base_seconds=settings.webhook_backoff_base_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds, max_failures=settings.webhook_max_failures,
            max_parallel=settings.webhook_max_parallel,
            max_parallel_per_agency=settings.webhook_max_parallel_per_agency, keyring=referrals.keyring)
        runtime.extras["webhooks"] = dispatcher
        jobs.append(dispatcher.run)
        if referrals.keyring is not None:

            async def seal_clear_text() -> None:
                # Referrals made before free text was sealed: sealed once, then this job waits like the others.
                while True:
                    try:
                        await referrals.seal_clear_text()
                        assert referrals.keyring is not None
                        await seal_clear_secrets(runtime.sessions, referrals.keyring)
                        break
                    except Exception as exc:  # the database restarting: try again later
                        if stopping():
                            raise
                        log.warning("free_text_sealing_failed", error=type(exc).__name__)
                        await asyncio.sleep(30)
                await asyncio.Event().wait()

            jobs.append(seal_clear_text)
        http = runtime.extras.get("clearance_http")
        if http is not None:

            async def close_clearance_client() -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    await http.aclose()

            jobs.append(close_clearance_client)
        return jobs

    app = build_app(
        settings=settings,
        title="RefNet referral",
        description="The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems.",
        routers=[api.router],
        wiring=wiring,
        on_startup=on_startup,
    )

    @app.exception_handler(KeyUnavailable)
    @app.exception_handler(Undecryptable)
    async def _key_problem(request: Request, exc: Exception) -> JSONResponse:
        log.error("data_key_unavailable", error=type(exc).__name__)
        return problem_response(Problem(503, "master-key-unavailable",
                                        "The case's data key cannot be opened with the configured master key."),
                                request)

    return app
