"""audit: An append-only, tamper-evident log of every consent and every access, and the auditor's API.

``create_app`` assembles it: the signing key and the witnesses are read at once (a bad key file fails here,
not at the first checkpoint), the use cases are built in :func:`create_app`'s ``provide`` as one :class:`Deps`,
and ``wiring`` starts the ingest consumer, the sequencer and the checkpoint signer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit import api
from services.audit.consumers import ingest_consumer
from services.audit.deps import Deps
from services.audit.jobs import Sequencer, sign_checkpoints
from services.audit.service import Checkpoints, Entries, Ingest, Proofs, Verification
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointMemory, CheckpointSigner, LogKeys, load_key_file, parse_vkey
from shared.app import Runtime, build_app
from shared.consumer import EventConsumer

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


def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
    """The consumer and background jobs audit runs beside its HTTP routes."""
    settings = runtime.settings
    assert isinstance(settings, AuditSettings)
    deps = runtime.need(Deps)

    async def audit_sequencer() -> None:
        await deps.sequencer.run()

    async def checkpoint_signer() -> None:
        await sign_checkpoints(deps.checkpoints, settings.checkpoint_interval_seconds)

    return [ingest_consumer(runtime, deps.ingest, deps.sequencer.nudge), audit_sequencer, checkpoint_signer]


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    signer = load_signer(settings)  # fail at once on a bad key file, not at the first checkpoint
    keys = LogKeys.of(signer, settings.checkpoint_previous_keys)
    witnesses = [parse_vkey(text) for text in settings.witness_keys]
    if any(w.kind != "witness" for w in witnesses):
        raise ValueError("witness_keys must be cosignature (0x04) verifier keys")
    memory = CheckpointMemory(Path(settings.checkpoint_state_file) if settings.checkpoint_state_file else None)

    @asynccontextmanager
    async def provide(runtime: Runtime) -> AsyncIterator[Deps]:
        # Nothing to close: audit holds no clients of its own (the engine is the runtime's).
        if settings.writer_role:
            act_as_writer(runtime.engine, settings.writer_role)
        sessions = runtime.sessions
        ingest = Ingest(sessions)
        checkpoints = Checkpoints(sessions, signer, keys, memory, witnesses)
        yield Deps(
            ingest=ingest,
            entries=Entries(sessions),
            checkpoints=checkpoints,
            proofs=Proofs(sessions),
            verification=Verification(sessions, checkpoints, settings.full_verify_interval_seconds),
            sequencer=Sequencer(ingest, settings.sequencer_batch_size, settings.sequencer_poll_seconds),
        )

    return build_app(
        settings=settings,
        title="RefNet audit",
        description="An append-only, tamper-evident log of every consent and every access, and the auditor's API.",
        routers=[api.router],
        wiring=wiring,
        provide=provide,
    )
