"""Launcher hook (the local stack only): point referral at the ``referral-service`` platform client's
credentials, which the registry's bootstrap writes (it runs first), so referral can get ``cases:clearance``
tokens for intake. (The stack lets demo case systems on this machine receive webhooks: REFNET_OUTBOUND_ALLOW_*
in deploy/launcher/stack.py.)"""

from __future__ import annotations

from deploy.launcher.bootstrap import BootstrapContext

CREDENTIALS_NAME = "referral-service.json"
ENV_VAR = "REFNET_REFERRAL_CREDENTIALS_FILE"


def prepare(ctx: BootstrapContext) -> None:
    path = ctx.credentials_dir / CREDENTIALS_NAME
    if path.exists():
        ctx.env[ENV_VAR] = str(path)
