"""`make run`: the registry's development signing key and key-encryption key, the demo agencies and the demo
directory (production mounts secrets instead: deploy/secrets/README.md)."""

from __future__ import annotations

import asyncio
import os

from deploy.launcher.bootstrap import BootstrapContext
from deploy.seed import CONSOLE_URL, seed
from services.registry.oauth import generate_signing_key, signing_key_file_content
from shared.kek import KeyEncryptionKey, write_key_file

#: A private JWK set, the format of the production secret (deploy/secrets/README.md).
SIGNING_KEY_FILE = "registry-signing-key.jwks.json"
#: The key-encryption key the signing keys are stored under in the database (base64 of 32 bytes).
KEK_FILE = "registry_kek.b64"


def prepare(ctx: BootstrapContext) -> None:
    kek_file = ctx.keys_dir / KEK_FILE
    if not kek_file.exists():
        write_key_file(kek_file, KeyEncryptionKey.generate())
    ctx.env["REFNET_REGISTRY_KEK_FILE"] = str(kek_file)
    key_file = ctx.keys_dir / SIGNING_KEY_FILE
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            key = generate_signing_key()
            handle.write(signing_key_file_content([(key.kid, key.private_pem)]))
    ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"] = str(key_file)
    token_url = ctx.service_urls["registry"].rstrip("/") + "/oauth/token"
    # The console's client is registered with the console's address in this stack (8005 unless moved).
    console_url = ctx.service_urls.get("console", CONSOLE_URL)
    asyncio.run(seed(ctx.database_url, ctx.credentials_dir, token_url, kek_file=kek_file, console_url=console_url))
