"""audit's HTTP routes: parse, authorise, call one use case, return its answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from services.audit.deps import Deps, deps
from services.audit.domain import utc_bound
from services.audit.schemas import (
    AGENCY,
    CASE_ID,
    TREE_SIZE,
    CaseAccess,
    CaseConsents,
    Checkpoint,
    ConsistencyProof,
    Cosignature,
    CosignatureIn,
    EntryPage,
    InclusionProof,
    PublicKeys,
    Verification,
)
from shared.access import DETAIL_VALUE
from shared.auth import Principal, any_scope_security, require_any_scope, require_scopes
from shared.text import Line

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require_scopes("audit:read"))]
Witness = Annotated[Principal, Depends(require_scopes("audit:witness"))]

Audit = Annotated[Deps, Depends(deps)]


# A witness sees checkpoints and consistency proofs, not the entries: audit:read or audit:witness.
AuditorOrWitness = Annotated[Principal, Depends(require_any_scope("audit:read", "audit:witness"))]
#: How AuditorOrWitness routes say so in OpenAPI: either requirement is enough.
AUDITOR_OR_WITNESS = any_scope_security("audit:read", "audit:witness")
ID_PATTERN = DETAIL_VALUE.pattern
MAX_SIZE = 2**62  # far beyond any log; keeps numbers inside BIGINT
CaseId = Annotated[str, Path(pattern=ID_PATTERN, description="the pseudonymous case id", examples=[CASE_ID])]


@router.get("/entries", summary="Log entries, filtered, in log order", response_model=EntryPage)
async def list_entries(
    _: Auditor,
    audit: Audit,
    case_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="only entries about this case",
                                         examples=[CASE_ID])] = None,
    agency: Annotated[str | None, Query(pattern=ID_PATTERN, description="only entries of acts by this agency",
                                        examples=[AGENCY])] = None,
    action: Annotated[str | None, Query(pattern=ID_PATTERN, description="only entries of this action",
                                        examples=["case.read"])] = None,
    # With its offset: a time without one is refused (422 naming it), not guessed to be UTC.
    since: Annotated[AwareDatetime | None, Query(description="recorded at or after (RFC 3339)",
                                                 examples=["2026-05-01T00:00:00Z"])] = None,
    until: Annotated[AwareDatetime | None, Query(description="recorded before (RFC 3339)",
                                                 examples=["2026-06-01T00:00:00Z"])] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many entries", examples=[50])] = 50,
    cursor: Annotated[Line | None, Query(max_length=32, description="the `next_cursor` of the previous page: the "
                                         "index of the last entry seen", examples=["1041"])] = None,
) -> dict[str, Any]:
    page = await audit.entries.find(
        limit=limit, cursor=cursor, case_id=case_id, agency=agency, actions=[action] if action else None,
        since=utc_bound(since) if since else None, until=utc_bound(until) if until else None,
    )
    return page.json()


@router.get("/cases/{case_id}/access", summary="Who read this case, when, why, under which consent",
            description="In the order the accesses happened (then by log index): the log holds records in the "
                        "order they arrived, which for records of one moment sent by different services may differ.",
            response_model=CaseAccess)
async def case_access(_: Auditor, audit: Audit, case_id: CaseId) -> dict[str, Any]:
    return await audit.entries.case_access(case_id)


@router.get("/cases/{case_id}/consents", summary="The consent history of this case (pseudonymous)",
            response_model=CaseConsents)
async def case_consents(_: Auditor, audit: Audit, case_id: CaseId) -> dict[str, Any]:
    return await audit.entries.case_consents(case_id)


@router.get("/checkpoint", summary="The latest signed checkpoint (signed now if the log grew), with cosignatures",
            responses={404: {"description": "With `cosigned`: no checkpoint has that many cosignatures yet."}},
            response_model=Checkpoint, openapi_extra=AUDITOR_OR_WITNESS)
async def checkpoint(
    _: AuditorOrWitness,
    audit: Audit,
    cosigned: Annotated[int | None, Query(ge=1, le=64, description=(
        "instead: the latest checkpoint at least this many witnesses cosigned (404 if none)"), examples=[1])] = None,
) -> dict[str, Any]:
    if cosigned is not None:
        return await audit.checkpoints.cosigned(cosigned)
    return await audit.checkpoints.sign()


@router.post("/checkpoints/{tree_size}/cosignatures", status_code=201,
             summary="A witness's cosignature of a checkpoint (C2SP tlog-cosignature)", response_model=Cosignature)
async def add_cosignature(
    _: Witness,
    audit: Audit,
    body: CosignatureIn,
    tree_size: Annotated[int, Path(ge=0, le=MAX_SIZE, description="the tree size of the checkpoint cosigned",
                                   examples=[TREE_SIZE])],
) -> dict[str, Any]:
    return await audit.checkpoints.add_cosignature(tree_size, body.cosignature)


@router.get("/proofs/inclusion", summary="RFC 9162 inclusion proof of one entry", response_model=InclusionProof)
async def inclusion(
    _: Auditor,
    audit: Audit,
    index: Annotated[int, Query(ge=0, le=MAX_SIZE, description="the entry to prove", examples=[1041])],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SIZE, description="default: the log's size",
                                           examples=[TREE_SIZE])] = None,
) -> dict[str, Any]:
    return await audit.proofs.inclusion(index, tree_size)


@router.get("/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes",
            response_model=ConsistencyProof, openapi_extra=AUDITOR_OR_WITNESS)
async def consistency(
    _: AuditorOrWitness,
    audit: Audit,
    first: Annotated[int, Query(ge=0, le=MAX_SIZE, description="the earlier tree size (at least 1)",
                                examples=[1000])],
    second: Annotated[int | None, Query(ge=0, le=MAX_SIZE, description="default: the log's size",
                                        examples=[TREE_SIZE])] = None,
) -> dict[str, Any]:
    return await audit.proofs.consistency(first, second)


@router.get("/verify", summary="Recompute the tree from the stored entries and compare (from the last verified "
                                "checkpoint on; ?full=true: from the start, rate-limited)",
            response_model=Verification,
            responses={429: {"description": "A full verification ran too recently; `Retry-After` says when."}})
async def verify(
    _: Auditor,
    audit: Audit,
    full: Annotated[bool, Query(description="recompute every entry, not only those since the last verification",
                                examples=[False])] = False,
) -> dict[str, Any]:
    return await audit.verification.verify(full=full)


@router.get("/public-key", summary="The checkpoint signing key, the earlier ones, and the log's witnesses",
            response_model=PublicKeys)
async def public_key(audit: Audit) -> dict[str, Any]:
    return audit.checkpoints.public_keys()
