"""audit: An append-only, tamper-evident log of every consent and every access, and the auditor's API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit import api, consumers
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointMemory, CheckpointSigner, LogKeys, load_key_file, parse_vkey
from shared.app import Runtime, build_app

log = structlog.get_logger("refnet.audit")

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def act_as_writer(engine: AsyncEngine, role: str) -> None:
    """Every connection of the service switches to the writer role before it is used.

    ``SET ROLE`` runs on the raw driver connection, outside any transaction, so a rollback cannot undo it.
    """
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"writer_role {role!r} is not a plain lower-case role name")

    @event.listens_for(engine.sync_engine, "connect")
    def _set_role(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda conn: conn.execute(f'SET ROLE "{role}"'))


def load_signer(settings: AuditSettings) -> CheckpointSigner:
    if settings.checkpoint_key_file:
        key = load_key_file(Path(settings.checkpoint_key_file))
    else:
        log.warning("audit_checkpoint_key_ephemeral",
                    hint="set REFNET_AUDIT_CHECKPOINT_KEY_FILE; checkpoints signed now cannot be checked later")
        key = Ed25519PrivateKey.generate()
    return CheckpointSigner(key, settings.checkpoint_origin)


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    signer = load_signer(settings)  # fail at once on a bad key file, not at the first checkpoint
    keys = LogKeys.of(signer, settings.checkpoint_previous_keys)
    witnesses = [parse_vkey(text) for text in settings.witness_keys]
    if any(w.kind != "witness" for w in witnesses):
        raise ValueError("witness_keys must be cosignature (0x04) verifier keys")
    memory = CheckpointMemory(Path(settings.checkpoint_state_file) if settings.checkpoint_state_file else None)

    async def on_startup(runtime: Runtime) -> None:
        if settings.writer_role:
            act_as_writer(runtime.engine, settings.writer_role)
        runtime.extras["signer"] = signer
        runtime.extras["log_keys"] = keys
        runtime.extras["checkpoint_memory"] = memory

    app = build_app(
        settings=settings,
        title="RefNet audit",
        description="An append-only, tamper-evident log of every consent and every access, and the auditor's API.",
        routers=[api.router],
        wiring=consumers.wiring,
        on_startup=on_startup,
    )
    app.state.signer = signer
    app.state.log_keys = keys
    app.state.witnesses = witnesses
    app.state.checkpoint_memory = memory
    return app
