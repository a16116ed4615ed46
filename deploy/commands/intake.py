"""``refnet keys rotate-intake``: re-wrap every case's data key with a new master key.
``refnet intake reapply-erasures``: after a restore of intake's database, erase again the cases the audit log
says were erased."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from services.intake.crypto import STAGED_SUFFIX, Keyring, MasterKey, write_key_file


async def rotate(database_url: str, key_file: Path, new_key: MasterKey | None = None,
                 previous: Path | None = None) -> tuple[MasterKey, int, int]:
    """Re-wrap under a new master key every data key wrapped by the key in ``key_file`` (or ``previous``),
    then replace ``key_file`` with the new key. -> (new key, data keys re-wrapped, left under other keys).

    The new key is staged beside the old one first (``<key_file>.new``), where a running intake also looks
    for it, so cases stay readable during the rotation; an interrupted rotation resumes with that key.
    """
    from services.intake.service import count_data_keys_not_under, rewrap_data_keys
    from shared.db import make_engine, make_sessionmaker

    old = MasterKey.from_file(key_file)
    staged, new_key = _stage(key_file, new_key)
    ring = Keyring(old, (MasterKey.from_file(previous),) if previous else ())
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        count = await rewrap_data_keys(sessions, ring, new_key)
        _install(staged, key_file)
        # Cases a running intake registered under the old key while we worked: one more sweep.
        count += await rewrap_data_keys(sessions, ring, new_key)
        left = await count_data_keys_not_under(sessions, new_key)
    finally:
        await engine.dispose()
    return new_key, count, left


async def rewrap_to_current(database_url: str, ring: Keyring) -> tuple[int, int]:
    """The two-key layout (read-only mounts): the new key is already the configured current key and the old
    one the configured previous key. Re-wrap every data key under the current key; write no file.
    -> (data keys re-wrapped, left under other keys)."""
    from services.intake.service import count_data_keys_not_under, rewrap_data_keys
    from shared.db import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        count = await rewrap_data_keys(sessions, ring, ring.current)
        return count, await count_data_keys_not_under(sessions, ring.current)
    finally:
        await engine.dispose()


def _stage(key_file: Path, new_key: MasterKey | None) -> tuple[Path, MasterKey]:
    staged = Path(str(key_file) + STAGED_SUFFIX)
    if new_key is None:
        new_key = MasterKey.from_file(staged) if staged.exists() else MasterKey.generate()
    write_key_file(staged, new_key)
    return staged, new_key


def _install(staged: Path, key_file: Path) -> None:
    staged.replace(key_file)


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

    @keys.command("rotate-intake")
    def rotate_intake(
        new_key_file: Annotated[Path | None, typer.Option(
            help="A file holding the new key (base64 of 32 bytes); generated when omitted")] = None,
        previous_key_file: Annotated[Path | None, typer.Option(
            help="An older key still wrapping some data keys (a rotation interrupted before)")] = None,
        rewrap_only: Annotated[bool, typer.Option(
            "--rewrap-only", help="Keys mounted read-only: the new key is already REFNET_INTAKE_MASTER_KEY_FILE "
            "and the old one REFNET_INTAKE_PREVIOUS_MASTER_KEY_FILE; re-wrap under the new one, write no file")]
            = False,
    ) -> None:
        """Re-wrap every case's data key with a new intake master key; the key file is replaced (or, with
        --rewrap-only, left alone)."""
        from services.intake.settings import IntakeSettings

        settings = IntakeSettings()
        if not settings.master_key_file:
            raise typer.BadParameter("REFNET_INTAKE_MASTER_KEY_FILE is not set")
        if rewrap_only:
            if new_key_file or previous_key_file:
                raise typer.BadParameter("--rewrap-only takes its keys from the settings, not from options")
            if not settings.previous_master_key_file:
                raise typer.BadParameter("--rewrap-only needs REFNET_INTAKE_PREVIOUS_MASTER_KEY_FILE (the old key)")
            ring = settings.keyring()
            count, left = asyncio.run(rewrap_to_current(settings.database_url, ring))
            typer.echo(f"re-wrapped {count} data keys; master key is now {ring.current.key_id}; "
                       f"{left} data keys are still wrapped by another key")
            typer.echo("keep the old key escrowed while backups taken before this rotation exist")
            if left:
                raise typer.Exit(1)
            return
        given = MasterKey.from_file(new_key_file) if new_key_file else None
        new_key, count, left = asyncio.run(
            rotate(settings.database_url, Path(settings.master_key_file), given, previous_key_file))
        typer.echo(f"re-wrapped {count} data keys; master key is now {new_key.key_id}; "
                   f"{left} data keys are still wrapped by another key")
        typer.echo("keep the old key escrowed while backups taken before this rotation exist")
        if left:
            raise typer.Exit(1)
