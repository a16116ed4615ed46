"""Launcher hook (the local stack only): point referral at the ``referral-service`` platform client's
credentials, which the registry's bootstrap writes (it runs first), so referral can get ``cases:clearance``
tokens for intake; give it a development master key under ``.refnet/keys`` for the free text it seals
(production mounts a secret instead). (The stack lets demo case systems on this machine receive webhooks:
REFNET_OUTBOUND_ALLOW_* in deploy/launcher/stack.py.)"""

from __future__ import annotations

from deploy.launcher.bootstrap import BootstrapContext
from shared.crypto import MasterKey, write_key_file

CREDENTIALS_NAME = "referral-service.json"
ENV_VAR = "REFNET_REFERRAL_CREDENTIALS_FILE"
KEY_FILE_NAME = "referral_master_key.b64"
KEY_ENV_VAR = "REFNET_REFERRAL_MASTER_KEY_FILE"


def prepare(ctx: BootstrapContext) -> None:
    path = ctx.credentials_dir / CREDENTIALS_NAME
    if path.exists():
        ctx.env[ENV_VAR] = str(path)
    key_file = ctx.keys_dir / KEY_FILE_NAME
    if not key_file.exists():
        write_key_file(key_file, MasterKey.generate())
    ctx.env[KEY_ENV_VAR] = str(key_file)
