"""audit's HTTP routes: parse, authorise, call one use case, return its answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime

from services.audit.deps import Deps, deps
from services.audit.domain import utc_bound
from services.audit.schemas import CosignatureIn
from shared.access import DETAIL_VALUE
from shared.auth import Principal, authenticate, insufficient_scope, require_scopes
from shared.text import Line

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require_scopes("audit:read"))]
Witness = Annotated[Principal, Depends(require_scopes("audit:witness"))]



Audit = Annotated[Deps, Depends(deps)]


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


@router.get("/entries", summary="Log entries, filtered, in log order")
async def list_entries(
    _: Auditor,
    audit: Audit,
    case_id: TokenQuery = None,
    agency: TokenQuery = None,
    action: TokenQuery = None,
    # With its offset: a time without one is refused (422 naming it), not guessed to be UTC.
    since: Annotated[AwareDatetime | None, Query(description="recorded at or after (RFC 3339)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="recorded before (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Line | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    page = await audit.entries.find(
        limit=limit, cursor=cursor, case_id=case_id, agency=agency, actions=[action] if action else None,
        since=utc_bound(since) if since else None, until=utc_bound(until) if until else None,
    )
    return page.json()


@router.get("/cases/{case_id}/access", summary="Who read this case, when, why, under which consent")
async def case_access(_: Auditor, audit: Audit, case_id: CaseId) -> dict[str, Any]:
    return await audit.entries.case_access(case_id)


@router.get("/cases/{case_id}/consents", summary="The consent history of this case (pseudonymous)")
async def case_consents(_: Auditor, audit: Audit, case_id: CaseId) -> dict[str, Any]:
    return await audit.entries.case_consents(case_id)


@router.get("/checkpoint", summary="The latest signed checkpoint (signed now if the log grew), with cosignatures",
            responses={404: {"description": "With `cosigned`: no checkpoint has that many cosignatures yet."}},
            openapi_extra=AUDITOR_OR_WITNESS)
async def checkpoint(
    _: AuditorOrWitness,
    audit: Audit,
    cosigned: Annotated[int | None, Query(ge=1, le=64, description=(
        "instead: the latest checkpoint at least this many witnesses cosigned (404 if none)"))] = None,
) -> dict[str, Any]:
    if cosigned is not None:
        return await audit.checkpoints.cosigned(cosigned)
    return await audit.checkpoints.sign()


@router.post("/checkpoints/{tree_size}/cosignatures", status_code=201,
             summary="A witness's cosignature of a checkpoint (C2SP tlog-cosignature)")
async def add_cosignature(
    _: Witness,
    audit: Audit,
    body: CosignatureIn,
    tree_size: Annotated[int, Path(ge=0, le=MAX_SIZE)],
) -> dict[str, Any]:
    return await audit.checkpoints.add_cosignature(tree_size, body.cosignature)


@router.get("/proofs/inclusion", summary="RFC 9162 inclusion proof of one entry")
async def inclusion(
    _: Auditor,
    audit: Audit,
    index: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await audit.proofs.inclusion(index, tree_size)


@router.get("/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes",
            openapi_extra=AUDITOR_OR_WITNESS)
async def consistency(
    _: AuditorOrWitness,
    audit: Audit,
    first: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    second: Annotated[int | None, Query(ge=0, le=MAX_SIZE, description="default: the log's size")] = None,
) -> dict[str, Any]:
    return await audit.proofs.consistency(first, second)


@router.get("/verify", summary="Recompute the tree from the stored entries and compare (from the last verified "
                                "checkpoint on; ?full=true: from the start, rate-limited)",
            responses={429: {"description": "A full verification ran too recently; `Retry-After` says when."}})
async def verify(
    _: Auditor,
    audit: Audit,
    full: Annotated[bool, Query(description="recompute every entry, not only those since the last verification")
                    ] = False,
) -> dict[str, Any]:
    return await audit.verification.verify(full=full)


@router.get("/public-key", summary="The checkpoint signing key, the earlier ones, and the log's witnesses")
async def public_key(audit: Audit) -> dict[str, Any]:
    return audit.checkpoints.public_keys()
