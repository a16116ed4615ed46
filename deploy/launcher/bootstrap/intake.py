"""Launcher hook: a development master key under ``.refnet/keys`` (production mounts a secret instead)."""

from __future__ import annotations

from deploy.launcher.bootstrap import BootstrapContext
from services.intake.crypto import MasterKey, write_key_file

KEY_FILE_NAME = "intake_master_key.b64"
ENV_VAR = "REFNET_INTAKE_MASTER_KEY_FILE"


def prepare(ctx: BootstrapContext) -> None:
    path = ctx.keys_dir / KEY_FILE_NAME
    if not path.exists():
        write_key_file(path, MasterKey.generate())
    ctx.env[ENV_VAR] = str(path)
