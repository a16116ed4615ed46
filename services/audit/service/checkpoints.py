"""Checkpoints: signing the log's state (only if it extends the last signed one), witnesses' cosignatures."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.domain import checkpoint_body, parse_checkpoint_body
from services.audit.leaf import format_time
from services.audit.merkle import (
    MissingNodeError,
    compact_range,
    consistency_plan,
    proof_from_nodes,
    root_from_nodes,
    verify_consistency,
)
from services.audit.signing import (
    ALGORITHM,
    CheckpointMemory,
    CheckpointSigner,
    LogKeys,
    VerifierKey,
    log_vkey,
    parse_signature_line,
    verify_cosignature,
)
from shared.errors import Problem

log = structlog.get_logger("refnet.audit")

CHECKPOINT_SIZE = Gauge("refnet_audit_checkpoint_tree_size", "Tree size of the latest signed checkpoint")
CHECKPOINT_TIME = Gauge("refnet_audit_last_checkpoint_timestamp_seconds", "When the latest checkpoint was signed")
CHECKPOINTS_REFUSED = Counter("refnet_audit_checkpoints_refused_total",
                              "Times the signer refused to sign: the log does not extend its last signed checkpoint")
MAX_COSIGNATURE_SKEW_SECONDS = 600


class LogInconsistent(Problem):
    """The log no longer extends the last checkpoint this service signed: it will not sign another."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "log-inconsistent", detail, title="Service Unavailable")


def _refuse(detail: str) -> LogInconsistent:
    CHECKPOINTS_REFUSED.inc()
    log.error("audit_checkpoint_refused", reason=detail)
    return LogInconsistent(detail)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def checkpoint_json(row: Any, cosigned: Sequence[Any] = ()) -> dict[str, Any]:
    lines = [str(c.line) for c in cosigned]
    signature_line = f"\u2014 {row.origin} {_b64(bytes.fromhex(row.key_id) + bytes(row.signature))}"
    return {
        "origin": row.origin,
        "tree_size": int(row.tree_size),
        "root_hash": bytes(row.root_hash).hex(),
        "timestamp": format_time(row.signed_at),
        "body": row.body,
        "key_id": row.key_id,
        "signature": _b64(bytes(row.signature)),
        # The same checkpoint as a C2SP signed note, for tools that speak that format, witnesses' lines after.
        "note": f"{row.body}\n" + "".join(f"{line}\n" for line in [signature_line, *lines]),
        "cosignatures": lines,
    }


def checkpoint_sound(cp: Any, keys: LogKeys) -> bool:
    """The stored body says what the row says, and one of the log's keys -- the one it names -- signed it.

    A key id none of the log's keys has fails: an earlier key is trusted only if it is configured
    (``REFNET_AUDIT_CHECKPOINT_PREVIOUS_KEYS``), never because the database names it.
    """
    try:
        body = parse_checkpoint_body(cp.body)
    except (ValueError, TypeError, AttributeError):
        return False
    if body.tree_size != int(cp.tree_size) or body.root != bytes(cp.root_hash) or body.origin != cp.origin:
        return False
    return keys.verify(cp.origin, cp.key_id, cp.body, bytes(cp.signature))


