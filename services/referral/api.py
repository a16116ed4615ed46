"""referral's HTTP routes: read the request (models in ``schemas.py``), authorise, call one use case of
``Deps``, answer."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from services.referral import domain
from services.referral.deps import Deps, deps
from services.referral.schemas import (
    CASE_ID,
    REFERRAL_ID,
    SUBSCRIPTION_ID,
    AgencyIndicators,
    CreateReferral,
    DeliveryPage,
    EventFeed,
    Id,
    NewSubscription,
    ReferralPage,
    ReferralWithHistory,
    Statistics,
    Subscription,
    SubscriptionList,
    SubscriptionSecret,
    SuggestionList,
    Taxonomy,
    Transition,
)
from services.referral.service import NewReferralRequest
from shared import geo, pagination, reference
from shared.auth import Principal, any_scope_security, require_any_scope, require_scopes
from shared.errors import Problem, invalid
from shared.idempotency import IdempotencyKey
from shared.text import Line

__all__ = ["CreateReferral", "NewSubscription", "Transition", "router"]  # the models live in schemas.py

router = APIRouter(tags=["referrals"])

Writer = Annotated[Principal, Depends(require_scopes("referrals:write"))]
Reader = Annotated[Principal, Depends(require_scopes("referrals:read"))]
EventReader = Annotated[Principal, Depends(require_scopes("events:read"))]


# An agency's system (events:read) or its agency admin signed in (webhooks:admin, issue #21) manages the agency's
# subscriptions; the service keeps each to its own agency.
WebhookManager = Annotated[Principal, Depends(require_any_scope("events:read", "webhooks:admin"))]
#: How the subscription routes say so in OpenAPI: either scope is enough (one requirement each).
WEBHOOK_MANAGER = any_scope_security("events:read", "webhooks:admin")
# Platform statistics are for oversight agencies only (the registry grants stats:read to no other kind).
StatsReader = Annotated[Principal, Depends(require_scopes("stats:read"))]
Injected = Annotated[Deps, Depends(deps)]
ReferralId = Annotated[Id, Path(description="The referral's id.", examples=[REFERRAL_ID])]
SubscriptionId = Annotated[Id, Path(description="The subscription's id.", examples=[SUBSCRIPTION_ID])]
#: The answer headers of a creation (OpenAPI header objects).
LOCATION = {"description": "The path of the resource created (or, on a replay, created the first time).",
            "required": True, "schema": {"type": "string"}}


@router.post("/referrals", status_code=201, summary="Refer a case to an agency or a registry service",
             response_model=ReferralWithHistory,
             responses={201: {"headers": {
                            "Location": LOCATION | {"example": f"/referrals/{REFERRAL_ID}"},
                            "Idempotent-Replayed": {
                                "description": "`true` when this answers a retry with the same `Idempotency-Key`: "
                                               "the referral was created by the first request, not this one.",
                                "required": False, "schema": {"type": "string", "enum": ["true"]},
                                "example": "true"}}},
                        404: {"description": "No such case, or not one the caller may refer"},
                        409: {"description": "A guard refused the referral; `type` ends with the guard "
                                            "(`consent-missing`, `child-bia-missing`, `non-refoulement`, ...)"}})
async def create_referral(
    body: CreateReferral, principal: Writer, deps: Injected, response: Response,
    idempotency_key: Annotated[IdempotencyKey | None, Header(
        alias="Idempotency-Key", description="A key of the caller's choosing: a retry with the same key and request "
        "gets the first answer again instead of a second referral.", examples=["2b7f4c1e-referral-0001"])] = None,
) -> dict[str, Any]:
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise invalid(["body", "idempotency_key"], "differs from the header",
                      detail="The Idempotency-Key header and field differ.")
    request = NewReferralRequest(
        case_id=body.case_id, to_agency=body.to_agency, service_id=body.service_id, pathway=body.pathway,
        service_type=body.service_type, priority=body.priority, reason=body.reason,
        shared_categories=body.shared_categories)
    view, replayed = await deps.referrals.create(principal, request, idempotency_key or body.idempotency_key)
    response.headers["Location"] = f"/referrals/{view['id']}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.get("/referrals", summary="Work queues: referrals sent or received", response_model=ReferralPage)
async def list_referrals(
    principal: Reader, deps: Injected,
    role: Annotated[Literal["sent", "received"] | None, Query(
        description="`sent`: the referrals the caller sent; `received`: those it received; omit for both.",
        examples=["received"])] = None,
    status: Annotated[domain.Status | None, Query(description="Only referrals in this state.",
                                                  examples=["requested"])] = None,
    pathway: Annotated[domain.Pathway | None, Query(description="Only referrals of this pathway.",
                                                    examples=["protection"])] = None,
    overdue: Annotated[bool | None, Query(description="`true`: only overdue referrals; `false`: only the others.",
                                          examples=[True])] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many referrals.", examples=[50])] = 50,
    cursor: pagination.CursorParam = None,
) -> dict[str, Any]:
    items, next_cursor = await deps.referrals.queue(principal, role=role, status=status, pathway=pathway,
                                               overdue=overdue, limit=limit,
                                               after=pagination.decode_int("referral", cursor))
    return {"items": items, "next_cursor": next_cursor}


_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def _query_problem(name: str, detail: str) -> Problem:
    return invalid(["query", name], detail, detail=detail)


@router.get("/referrals/suggestions", summary="Registry services ranked for a need", response_model=SuggestionList)
async def suggestions(
    principal: Reader, deps: Injected,
    service_type: Annotated[Taxonomy, Query(description="The service taxonomy code needed (related codes of its "
                                                        "family rank lower).", examples=["shelter"])],
    case_id: Annotated[Id | None, Query(description="The case: leaves out agencies the caller already has an open "
                                                    "referral of it with.", examples=[CASE_ID])] = None,
    languages: Annotated[Line | None, Query(max_length=200, description="comma-separated ISO 639 codes",
                                            examples=["en,fr"])] = None,
    child: Annotated[bool | None, Query(description="`true`: the person is a child (services taking children rank "
                                                    "higher).", examples=[False])] = None,
    country: Annotated[Line | None, Query(description="ISO 3166-1 alpha-2 country where the service is needed.",
                                          examples=["BE"])] = None,
    near: Annotated[Line | None, Query(max_length=64, description="lat,lon", examples=["50.85,4.35"])] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many services.", examples=[20])] = 20,
) -> dict[str, Any]:
    spoken = frozenset(code.strip().lower() for code in (languages or "").split(",") if code.strip())
    if any(not _LANGUAGE.match(code) for code in spoken):
        raise _query_problem("languages", "languages must be comma-separated ISO 639 codes.")
    if country is not None and not reference.is_country(country):
        raise _query_problem("country", "country must be an ISO 3166-1 alpha-2 code.")
    point = None
    if near is not None:
        try:
            point = geo.parse_near(near)
        except ValueError as exc:
            raise _query_problem("near", f"{exc}.") from None
    need = domain.Need(service_type=service_type, languages=spoken, is_child=child, country=country, near=point)
    return {"items": await deps.suggestions.suggest(principal, need, case_id=case_id, limit=limit), "next_cursor": None}


@router.get("/referrals/{referral_id}", summary="One referral with its history (sender or recipient only)",
            response_model=ReferralWithHistory)
async def get_referral(referral_id: ReferralId, principal: Reader, deps: Injected) -> dict[str, Any]:
    return await deps.referrals.get(principal, referral_id)


@router.post("/referrals/{referral_id}/transitions", summary="Move a referral along its lifecycle",
             response_model=ReferralWithHistory,
             responses={409: {"description": "Not a move the caller may make now (`invalid-transition`)"}})
async def move_referral(referral_id: ReferralId, body: Transition, principal: Writer, deps: Injected) -> dict[str, Any]:
    return await deps.referrals.transition(principal, referral_id, body.to, body.reason_code, body.note)


@router.get("/events", tags=["delivery"], summary="Pull feed of the caller's referral events (long-poll)",
            response_model=EventFeed,
            responses={429: {"description": "The agency already has as many waiting requests as allowed "
                                            "(`too-many-waiting-polls`); retry after `Retry-After`"}})
async def pull_events(
    principal: EventReader, deps: Injected,
    after: Annotated[str, Query(pattern=r"^[0-9]{1,18}$", description="Read the events after this position: the "
                                "`next_cursor` of the previous answer (`0`: from the start).", examples=["1042"])
                     ] = "0",
    wait: Annotated[float, Query(ge=0, description="Seconds to wait for an event when there is none yet (long-poll; "
                                                   "the service caps it).", examples=[25])] = 0.0,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many events.", examples=[100])] = 100,
) -> dict[str, Any]:
    items, cursor = await deps.feed.pull(principal, after=int(after), wait=wait, limit=limit)
    return {"items": items, "next_cursor": cursor}


@router.get("/stats", tags=["statistics"], response_model=Statistics,
            summary="De-identified indicators of a closed month or quarter (oversight agencies)",
            description="Referrals by pathway and by sending and receiving agency, with and without consent; per "
                        "pathway decisions, acceptance rate, acknowledgements within the deadline, overdue flags and "
                        "median hours to acknowledge and to accept. Every count under 11 -- and as many others as "
                        "it takes so that none can be worked out from totals or from other periods -- shows as "
                        "`\"suppressed\"`; a quarter publishes only what all three of its months publish.")
async def stats(
    request: Request, principal: StatsReader, deps: Injected,
    period: Annotated[Line, Query(max_length=16, description="a calendar month (2026-11) or quarter (2026-Q3) "
                                                            "that has ended, UTC", examples=["2026-Q3"])],
) -> dict[str, Any]:
    # A caller still sending since/until is refused (shared.app refuses undeclared query parameters), not
    # answered with another period than it asked for.
    return await deps.statistics.stats(period)


@router.get("/indicators", tags=["statistics"], response_model=AgencyIndicators,
            summary="The calling agency's own indicators, month by month",
            description="For each calendar month (UTC) from `from` to `to`: the referrals the caller's agency sent "
                        "and received; how many of each were accepted, declined (`rejected`), cancelled and "
                        "completed in the month; the acceptance rate (accepted / decided); for those it received, "
                        "how many it acknowledged and the median hours from sending to acknowledgement and to "
                        "acceptance; and the reason codes of the rejections, both ways. Always the agency the token "
                        "names (its system, or any of its people): there is no agency parameter. Counts, rates, "
                        "medians and reason codes only -- no case, person, free text or other agency -- about "
                        "referrals the agency may already read one by one, so no count is suppressed: unlike "
                        "`/stats`, this publishes nothing to anyone the referrals are not already shown to, and "
                        "hiding a small count would only make the agency's own figures wrong. Ended months never "
                        "change; the current month is `complete: false`.")
async def indicators(
    principal: Reader, deps: Injected,
    first: Annotated[Line | None, Query(alias="from", max_length=16, description="The first month, `YYYY-MM` "
                                        "(default: 11 months before `to`). At most 24 months from `from` to `to`.",
                                        examples=["2026-01"])] = None,
    last: Annotated[Line | None, Query(alias="to", max_length=16, description="The last month, `YYYY-MM`: an ended "
                                       "month or the current one (default: the current one).",
                                       examples=["2026-12"])] = None,
) -> dict[str, Any]:
    return await deps.indicators.of_agency(principal, first, last)


# --- webhooks -----------------------------------------------------------------------------------------------

@router.post("/subscriptions", status_code=201, tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
             summary="Subscribe a webhook to the caller's referral events (Standard Webhooks signatures)",
             response_model=SubscriptionSecret,
             responses={201: {"headers": {"Location": LOCATION | {"example": f"/subscriptions/{SUBSCRIPTION_ID}"}}},
                        409: {"description": "The agency has as many subscriptions as allowed"}})
async def subscribe(body: NewSubscription, principal: WebhookManager, deps: Injected,
                    response: Response) -> dict[str, Any]:
    view = await deps.subscriptions.create(principal, str(body.url), body.event_types)
    response.headers["Location"] = f"/subscriptions/{view['id']}"
    return view


@router.get("/subscriptions", tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
            summary="The caller's webhook subscriptions",
            response_model=SubscriptionList)
async def list_subscriptions(principal: WebhookManager, deps: Injected) -> dict[str, Any]:
    return {"items": await deps.subscriptions.of_agency(principal), "next_cursor": None}


@router.get("/subscriptions/{subscription_id}", tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
            summary="One subscription (no secret)",
            response_model=Subscription)
async def get_subscription(subscription_id: SubscriptionId, principal: WebhookManager,
                           deps: Injected) -> dict[str, Any]:
    return await deps.subscriptions.get(principal, subscription_id)


@router.delete("/subscriptions/{subscription_id}", status_code=204, tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
               summary="Stop delivering to a webhook")
async def delete_subscription(subscription_id: SubscriptionId, principal: WebhookManager,
                              deps: Injected) -> Response:
    await deps.subscriptions.delete(principal, subscription_id)
    return Response(status_code=204)


@router.post("/subscriptions/{subscription_id}/reactivate", tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
             summary="Resume a subscription disabled after repeated failures, where it stopped",
             response_model=Subscription)
async def reactivate_subscription(subscription_id: SubscriptionId, principal: WebhookManager,
                                  deps: Injected) -> dict[str, Any]:
    return await deps.subscriptions.reactivate(principal, subscription_id)


@router.post("/subscriptions/{subscription_id}/rotate-secret", tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
             summary="A new signing secret; the old one keeps signing for a grace period",
             response_model=SubscriptionSecret,
             responses={503: {"description": "referral's master key is not configured "
                                             "(`master-key-unavailable`)"}})
async def rotate_subscription_secret(subscription_id: SubscriptionId, principal: WebhookManager,
                                     deps: Injected) -> dict[str, Any]:
    """Every delivery carries a signature with each valid secret (Standard Webhooks), so a receiver can
    switch to the new secret at any time before ``previous_secret_valid_until``."""
    return await deps.subscriptions.rotate_secret(principal, subscription_id)


@router.get("/subscriptions/{subscription_id}/deliveries", tags=["delivery"], openapi_extra=WEBHOOK_MANAGER,
            summary="The delivery log of a subscription", response_model=DeliveryPage)
async def deliveries(
    subscription_id: SubscriptionId, principal: WebhookManager, deps: Injected,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many deliveries.", examples=[50])] = 50,
    cursor: pagination.CursorParam = None,
) -> dict[str, Any]:
    items, next_cursor = await deps.subscriptions.deliveries(principal, subscription_id, limit=limit,
                                                        after=pagination.decode_int("delivery", cursor))
    return {"items": items, "next_cursor": next_cursor}
