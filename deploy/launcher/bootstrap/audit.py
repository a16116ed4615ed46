"""Development setup for the local stack: a checkpoint signing key under ``.refnet/keys``.

Production mounts its key from a secret (deploy/k8s/audit.yaml); this only makes one for a developer's
machine, once, and keeps it across restarts so checkpoints stay verifiable.
"""

from __future__ import annotations

from deploy.launcher.bootstrap import BootstrapContext
from services.audit.signing import generate_key_file

KEY_FILE_NAME = "audit-checkpoint-ed25519.pem"


def prepare(ctx: BootstrapContext) -> None:
    path = ctx.keys_dir / KEY_FILE_NAME
    if not path.exists():
        generate_key_file(path)
    ctx.env["REFNET_AUDIT_CHECKPOINT_KEY_FILE"] = str(path)