class Checkpoints:
    """The log's signed checkpoints: this signer's, its earlier keys', and the witnesses' cosignatures.

    ``memory`` is the last checkpoint this signer signed, kept outside the database (verification reads it
    here too).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], signer: CheckpointSigner, keys: LogKeys,
                 memory: CheckpointMemory, witnesses: Sequence[VerifierKey] = ()) -> None:
        self.sessions = sessions
        self.signer = signer
        self.keys = keys
        self.memory = memory
        self.witnesses = list(witnesses)

    async def sign(self) -> dict[str, Any]:
        """The checkpoint of the log as it is now: the latest one if nothing was appended since, else a new one.

        A new one only if the log extends the last signed checkpoint (an RFC 9162 consistency proof from the
        stored nodes, checked here): the larger of the database's latest -- if one of the log's keys verifies
        it -- and the one this signer remembers outside the database. Otherwise :class:`LogInconsistent`.
        """
        signer, keys, memory = self.signer, self.keys, self.memory
        async with self.sessions() as session, session.begin():
            size = await store.tree_size(session)
            latest = await store.latest_checkpoint(session)
            if latest is not None and not checkpoint_sound(latest, keys):
                raise _refuse("the latest stored checkpoint is not signed by any of the log's keys")
            floor_size, floor_root = ((int(latest.tree_size), bytes(latest.root_hash)) if latest is not None
                                      else (0, b""))
            if memory.last is not None and memory.size >= floor_size:
                if memory.size == floor_size and latest is not None and memory.root != floor_root:
                    raise _refuse(f"the stored checkpoint at size {floor_size} is not the one this signer signed")
                floor_size, floor_root = memory.size, memory.root
            if size < floor_size:
                raise _refuse(f"the log holds {size} entries, fewer than the {floor_size} of its last checkpoint")
            if latest is not None and int(latest.tree_size) == size:
                return checkpoint_json(latest, await store.cosignatures_of(session, size))
            try:
                plan = consistency_plan(floor_size, size) if floor_size else None
                nodes = await store.fetch_nodes(session, [*compact_range(size), *(plan.node_ids if plan else [])])
                root = root_from_nodes(size, nodes)
                consistent = plan is None or verify_consistency(floor_size, size, floor_root, root,
                                                                proof_from_nodes(plan, nodes))
            except MissingNodeError:
                consistent = False
            if not consistent:
                raise _refuse(f"the log at size {size} does not extend the checkpoint signed at size {floor_size}")
            body = checkpoint_body(signer.origin, size, root)
            await store.add_checkpoint(session, {
                "tree_size": size, "root_hash": root, "origin": signer.origin, "signed_at": datetime.now(UTC),
                "body": body, "key_id": signer.key_id, "signature": signer.sign(body),
            })
        async with self.sessions() as session:
            latest = await store.latest_checkpoint(session)
        assert latest is not None
        signed = checkpoint_json(latest)
        memory.remember(signed)
        CHECKPOINT_SIZE.set(int(latest.tree_size))
        CHECKPOINT_TIME.set(latest.signed_at.timestamp())
        return signed

    async def cosigned(self, at_least: int) -> dict[str, Any]:
        """The largest checkpoint that at least ``at_least`` witnesses cosigned."""
        async with self.sessions() as session:
            row = await store.latest_checkpoint_cosigned(session, at_least)
            if row is None:
                raise Problem(404, "not-found", f"no checkpoint has {at_least} cosignatures yet")
            return checkpoint_json(row, await store.cosignatures_of(session, int(row.tree_size)))

    async def add_cosignature(self, tree_size: int, line_text: str) -> dict[str, Any]:
        """Store a witness's C2SP cosignature of the checkpoint at ``tree_size``: one of the configured witness
        keys must verify it over that checkpoint's body."""
        try:
            line = parse_signature_line(line_text)
        except ValueError as exc:
            raise Problem(422, "invalid-cosignature", f"cosignature: {exc}",
                          errors=[{"loc": ["body", "cosignature"], "msg": str(exc)}]) from None
        key = next((w for w in self.witnesses if w.name == line.name and w.key_id == line.key_id), None)
        if key is None:
            raise Problem(403, "unknown-witness", "the cosignature's key is not one of this log's witnesses")
        async with self.sessions() as session, session.begin():
            checkpoint = await store.checkpoint_at(session, tree_size)
            if checkpoint is None:
                raise Problem(404, "not-found", f"no checkpoint of size {tree_size}")
            timestamp = verify_cosignature(key, checkpoint.body, line)
            if timestamp is None:
                raise Problem(422, "invalid-cosignature", "the cosignature does not verify over this checkpoint",
                              errors=[{"loc": ["body", "cosignature"], "msg": "does not verify"}])
            if timestamp > datetime.now(UTC).timestamp() + MAX_COSIGNATURE_SKEW_SECONDS:
                raise Problem(422, "invalid-cosignature", "the cosignature's time is in the future",
                              errors=[{"loc": ["body", "cosignature"], "msg": "time in the future"}])
            await store.add_cosignature(session, {"tree_size": tree_size, "witness": key.name,
                                                  "key_id": key.key_id.hex(), "cosigned_at": timestamp,
                                                  "line": line_text.strip("\n")})
        return {"tree_size": tree_size, "witness": key.name, "cosigned_at": timestamp}

    def public_keys(self) -> dict[str, Any]:
        """The checkpoint signing key, the earlier ones, and the log's witnesses (no database)."""
        signer, keys = self.signer, self.keys
        return {"key_id": signer.key_id, "algorithm": ALGORITHM, "origin": signer.origin,
                "public_key": _b64(signer.public_key),
                "vkey": log_vkey(signer.origin, signer.public_key).text(),
                "previous_keys": [log_vkey(keys.origin, public).text() for key_id, public in keys.keys.items()
                                  if key_id != signer.key_id],
                "witnesses": [w.text() for w in self.witnesses]}
