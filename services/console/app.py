"""console: the web console, a backend-for-frontend where caseworkers, supervisors and auditors work in a browser.

It signs people in at the registry's OpenID Connect provider (code + PKCE), keeps their tokens server-side
(sealed, in its own database), and calls the four APIs with each person's own token, so every read and act is
the person's in the audit log. ``create_app`` assembles it like every service (``shared.app.build_app``), with
the pages' own headers (``pages.SecurityHeaders``) and static files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.console import api, domain, pages
from services.console.deps import Deps, Pages
from services.console.jobs import sweep_sessions
from services.console.service import Api, Apis, Audit, Cases, Directory, Provider, Referrals, Sessions, Staff
from services.console.service.admin import Services, Webhooks
from services.console.settings import ConsoleSettings
from shared.app import Runtime, build_app
from shared.consumer import EventConsumer


def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
    deps = runtime.need(Deps)

    async def console_session_sweep() -> None:
        await sweep_sessions(deps.sessions)

    return [console_session_sweep]


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    ring = settings.kek_ring()  # fail at once without a key-encryption key, not at the first sign-in

    @asynccontextmanager
    async def provide(runtime: Runtime) -> AsyncIterator[Deps]:
        timeout = settings.api_timeout_seconds
        apis = Apis(registry=Api("registry", settings.registry_url, timeout),
                    intake=Api("intake", settings.intake_url, timeout),
                    referral=Api("referral", settings.referral_url, timeout),
                    audit=Api("audit", settings.audit_url, timeout))
        provider = Provider(settings.effective_oidc_issuer, settings.client_id, settings.effective_client_secret,
                            settings.scopes, timeout)
        clock = domain.SessionClock(idle=timedelta(seconds=settings.session_idle_seconds),
                                    lifetime=timedelta(seconds=settings.session_max_seconds))
        sessions = Sessions(runtime.sessions, lambda: ring, provider, clock, settings.effective_redirect_uri,
                            settings.base_url.rstrip("/") + "/")
        try:
            yield Deps(
                sessions=sessions, referrals=Referrals(apis), cases=Cases(apis), directory=Directory(apis),
                audit=Audit(apis), staff=Staff(apis), webhooks=Webhooks(apis), services=Services(apis), apis=apis,
                pages=Pages(cookie_secure=settings.cookie_secure, languages=tuple(settings.languages),
                            default_language=settings.default_language, quick_exit_url=settings.quick_exit_url,
                            idle_seconds=settings.session_idle_seconds, warn_seconds=settings.session_warn_seconds,
                            refresh_seconds=settings.inbox_refresh_seconds),
            )
        finally:
            await apis.aclose()

    app = build_app(
        settings=settings,
        title="RefNet console",
        description="The web console: caseworkers, supervisors and auditors at work in a browser.",
        routers=[api.router],
        wiring=wiring,
        provide=provide,
    )
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    api.install_page_handlers(app)
    app.add_middleware(pages.SecurityHeaders)
    return app
