"""audit's HTTP routes: parse, authorise, call the service layer, shape the response."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from services.audit import service
from services.audit.domain import utc_bound
from services.audit.signing import ALGORITHM, CheckpointSigner
from shared.access import DETAIL_VALUE
from shared.app import runtime_of
from shared.auth import Principal, require_scopes

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require_scopes("audit:read"))]
ID_PATTERN = DETAIL_VALUE.pattern
MAX_SIZE = 2**62  # far beyond any log; keeps numbers inside BIGINT
TokenQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]
CaseId = Annotated[str, Path(pattern=ID_PATTERN, description="the pseudonymous case id")]


def _signer(request: Request) -> CheckpointSigner:
    signer: CheckpointSigner = request.app.state.signer
    return signer


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
    cursor: Annotated[str | None, Query(max_length=32)] = None,
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


@router.get("/checkpoint", summary="The latest signed checkpoint (signed now if the log grew)")
async def checkpoint(request: Request, _: Auditor) -> dict[str, Any]:
    return await service.sign_checkpoint(runtime_of(request).sessions, _signer(request))


@router.get("/proofs/inclusion", summary="RFC 9162 inclusion proof of one entry")
async def inclusion(
    request: Request,
    _: Auditor,
    index: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await service.inclusion_proof(runtime_of(request).sessions, index, tree_size)


@router.get("/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes")
async def consistency(
    request: Request,
    _: Auditor,
    first: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    second: Annotated[int | None, Query(ge=0, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await service.consistency_proof(runtime_of(request).sessions, first, second)


@router.get("/verify", summary="Recompute the tree from the stored entries and compare")
async def verify(request: Request, _: Auditor) -> dict[str, Any]:
    return await service.verify_log(runtime_of(request).sessions, _signer(request).public_key)


@router.get("/public-key", summary="The checkpoint signing key")
async def public_key(request: Request) -> dict[str, Any]:
    signer = _signer(request)
    return {"key_id": signer.key_id, "algorithm": ALGORITHM, "origin": signer.origin,
            "public_key": base64.b64encode(signer.public_key).decode()}
