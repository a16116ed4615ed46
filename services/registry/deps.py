"""What registry's routes, consumers and jobs are given: one typed object, built by ``app.provide`` for the
process's life, and the dependency through which a route receives it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.registry.service import Agencies, Authorization, Directory, SigningKeys
from services.registry.service.federation import Federation
from services.registry.service.people import Staff
from services.registry.service.sign_in import SignIn
from services.registry.settings import RegistrySettings
from shared.app import deps_of


@dataclass(frozen=True)
class Deps:
    """What registry's routes use: its settings and its use cases."""

    settings: RegistrySettings
    agencies: Agencies
    authorization: Authorization
    signing_keys: SigningKeys
    directory: Directory
    staff: Staff
    sign_in: SignIn
    federation: Federation


async def deps(request: Request) -> Deps:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    return deps_of(request, Deps)
