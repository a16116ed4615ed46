"""intake's HTTP routes: parse, authorise, call one use case, return its answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status

from services.intake import domain, schemas
from services.intake.deps import Deps, deps
from shared.auth import Principal, require_scopes
from shared.errors import Problem
from shared.idempotency import IdempotencyKey
from shared.text import Line

router = APIRouter(tags=["cases"])

PURPOSE_HEADER = "X-Purpose"



Uses = Annotated[Deps, Depends(deps)]
CaseWriter = Annotated[Principal, Depends(require_scopes("cases:write"))]
CaseReader = Annotated[Principal, Depends(require_scopes("cases:read"))]
ConsentWriter = Annotated[Principal, Depends(require_scopes("consent:write"))]
Clearer = Annotated[Principal, Depends(require_scopes("cases:clearance"))]


def read_purpose(
    # Declared as an enumeration for integrators; checked here so that a missing or unknown purpose is a 400.
    x_purpose: Annotated[str | None, Header(alias=PURPOSE_HEADER,
                                            json_schema_extra={"enum": sorted(domain.READ_PURPOSES)})] = None,
) -> str:
    """Every read of case data names why (ARCHITECTURE.md); the purpose is recorded with the access."""
    if x_purpose is None or not x_purpose.strip():
        raise Problem(400, "purpose-required", f"The {PURPOSE_HEADER} header is required to read case data.",
                      errors=[{"loc": ["header", PURPOSE_HEADER], "msg": "required"}])
    if x_purpose not in domain.READ_PURPOSES:
        raise Problem(400, "invalid-purpose",
                      f"The {PURPOSE_HEADER} header must be one of: {', '.join(sorted(domain.READ_PURPOSES))}.",
                      errors=[{"loc": ["header", PURPOSE_HEADER], "msg": "not a known purpose"}])
    return x_purpose


# Printable ASCII, as referral's POST /referrals takes it.


@router.post("/cases", status_code=status.HTTP_201_CREATED, summary="Register a case (screening record)",
             responses={422: {"description": "Not valid, or the Idempotency-Key was used for another request "
                                             "(`idempotency-key-reused`)"}})
async def register_case(
    body: schemas.CaseBody, principal: CaseWriter, purpose: Annotated[str, Depends(read_purpose)], uses: Uses,
    response: Response, idempotency_key: Annotated[IdempotencyKey | None, Header(
        alias="Idempotency-Key", description="Retry with the same key after a lost answer: the same case comes "
                                             "back (`Idempotent-Replayed: true`), not a second one.")] = None,
) -> dict[str, Any]:
    # The answer carries the person back: like any read of case data, it names why (X-Purpose).
    view, replayed = await uses.cases.register(principal, body, purpose, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.get("/cases", summary="The caller's own cases (non-identifying summaries)")
async def list_cases(
    principal: CaseReader, uses: Uses,
    status_: Annotated[domain.CaseStatus | None, Query(alias="status")] = None,
    trafficking_status: domain.TraffickingStatus | None = None,
    needs: domain.ServiceCode | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Line | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    return await uses.cases.list(principal, status=status_, trafficking_status=trafficking_status,
                                    needs=needs, limit=limit, cursor=cursor)


@router.get("/cases/{case_id}", summary="Read a case: the owner all of it, a recipient what its referral shares")
async def read_case(
    case_id: str, principal: CaseReader, purpose: Annotated[str, Depends(read_purpose)], uses: Uses,
) -> dict[str, Any]:
    return await uses.reads.read(principal, case_id, purpose)


@router.patch("/cases/{case_id}", summary="Update a case (owner only), including child safeguards",
              responses={409: {"description": "The case was erased (`case-erased`)"}})
async def update_case(case_id: str, patch: schemas.CasePatch, principal: CaseWriter,
                      purpose: Annotated[str, Depends(read_purpose)], uses: Uses) -> dict[str, Any]:
    return await uses.cases.update(principal, case_id, patch, purpose)


@router.post("/cases/{case_id}/erase", status_code=status.HTTP_202_ACCEPTED,
             summary="Crypto-shred the case's personal data")
async def erase_case(case_id: str, principal: CaseWriter, uses: Uses) -> dict[str, Any]:
    return await uses.erasure.erase(principal, case_id)


@router.post("/cases/{case_id}/consents", status_code=status.HTTP_201_CREATED, tags=["consent"],
             summary="Record a new consent version",
             responses={409: {"description": "The case was erased (`case-erased`)"}})
async def grant_consent(case_id: str, body: schemas.ConsentBody, principal: ConsentWriter,
                        uses: Uses) -> dict[str, Any]:
    return await uses.consents.grant(principal, case_id, body)


@router.get("/cases/{case_id}/consents", tags=["consent"], summary="Consent history (owner)")
async def list_consents(case_id: str, principal: CaseReader, purpose: Annotated[str, Depends(read_purpose)],
                        uses: Uses) -> dict[str, Any]:
    # Witnesses' names, capacity notes, withdrawal reasons: a read of personal data, for a named purpose.
    return await uses.consents.history(principal, case_id, purpose)


@router.post("/cases/{case_id}/consents/{consent_id}/withdraw", status_code=status.HTTP_201_CREATED,
             tags=["consent"], summary="Withdraw consent (a new version ending the current one)",
             responses={409: {"description": "Not the current consent (`consent-not-current`), or the case was "
                                             "erased"}})
async def withdraw_consent(
    case_id: str, consent_id: str, principal: ConsentWriter, uses: Uses, body: schemas.WithdrawBody | None = None,
) -> dict[str, Any]:
    return await uses.consents.withdraw(principal, case_id, consent_id, body or schemas.WithdrawBody())


OverrideApprover = Annotated[Principal, Depends(require_scopes("overrides:approve"))]


@router.post("/cases/{case_id}/overrides", status_code=status.HTTP_201_CREATED, tags=["consent"],
             summary="Request a risk-to-life disclosure without consent (pending until a supervisor approves)",
             responses={403: {"description": "Not a person's own access token (`person-token-required`)"},
                        409: {"description": "The case was erased (`case-erased`)"}})
async def request_override(case_id: str, body: schemas.OverrideBody, principal: CaseWriter,
                           uses: Uses) -> dict[str, Any]:
    return await uses.overrides.request(principal, case_id, body)


@router.get("/cases/{case_id}/overrides", tags=["consent"],
            summary="The case's risk-to-life overrides: who requested, approved, revoked each, and when (owner)")
async def list_overrides(case_id: str, principal: CaseReader, uses: Uses) -> dict[str, Any]:
    return await uses.overrides.list(principal, case_id)


@router.post("/cases/{case_id}/overrides/{override_id}/approval", tags=["consent"],
             summary="Approve a requested override: a different person, a supervisor of the same agency",
             responses={403: {"description": "Not a person's own token (`person-token-required`), the requester "
                                             "(`self-approval`), not a supervisor (`supervisor-required`), or "
                                             "signed in without a second factor (`second-factor-required`)"},
                        409: {"description": "Not pending: `override-active`, `override-expired` or "
                                             "`override-revoked`"}})
async def approve_override(case_id: str, override_id: str, principal: OverrideApprover,
                           uses: Uses) -> dict[str, Any]:
    return await uses.overrides.approve(principal, case_id, override_id)


@router.post("/cases/{case_id}/overrides/{override_id}/revocation", tags=["consent"],
             summary="Revoke an override (its requester or a supervisor): disclosure under it stops at once",
             responses={403: {"description": "Not a person's own token (`person-token-required`), or neither "
                                             "the requester nor a supervisor (`revoker-not-allowed`)"},
                        409: {"description": "Already `override-expired` or `override-revoked`"}})
async def revoke_override(case_id: str, override_id: str, principal: CaseWriter, uses: Uses) -> dict[str, Any]:
    return await uses.overrides.revoke(principal, case_id, override_id)


@router.post("/internal/clearance", tags=["internal"],
             summary="May this case be referred to that agency for these categories? (referral service)",
             responses={404: {"description": "No such case"}})
async def clearance(body: schemas.ClearanceBody, principal: Clearer, uses: Uses) -> dict[str, Any]:
    return await uses.reads.clearance(body)
