"""What console's routes and jobs are given: one typed object, built by ``app.provide`` for the process's life,
and the dependency through which a route receives it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.console.service import Apis, Audit, Cases, Directory, Referrals, Services, Sessions, Staff, Webhooks
from shared.app import deps_of


@dataclass(frozen=True)
class Pages:
    """What every page needs to know of the configuration."""

    cookie_secure: bool
    languages: tuple[str, ...]
    default_language: str
    quick_exit_url: str
    idle_seconds: int
    warn_seconds: int
    refresh_seconds: int


@dataclass(frozen=True)
class Deps:
    sessions: Sessions
    referrals: Referrals
    cases: Cases
    directory: Directory
    audit: Audit
    staff: Staff
    webhooks: Webhooks
    services: Services
    apis: Apis
    pages: Pages


async def deps(request: Request) -> Deps:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    return deps_of(request, Deps)
