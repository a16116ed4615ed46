"""``refnet events``: what an operator does when the broker lost events (docs/operations.md, "The broker lost
data")."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Annotated

import typer

from shared.settings import SERVICE_NAMES

events_app = typer.Typer(help="Events a service published (its outbox).", no_args_is_help=True)


def _database_url(service: str) -> str:
    """The service's own setting, as the service reads it; else the local stack's database (``refnet up``)."""
    from deploy.launcher.cli import _settings
    from deploy.launcher.stack import StackState, refnet_home, service_database_url

    if os.environ.get(f"REFNET_{service.upper()}_DATABASE_URL") or os.environ.get("REFNET_DATABASE_URL"):
        return _settings(service).database_url
    state = StackState.load(refnet_home())
    if state is None:
        raise typer.BadParameter(f"set REFNET_{service.upper()}_DATABASE_URL (no local stack is running here)")
    return service_database_url(state.database_server, service)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter("give the time with its offset (2026-12-03T10:00:00Z): a bare time is ambiguous")
    return moment


async def _replay(database_url: str, topic: str | None, since: datetime | None) -> dict[str, int]:
    from shared.db import make_engine
    from shared.outbox import mark_for_republish

    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await mark_for_republish(conn, reason="operator replay", topic=topic, since=since)
    finally:
        await engine.dispose()


@events_app.command("replay")
def replay(
    service: Annotated[str, typer.Option(help=f"whose events: {', '.join(SERVICE_NAMES)}")],
    topic: Annotated[str | None, typer.Option(help="only this topic (default: every topic it wrote to)")] = None,
    since: Annotated[str | None, typer.Option(help="only events written at or after this time (ISO 8601, "
                                                   "with offset)")] = None,
) -> None:
    """Publish the service's retained events again, in their order and with their ids (consumers and case
    systems that dedupe on the id see each once): for a broker or a reader that lost them."""
    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICE_NAMES)}")
    counts = asyncio.run(_replay(_database_url(service), topic, _since(since)))
    if not counts:
        typer.echo("nothing retained matches: nothing to publish again")
        raise typer.Exit(1)
    for name, rows in sorted(counts.items()):
        typer.echo(f"{name}: {rows} events will be published again by {service}'s relay")
