"""``refnet keys rotate-<service>``, once for every service keeping keys under a master key (intake, referral):
the options, the checks of the settings and the report; the work is ``shared/key_rotation.py``."""

# No ``from __future__ import annotations``: typer evaluates the options' annotations, and their help names
# the service (closure variables a postponed annotation could not see).
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Protocol

import typer

from shared.crypto import Keyring, MasterKey
from shared.key_rotation import Wrapped, rewrap_to_current, rotate_key_file


class KeySettings(Protocol):
    database_url: str
    master_key_file: str
    previous_master_key_file: str

    def keyring(self) -> Keyring: ...


def add_rotation_command(keys: typer.Typer, service: str, *, settings: Callable[[], KeySettings],
                         sources: Callable[[], Sequence[Wrapped]], what: str) -> None:
    """Register ``refnet keys rotate-<service>``; ``what`` names what it re-wraps in its report."""
    current_setting = f"REFNET_{service.upper()}_MASTER_KEY_FILE"
    previous_setting = f"REFNET_{service.upper()}_PREVIOUS_MASTER_KEY_FILE"

    def report(key: MasterKey, count: int, left: int) -> None:
        typer.echo(f"re-wrapped {count} {what}; master key is now {key.key_id}; "
                   f"{left} {what} are still wrapped by another key")
        typer.echo("keep the old key escrowed while backups taken before this rotation exist")
        if left:
            raise typer.Exit(1)

    @keys.command(f"rotate-{service}", help=(
        f"Re-wrap every one of {service}'s {what} with a new {service} master key; the key file is replaced "
        "(or, with --rewrap-only, left alone)."))
    def rotate(
        new_key_file: Annotated[Path | None, typer.Option(
            help="A file holding the new key (base64 of 32 bytes); generated when omitted")] = None,
        previous_key_file: Annotated[Path | None, typer.Option(
            help="An older key still wrapping some keys (a rotation interrupted before)")] = None,
        rewrap_only: Annotated[bool, typer.Option(
            "--rewrap-only", help=f"Keys mounted read-only: the new key is already {current_setting} and the "
            f"old one {previous_setting}; re-wrap under the new one, write no file")] = False,
    ) -> None:
        config = settings()
        if not config.master_key_file:
            raise typer.BadParameter(f"{current_setting} is not set")
        if rewrap_only:
            if new_key_file or previous_key_file:
                raise typer.BadParameter("--rewrap-only takes its keys from the settings, not from options")
            if not config.previous_master_key_file:
                raise typer.BadParameter(f"--rewrap-only needs {previous_setting} (the old key)")
            ring = config.keyring()
            count, left = asyncio.run(rewrap_to_current(config.database_url, sources(), ring))
            report(ring.current, count, left)
            return
        given = MasterKey.from_file(new_key_file) if new_key_file else None
        new_key, count, left = asyncio.run(rotate_key_file(
            config.database_url, sources(), Path(config.master_key_file), given, previous_key_file))
        report(new_key, count, left)
