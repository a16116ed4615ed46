"""`make run`: the console's development key-encryption key, under which people's tokens are sealed in its
database (production mounts a secret instead: deploy/secrets/README.md)."""

from __future__ import annotations

from deploy.launcher.bootstrap import BootstrapContext
from shared.kek import KeyEncryptionKey, write_key_file

KEK_FILE = "console_kek.b64"


def prepare(ctx: BootstrapContext) -> None:
    kek_file = ctx.keys_dir / KEK_FILE
    if not kek_file.exists():
        write_key_file(kek_file, KeyEncryptionKey.generate())
    ctx.env["REFNET_CONSOLE_KEK_FILE"] = str(kek_file)
