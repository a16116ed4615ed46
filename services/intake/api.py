"""intake's HTTP routes: parse, authorise, call one use case, return its answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status

from services.intake import domain, schemas
from services.intake.deps import Deps, deps
from shared.auth import Principal, require_scopes
from shared.errors import Problem
from shared.idempotency import IdempotencyKey
from shared.text import Line

router = APIRouter(tags=["cases"])

PURPOSE_HEADER = "X-Purpose"
PURPOSES = sorted(domain.READ_PURPOSES)

#: X-Purpose as the document declares it: required. FastAPI's own parameter is hidden (``include_in_schema``) and
#: optional, so that a missing purpose stays the 400 ``purpose-required`` clients match on, not a 422.
PURPOSE_REQUIRED: dict[str, Any] = {"parameters": [{
    "name": PURPOSE_HEADER, "in": "header", "required": True,
    "description": "Why the caller reads the case's data (recorded with the access; a recipient's purpose must be "
                   "one its consent permits). Missing or blank: 400 `purpose-required`; not one of these: 400 "
                   "`invalid-purpose`.",
    "schema": {"type": "string", "enum": PURPOSES, "examples": ["case_management"]},
    "example": "case_management",
}]}

Uses = Annotated[Deps, Depends(deps)]
CaseWriter = Annotated[Principal, Depends(require_scopes("cases:write"))]
CaseReader = Annotated[Principal, Depends(require_scopes("cases:read"))]
ConsentWriter = Annotated[Principal, Depends(require_scopes("consent:write"))]
Clearer = Annotated[Principal, Depends(require_scopes("cases:clearance"))]


def read_purpose(
    # Documented by PURPOSE_REQUIRED (every route depending on this passes it as openapi_extra); checked here so
    # that a missing or unknown purpose is a 400.
    x_purpose: Annotated[str | None, Header(alias=PURPOSE_HEADER, include_in_schema=False)] = None,
) -> str:
    """Every read of case data names why (docs/domain.md rule 1); the purpose is recorded with the access."""
    if x_purpose is None or not x_purpose.strip():
        raise Problem(400, "purpose-required", f"The {PURPOSE_HEADER} header is required to read case data.",
                      errors=[{"loc": ["header", PURPOSE_HEADER], "msg": "required"}])
    if x_purpose not in domain.READ_PURPOSES:
        raise Problem(400, "invalid-purpose",
                      f"The {PURPOSE_HEADER} header must be one of: {', '.join(sorted(domain.READ_PURPOSES))}.",
                      errors=[{"loc": ["header", PURPOSE_HEADER], "msg": "not a known purpose"}])
    return x_purpose


CaseId = Annotated[str, Path(description="The case's id.", examples=[schemas.CASE_ID])]
ConsentId = Annotated[str, Path(description="The id of the consent version to withdraw (the current grant).",
                                examples=[schemas.CONSENT_ID])]
OverrideId = Annotated[str, Path(description="The risk-to-life override's id.", examples=[schemas.OVERRIDE_ID])]


@router.post("/cases", status_code=status.HTTP_201_CREATED, summary="Register a case (screening record)",
             response_model=schemas.CaseView, openapi_extra=PURPOSE_REQUIRED,
             responses={201: {"description": "The case, as its owner reads it", "headers": {"Idempotent-Replayed": {
                 "description": "`true` when this is the case an earlier request with the same Idempotency-Key "
                                "registered (absent otherwise).",
                 "required": False, "schema": {"type": "string", "enum": ["true"]}, "example": "true"}}},
                        422: {"description": "Not valid, or the Idempotency-Key was used for another request "
                                             "(`idempotency-key-reused`)"}})
async def register_case(
    body: schemas.CaseBody, principal: CaseWriter, purpose: Annotated[str, Depends(read_purpose)], uses: Uses,
    response: Response, idempotency_key: Annotated[IdempotencyKey | None, Header(
        alias="Idempotency-Key", description="Retry with the same key after a lost answer: the same case comes "
                                             "back (`Idempotent-Replayed: true`), not a second one. Printable "
                                             "ASCII, up to 255 characters.",
        examples=["registration-7d3f2a90-0001"])] = None,
) -> dict[str, Any]:
    # The answer carries the person back: like any read of case data, it names why (X-Purpose).
    view, replayed = await uses.cases.register(principal, body, purpose, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.get("/cases", summary="The caller's own cases (non-identifying summaries)", response_model=schemas.CaseList)
async def list_cases(
    principal: CaseReader, uses: Uses,
    status_: Annotated[domain.CaseStatus | None, Query(
        alias="status", description="Only cases with this status.", examples=["active"])] = None,
    trafficking_status: Annotated[domain.TraffickingStatus | None, Query(
        description="Only cases with this trafficking status.", examples=["possible"])] = None,
    needs: Annotated[domain.ServiceCode | None, Query(
        description="Only cases whose person needs this service.", examples=["shelter"])] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many cases in the page.",
                                examples=[50])] = 50,
    cursor: Annotated[Line | None, Query(max_length=200, description="The `next_cursor` of the previous page; "
                                                                     "absent: the first page.",
                                         examples=["Y2FzZTpjYXNlLTBhMWIyYzNkNGU1ZjYwNzE4MjkzYTRiNWM2ZDdlOGY5"])] = None,
) -> dict[str, Any]:
    return await uses.cases.list(principal, status=status_, trafficking_status=trafficking_status,
                                    needs=needs, limit=limit, cursor=cursor)


@router.get("/cases/{case_id}", summary="Read a case: the owner all of it, a recipient what its referral shares",
            response_model=schemas.CaseView, openapi_extra=PURPOSE_REQUIRED)
async def read_case(
    case_id: CaseId, principal: CaseReader, purpose: Annotated[str, Depends(read_purpose)], uses: Uses,
) -> dict[str, Any]:
    return await uses.reads.read(principal, case_id, purpose)


@router.patch("/cases/{case_id}", summary="Update a case (owner only), including child safeguards",
              response_model=schemas.CaseView, openapi_extra=PURPOSE_REQUIRED,
              responses={409: {"description": "The case was erased (`case-erased`)"}})
async def update_case(case_id: CaseId, patch: schemas.CasePatch, principal: CaseWriter,
                      purpose: Annotated[str, Depends(read_purpose)], uses: Uses) -> dict[str, Any]:
    return await uses.cases.update(principal, case_id, patch, purpose)


@router.post("/cases/{case_id}/erase", status_code=status.HTTP_202_ACCEPTED,
             summary="Crypto-shred the case's personal data", response_model=schemas.Erased)
async def erase_case(case_id: CaseId, principal: CaseWriter, uses: Uses) -> dict[str, Any]:
    return await uses.erasure.erase(principal, case_id)


@router.post("/cases/{case_id}/consents", status_code=status.HTTP_201_CREATED, tags=["consent"],
             summary="Record a new consent version", response_model=schemas.ConsentView,
             responses={409: {"description": "The case was erased (`case-erased`)"}})
async def grant_consent(case_id: CaseId, body: schemas.ConsentBody, principal: ConsentWriter,
                        uses: Uses) -> dict[str, Any]:
    return await uses.consents.grant(principal, case_id, body)


@router.get("/cases/{case_id}/consents", tags=["consent"], summary="Consent history (owner)",
            response_model=schemas.ConsentList, openapi_extra=PURPOSE_REQUIRED)
async def list_consents(case_id: CaseId, principal: CaseReader, purpose: Annotated[str, Depends(read_purpose)],
                        uses: Uses) -> dict[str, Any]:
    # Witnesses' names, capacity notes, withdrawal reasons: a read of personal data, for a named purpose.
    return await uses.consents.history(principal, case_id, purpose)


@router.post("/cases/{case_id}/consents/{consent_id}/withdraw", status_code=status.HTTP_201_CREATED,
             tags=["consent"], summary="Withdraw consent (a new version ending the current one)",
             response_model=schemas.ConsentView,
             responses={409: {"description": "Not the current consent (`consent-not-current`), or the case was "
                                             "erased"}})
async def withdraw_consent(
    case_id: CaseId, consent_id: ConsentId, principal: ConsentWriter, uses: Uses,
    body: schemas.WithdrawBody | None = None,
) -> dict[str, Any]:
    return await uses.consents.withdraw(principal, case_id, consent_id, body or schemas.WithdrawBody())


OverrideApprover = Annotated[Principal, Depends(require_scopes("overrides:approve"))]


@router.post("/cases/{case_id}/overrides", status_code=status.HTTP_201_CREATED, tags=["consent"],
             summary="Request a risk-to-life disclosure without consent (pending until a supervisor approves)",
             response_model=schemas.OverrideView,
             responses={403: {"description": "Not a person's own access token (`person-token-required`)"},
                        409: {"description": "The case was erased (`case-erased`)"}})
async def request_override(case_id: CaseId, body: schemas.OverrideBody, principal: CaseWriter,
                           uses: Uses) -> dict[str, Any]:
    return await uses.overrides.request(principal, case_id, body)


@router.get("/cases/{case_id}/overrides", tags=["consent"],
            summary="The case's risk-to-life overrides: who requested, approved, revoked each, and when (owner)",
            response_model=schemas.OverrideList)
async def list_overrides(case_id: CaseId, principal: CaseReader, uses: Uses) -> dict[str, Any]:
    return await uses.overrides.list(principal, case_id)


@router.post("/cases/{case_id}/overrides/{override_id}/approval", tags=["consent"],
             summary="Approve a requested override: a different person, a supervisor of the same agency",
             response_model=schemas.OverrideView,
             responses={403: {"description": "Not a person's own token (`person-token-required`), the requester "
                                             "(`self-approval`), not a supervisor (`supervisor-required`), or "
                                             "signed in without a second factor (`second-factor-required`)"},
                        409: {"description": "Not pending: `override-active`, `override-expired` or "
                                             "`override-revoked`"}})
async def approve_override(case_id: CaseId, override_id: OverrideId, principal: OverrideApprover,
                           uses: Uses) -> dict[str, Any]:
    return await uses.overrides.approve(principal, case_id, override_id)


@router.post("/cases/{case_id}/overrides/{override_id}/revocation", tags=["consent"],
             summary="Revoke an override (its requester or a supervisor): disclosure under it stops at once",
             response_model=schemas.OverrideView,
             responses={403: {"description": "Not a person's own token (`person-token-required`), or neither "
                                             "the requester nor a supervisor (`revoker-not-allowed`)"},
                        409: {"description": "Already `override-expired` or `override-revoked`"}})
async def revoke_override(case_id: CaseId, override_id: OverrideId, principal: CaseWriter,
                          uses: Uses) -> dict[str, Any]:
    return await uses.overrides.revoke(principal, case_id, override_id)


@router.post("/internal/clearance", tags=["internal"],
             summary="May this case be referred to that agency for these categories? (referral service)",
             response_model=schemas.Clearance, responses={404: {"description": "No such case"}})
async def clearance(body: schemas.ClearanceBody, principal: Clearer, uses: Uses) -> dict[str, Any]:
    return await uses.reads.clearance(body)
