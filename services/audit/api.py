"""audit's HTTP routes: parse, authorise, call the service layer, shape the response."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.audit import service
from services.audit.domain import utc_bound
from services.audit.settings import AuditSettings
from services.audit.signing import ALGORITHM, CheckpointMemory, CheckpointSigner, LogKeys, VerifierKey, log_vkey
from shared.access import DETAIL_VALUE
from shared.app import runtime_of
from shared.auth import Principal, authenticate, insufficient_scope, require_scopes
from shared.errors import Problem
from shared.text import Line

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require_scopes("audit:read"))]
Witness = Annotated[Principal, Depends(require_scopes("audit:witness"))]


async def _auditor_or_witness(request: Request) -> Principal:
    """A witness sees checkpoints and consistency proofs, not the entries: audit:read or audit:witness. (The
    document names the two requirements itself, AUDITOR_OR_WITNESS: FastAPI would AND them.)"""
    principal = await authenticate(request)
    if not ({"audit:read", "audit:witness"} & principal.scopes):
        raise insufficient_scope({"audit:read"}, {"audit:read"})
    return principal


AuditorOrWitness = Annotated[Principal, Depends(_auditor_or_witness)]
#: How AuditorOrWitness routes say so in OpenAPI: either requirement is enough.
AUDITOR_OR_WITNESS = {"security": [{"HTTPBearer": ["audit:read"]}, {"HTTPBearer": ["audit:witness"]}]}
ID_PATTERN = DETAIL_VALUE.pattern
MAX_SIZE = 2**62  # far beyond any log; keeps numbers inside BIGINT
TokenQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]
CaseId = Annotated[str, Path(pattern=ID_PATTERN, description="the pseudonymous case id")]


def _signer(request: Request) -> CheckpointSigner:
    signer: CheckpointSigner = request.app.state.signer
    return signer


def _keys(request: Request) -> LogKeys:
    keys: LogKeys = request.app.state.log_keys
    return keys


def _memory(request: Request) -> CheckpointMemory:
    memory: CheckpointMemory = request.app.state.checkpoint_memory
    return memory


@router.get("/entries", summary="Log entries, filtered, in log order")
async def list_entries(
    request: Request,
    _: Auditor,
    case_id: TokenQuery = None,
    agency: TokenQuery = None,
    action: TokenQuery = None,
    since: Annotated[datetime | None, Query(description="recorded at or after (RFC 3339)")] = None,
    until: Annotated[datetime | None, Query(description="recorded before (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Line | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    page = await service.list_entries(
        runtime_of(request).sessions, limit=limit, cursor=cursor, case_id=case_id, agency=agency,
        actions=[action] if action else None, since=utc_bound(since) if since else None,
        until=utc_bound(until) if until else None,
    )
    return page.json()


@router.get("/cases/{case_id}/access", summary="Who read this case, when, why, under which consent")
async def case_access(request: Request, _: Auditor, case_id: CaseId) -> dict[str, Any]:
    return await service.case_access(runtime_of(request).sessions, case_id)


@router.get("/cases/{case_id}/consents", summary="The consent history of this case (pseudonymous)")
async def case_consents(request: Request, _: Auditor, case_id: CaseId) -> dict[str, Any]:
    return await service.case_consents(runtime_of(request).sessions, case_id)


@router.get("/checkpoint", summary="The latest signed checkpoint (signed now if the log grew), with cosignatures",
            responses={404: {"description": "With `cosigned`: no checkpoint has that many cosignatures yet."}},
            openapi_extra=AUDITOR_OR_WITNESS)
async def checkpoint(
    request: Request,
    _: AuditorOrWitness,
    cosigned: Annotated[int | None, Query(ge=1, le=64, description=(
        "instead: the latest checkpoint at least this many witnesses cosigned (404 if none)"))] = None,
) -> dict[str, Any]:
    if cosigned is not None:
        return await service.cosigned_checkpoint(runtime_of(request).sessions, cosigned)
    return await service.sign_checkpoint(runtime_of(request).sessions, _signer(request), _keys(request),
                                         _memory(request))


class CosignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cosignature: Line = Field(max_length=512, description="the C2SP tlog-cosignature line, '\u2014 <name> <base64>'")


@router.post("/checkpoints/{tree_size}/cosignatures", status_code=201,
             summary="A witness's cosignature of a checkpoint (C2SP tlog-cosignature)")
async def add_cosignature(
    request: Request,
    _: Witness,
    body: CosignatureIn,
    tree_size: Annotated[int, Path(ge=0, le=MAX_SIZE)],
) -> dict[str, Any]:
    witnesses: list[VerifierKey] = request.app.state.witnesses
    return await service.add_cosignature(runtime_of(request).sessions, witnesses, tree_size, body.cosignature)


@router.get("/proofs/inclusion", summary="RFC 9162 inclusion proof of one entry")
async def inclusion(
    request: Request,
    _: Auditor,
    index: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await service.inclusion_proof(runtime_of(request).sessions, index, tree_size)


@router.get("/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes",
            openapi_extra=AUDITOR_OR_WITNESS)
async def consistency(
    request: Request,
    _: AuditorOrWitness,
    first: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    second: Annotated[int | None, Query(ge=0, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await service.consistency_proof(runtime_of(request).sessions, first, second)


class FullVerifyGate:
    """One full verification at a time, and at most one per interval (per app: each replica its own)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = asyncio.Lock()
        self.last = float("-inf")

    def refusal(self) -> Problem | None:
        wait = self.last + self.interval - time.monotonic()
        if not self.lock.locked() and wait <= 0:
            return None
        return Problem(429, "rate-limited", f"a full verification runs at most every {int(self.interval)} s; "
                       "the incremental one (without full) is not limited",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})


@router.get("/verify", summary="Recompute the tree from the stored entries and compare (from the last verified "
                                "checkpoint on; ?full=true: from the start, rate-limited)",
            responses={429: {"description": "A full verification ran too recently; `Retry-After` says when."}})
async def verify(
    request: Request,
    _: Auditor,
    full: Annotated[bool, Query(description="recompute every entry, not only those since the last verification")
                    ] = False,
) -> dict[str, Any]:
    sessions = runtime_of(request).sessions
    if not full:
        return await service.verify_log(sessions, _keys(request), _memory(request), full=False)
    gate: FullVerifyGate | None = getattr(request.app.state, "full_verify_gate", None)
    if gate is None:
        settings = runtime_of(request).settings
        gate = FullVerifyGate(settings.full_verify_interval_seconds if isinstance(settings, AuditSettings) else 300)
        request.app.state.full_verify_gate = gate
    if (refusal := gate.refusal()) is not None:
        raise refusal
    async with gate.lock:
        gate.last = time.monotonic()
        return await service.verify_log(sessions, _keys(request), _memory(request), full=True)


@router.get("/public-key", summary="The checkpoint signing key, the earlier ones, and the log's witnesses")
async def public_key(request: Request) -> dict[str, Any]:
    signer = _signer(request)
    keys = _keys(request)
    witnesses: list[VerifierKey] = request.app.state.witnesses
    return {"key_id": signer.key_id, "algorithm": ALGORITHM, "origin": signer.origin,
            "public_key": base64.b64encode(signer.public_key).decode(),
            "vkey": log_vkey(signer.origin, signer.public_key).text(),
            "previous_keys": [log_vkey(keys.origin, public).text() for key_id, public in keys.keys.items()
                              if key_id != signer.key_id],
            "witnesses": [w.text() for w in witnesses]}
