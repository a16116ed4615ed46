"""``refnet keys rotate-referral``: re-wrap referral's case data keys and webhook signing secrets with a new
master key (``deploy/commands/key_rotation.py``, as ``refnet keys rotate-intake``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from deploy.commands.key_rotation import KeySettings, add_rotation_command
from shared import key_rotation
from shared.crypto import Keyring, MasterKey
from shared.key_rotation import Wrapped

WHAT = "data keys and webhook secrets"


def _sources() -> Sequence[Wrapped]:
    from services.referral.service.keys import WRAPPED

    return WRAPPED


async def rotate(database_url: str, key_file: Path, new_key: MasterKey | None = None,
                 previous: Path | None = None) -> tuple[MasterKey, int, int]:
    """Stage a new key beside ``key_file``, re-wrap under it everything wrapped by the key in ``key_file`` (or
    ``previous``), install it, sweep again. -> (new key, keys re-wrapped, rows left under other keys)."""
    return await key_rotation.rotate_key_file(database_url, _sources(), key_file, new_key, previous)


async def rewrap_to_current(database_url: str, ring: Keyring) -> tuple[int, int]:
    """The two-key layout: re-wrap under ``ring.current`` what ``ring``'s previous key wrapped; write no file."""
    return await key_rotation.rewrap_to_current(database_url, _sources(), ring)


def register(app: typer.Typer, keys: typer.Typer) -> None:
    def settings() -> KeySettings:
        from services.referral.settings import ReferralSettings

        return ReferralSettings()

    add_rotation_command(keys, "referral", settings=settings, sources=_sources, what=WHAT)
