"""Each RefNet operation as a request and the model its answer becomes: written once, sent by both clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from refnet_client.models import (
    AgencyIndicators,
    AuditEntry,
    Case,
    CaseAccess,
    CaseEntries,
    Checkpoint,
    Consent,
    ConsistencyProof,
    DataCategory,
    Delivery,
    FeedEvent,
    InclusionProof,
    LogKey,
    Page,
    Purpose,
    Referral,
    Service,
    Subscription,
)

T = TypeVar("T")
ServiceName = Literal["registry", "intake", "referral", "audit"]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    service: ServiceName
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True


def _segment(value: str) -> str:
    """An id as one path segment: quoted, so that no id can reach another path."""
    return quote(str(value), safe="")


def _query(**params: Any) -> dict[str, Any]:
    """The parameters given (None: not sent; a boolean as RefNet's queries write it)."""
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


def _nothing(_: Any) -> None:
    return None


# --- intake: cases and consent -----------------------------------------------------------------------------


def create_case(person: dict[str, Any], screening: dict[str, Any], *, purpose: Purpose = "case_management",
                idempotency_key: str | None = None) -> Call[Case]:
    # The answer carries the person back: like any read of case data, it names why (X-Purpose).
    headers = {"X-Purpose": purpose} | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
    return Call("POST", "intake", "/cases", Case.model_validate, json={"person": person, "screening": screening},
                headers=headers)


def read_case(case_id: str, *, purpose: Purpose) -> Call[Case]:
    return Call("GET", "intake", f"/cases/{_segment(case_id)}", Case.model_validate, headers={"X-Purpose": purpose})


def record_consent(case_id: str, consent: dict[str, Any]) -> Call[Consent]:
    return Call("POST", "intake", f"/cases/{_segment(case_id)}/consents", Consent.model_validate, json=consent)


def consents(case_id: str, *, purpose: Purpose = "case_management") -> Call[Page[Consent]]:
    return Call("GET", "intake", f"/cases/{_segment(case_id)}/consents", Page[Consent].model_validate,
                headers={"X-Purpose": purpose})


def withdraw_consent(case_id: str, consent_id: str, *, reason: str | None = None) -> Call[Consent]:
    return Call("POST", "intake", f"/cases/{_segment(case_id)}/consents/{_segment(consent_id)}/withdraw",
                Consent.model_validate, json={"reason": reason} if reason else {})


# --- referral: referrals, the pull feed, webhook subscriptions ---------------------------------------------


def create_referral(case_id: str, *, pathway: str, priority: str, reason: str,
                    shared_categories: Sequence[DataCategory], to_agency: str | None = None,
                    service_type: str | None = None, service_id: str | None = None,
                    idempotency_key: str | None = None) -> Call[Referral]:
    body = {"case_id": case_id, "to_agency": to_agency, "service_id": service_id, "pathway": pathway,
            "service_type": service_type, "priority": priority, "reason": reason,
            "shared_categories": list(shared_categories)}
    # Without a key of the caller's, a fresh one: a retry of this very call cannot make a second referral.
    key = idempotency_key or f"refnet-client-{uuid.uuid4().hex}"
    return Call("POST", "referral", "/referrals", Referral.model_validate,
                json={k: v for k, v in body.items() if v is not None}, headers={"Idempotency-Key": key})


def referrals(*, role: Literal["sent", "received"] = "received", status: str | None = None,
              pathway: str | None = None, overdue: bool | None = None, limit: int = 50,
              cursor: str | None = None) -> Call[Page[Referral]]:
    return Call("GET", "referral", "/referrals", Page[Referral].model_validate,
                params=_query(role=role, status=status, pathway=pathway, overdue=overdue, limit=limit, cursor=cursor))


def referral(referral_id: str) -> Call[Referral]:
    return Call("GET", "referral", f"/referrals/{_segment(referral_id)}", Referral.model_validate)


def transition(referral_id: str, to: str, *, reason_code: str | None = None,
               note: str | None = None) -> Call[Referral]:
    body = {"to": to, "reason_code": reason_code, "note": note}
    return Call("POST", "referral", f"/referrals/{_segment(referral_id)}/transitions", Referral.model_validate,
                json={k: v for k, v in body.items() if v is not None})


def events(*, after: str = "0", wait: float = 0, limit: int = 100) -> Call[Page[FeedEvent]]:
    return Call("GET", "referral", "/events", Page[FeedEvent].model_validate,
                params=_query(after=after, wait=wait, limit=limit))


def subscribe(url: str, event_types: Sequence[str] | None = None) -> Call[Subscription]:
    body: dict[str, Any] = {"url": url} | ({"event_types": list(event_types)} if event_types is not None else {})
    return Call("POST", "referral", "/subscriptions", Subscription.model_validate, json=body)


def subscriptions() -> Call[Page[Subscription]]:
    return Call("GET", "referral", "/subscriptions", Page[Subscription].model_validate)


def subscription(subscription_id: str) -> Call[Subscription]:
    return Call("GET", "referral", f"/subscriptions/{_segment(subscription_id)}", Subscription.model_validate)


def unsubscribe(subscription_id: str) -> Call[None]:
    return Call("DELETE", "referral", f"/subscriptions/{_segment(subscription_id)}", _nothing)


def rotate_secret(subscription_id: str) -> Call[Subscription]:
    return Call("POST", "referral", f"/subscriptions/{_segment(subscription_id)}/rotate-secret",
                Subscription.model_validate)


def deliveries(subscription_id: str, *, limit: int = 50, cursor: str | None = None) -> Call[Page[Delivery]]:
    return Call("GET", "referral", f"/subscriptions/{_segment(subscription_id)}/deliveries",
                Page[Delivery].model_validate, params=_query(limit=limit, cursor=cursor))


def indicators(*, from_month: str | None = None, to_month: str | None = None) -> Call[AgencyIndicators]:
    """``from_month`` and ``to_month`` are months, ``YYYY-MM`` (sent as ``from`` and ``to``)."""
    return Call("GET", "referral", "/indicators", AgencyIndicators.model_validate,
                params=_query(**{"from": from_month, "to": to_month}))


# --- registry: the service directory -----------------------------------------------------------------------


def services(*, taxonomy: str | None = None, country: str | None = None, language: str | None = None,
             accepts_children: bool | None = None, accepting: bool | None = None, near: str | None = None,
             radius_km: float | None = None, q: str | None = None, limit: int = 20, cursor: str | None = None,
             accept_language: str | None = None) -> Call[Page[Service]]:
    return Call("GET", "registry", "/services", Page[Service].model_validate,
                params=_query(taxonomy=taxonomy, country=country, language=language,
                              accepts_children=accepts_children, accepting=accepting, near=near,
                              radius_km=radius_km, q=q, limit=limit, cursor=cursor),
                headers={"Accept-Language": accept_language} if accept_language else {})


def service(service_id: str, *, accept_language: str | None = None) -> Call[Service]:
    return Call("GET", "registry", f"/services/{_segment(service_id)}", Service.model_validate,
                headers={"Accept-Language": accept_language} if accept_language else {})


def jwks() -> Call[dict[str, Any]]:
    return Call("GET", "registry", "/.well-known/jwks.json", dict, authenticated=False)


# --- audit: what an auditor asks ---------------------------------------------------------------------------


def case_access(case_id: str) -> Call[CaseAccess]:
    return Call("GET", "audit", f"/audit/cases/{_segment(case_id)}/access", CaseAccess.model_validate)


def case_consent_entries(case_id: str) -> Call[CaseEntries]:
    return Call("GET", "audit", f"/audit/cases/{_segment(case_id)}/consents", CaseEntries.model_validate)


def audit_entries(*, case_id: str | None = None, agency: str | None = None, action: str | None = None,
                  since: str | None = None, until: str | None = None, limit: int = 100,
                  cursor: str | None = None) -> Call[Page[AuditEntry]]:
    return Call("GET", "audit", "/audit/entries", Page[AuditEntry].model_validate,
                params=_query(case_id=case_id, agency=agency, action=action, since=since, until=until, limit=limit,
                              cursor=cursor))


def checkpoint() -> Call[Checkpoint]:
    return Call("GET", "audit", "/audit/checkpoint", Checkpoint.model_validate)


def inclusion_proof(index: int, *, tree_size: int | None = None) -> Call[InclusionProof]:
    return Call("GET", "audit", "/audit/proofs/inclusion", InclusionProof.model_validate,
                params=_query(index=index, tree_size=tree_size))


def consistency_proof(first: int, *, second: int | None = None) -> Call[ConsistencyProof]:
    return Call("GET", "audit", "/audit/proofs/consistency", ConsistencyProof.model_validate,
                params=_query(first=first, second=second))


def log_key() -> Call[LogKey]:
    return Call("GET", "audit", "/audit/public-key", LogKey.model_validate, authenticated=False)
