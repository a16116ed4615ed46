"""``refnet keys rotate-intake``: re-wrap every case's data key with a new master key.
``refnet intake reapply-erasures``: after a restore of intake's database, erase again the cases the audit log
says were erased."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from deploy.commands.key_rotation import KeySettings, add_rotation_command
from shared import key_rotation
from shared.crypto import Keyring, MasterKey
from shared.key_rotation import Wrapped, rotate_key_file


async def rotate(database_url: str, key_file: Path, new_key: MasterKey | None = None,
                 previous: Path | None = None) -> tuple[MasterKey, int, int]:
    """Re-wrap under a new master key every data key wrapped by the key in ``key_file`` (or ``previous``),
    then replace ``key_file`` with the new key. -> (new key, data keys re-wrapped, left under other keys).

    The new key is staged beside the old one first (``<key_file>.new``), where a running intake also looks
    for it, so cases stay readable during the rotation; an interrupted rotation resumes with that key.
    """
    return await rotate_key_file(database_url, _sources(), key_file, new_key, previous)


async def rewrap_to_current(database_url: str, ring: Keyring) -> tuple[int, int]:
    """The two-key layout (read-only mounts): the new key is already the configured current key and the old
    one the configured previous key. Re-wrap every data key under the current key; write no file.
    -> (data keys re-wrapped, left under other keys)."""
    return await key_rotation.rewrap_to_current(database_url, _sources(), ring)


def _sources() -> list[Wrapped]:
    from services.intake.service.keys import DATA_KEYS

    return [DATA_KEYS]


ERASE_ACTION = "case.erase"  # the audit action of a case.erased event (services/audit/domain.py)


async def logged_erasures(audit_database_url: str, batch: int = 1000) -> list[tuple[str, datetime]]:
    """Every case erasure in audit's log: ``(case id, when)``, in log order.

    The log, not the broker: the log keeps every entry for ever and ``refnet audit verify`` proves it
    complete and unrewritten, while a topic keeps events only for its retention (35 days) -- a restore
    from near the end of the 30-day window would otherwise miss erasures already expired from the topic.
    """
    from services.audit.store import find_entries
    from shared.db import make_engine, make_sessionmaker

    engine = make_engine(audit_database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    found: list[tuple[str, datetime]] = []
    after = -1
    try:
        while True:
            async with sessions() as session:
                rows = await find_entries(session, limit=batch, actions=[ERASE_ACTION], after=after)
            for row in rows:
                if row.source_service == "intake" and row.case_id:
                    found.append((row.case_id, row.occurred_at))
            if len(rows) < batch:
                return found
            after = rows[-1].idx
    finally:
        await engine.dispose()


async def reapply(database_url: str, audit_database_url: str) -> tuple[int, list[str]]:
    """-> (erasures in the log, cases erased again now)."""
    from services.intake.service import reapply_erasures
    from shared.db import make_engine, make_sessionmaker

    erasures = await logged_erasures(audit_database_url)
    engine = make_engine(database_url, pool_size=2)
    try:
        return len(erasures), await reapply_erasures(make_sessionmaker(engine), erasures)
    finally:
        await engine.dispose()


def register(app: typer.Typer, keys: typer.Typer) -> None:
    intake_app = typer.Typer(help="intake's operator commands", no_args_is_help=True)
    app.add_typer(intake_app, name="intake")

    @intake_app.command("reapply-erasures")
    def reapply_erasures_command(
        audit_database: Annotated[str, typer.Option(
            "--audit-database", envvar="REFNET_AUDIT_READ_DATABASE_URL",
            help="audit's database (a role that may SELECT its log, e.g. refnet_audit_writer); "
                 "run `refnet audit verify` on it first")],
    ) -> None:
        """After restoring intake's database: erase again every case audit's log says was erased.

        Run it with intake stopped, before it serves again; it is idempotent."""
        from sqlalchemy.exc import SQLAlchemyError

        from services.intake.settings import IntakeSettings

        settings = IntakeSettings()
        try:
            logged, again = asyncio.run(reapply(settings.database_url, audit_database))
        except (SQLAlchemyError, OSError) as exc:
            # The class only: a database URL (with its password) must not reach the terminal or a log.
            typer.echo(f"could not read audit's log or write intake's database ({type(exc).__name__}); "
                       "nothing was changed in the failing transaction", err=True)
            raise typer.Exit(1) from None
        # Case ids are pseudonymous (no personal data): an operator may need them to check the repair.
        typer.echo(f"{logged} erasures in the audit log; {len(again)} cases erased again")
        for case_id in again:
            typer.echo(f"  erased again: {case_id}")

    def settings() -> KeySettings:
        from services.intake.settings import IntakeSettings

        return IntakeSettings()

    add_rotation_command(keys, "intake", settings=settings, sources=_sources, what="data keys")
