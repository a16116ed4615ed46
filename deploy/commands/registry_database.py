"""The registry's database and key-encryption key, as the operator commands reach them (`refnet keys`,
`refnet staff`, `refnet staff idp`): directly, not through the API, since these are the operator's way in before
any agency admin exists."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import typer


def refnet_home() -> Path:
    return Path(os.environ.get("REFNET_HOME", Path.cwd() / ".refnet")).resolve()


def settings_and_database() -> tuple[Any, str]:
    """The registry's settings and its database: REFNET_REGISTRY_DATABASE_URL, else the local stack's."""
    from services.registry.settings import RegistrySettings

    settings = RegistrySettings()
    database_url = settings.database_url
    if "REFNET_REGISTRY_DATABASE_URL" not in os.environ:
        from deploy.launcher.stack import StackState, service_database_url

        state = StackState.load(refnet_home())
        if state is not None:
            database_url = service_database_url(state.database_server, "registry")
    if not settings.kek_file:
        from deploy.launcher.bootstrap.registry import KEK_FILE

        local = refnet_home() / "keys" / KEK_FILE
        if local.exists():  # the local stack's, as `make run` made it
            settings = settings.model_copy(update={"kek_file": str(local)})
    return settings, database_url


def kek_ring(settings: Any) -> Any:
    from shared.kek import KeyUnavailable

    try:
        return settings.kek_ring()
    except KeyUnavailable as exc:
        raise typer.BadParameter(f"{exc}; the registry's signing keys are stored wrapped under it") from None


def run_in_registry(work: Any) -> Any:
    from shared.db import make_engine, make_sessionmaker, unit_of_work

    _, database_url = settings_and_database()

    async def run() -> Any:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def problem_text(problem: Any) -> str:
    errors = problem.extensions.get("errors") or []
    return "; ".join(f"{'.'.join(e['loc'][1:])}: {e['msg']}" for e in errors) or problem.detail
