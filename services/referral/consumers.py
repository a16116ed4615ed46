"""Handlers of other services' events: the registry read model, and the cancellations that a consent
withdrawn or narrowed by a new version, agency suspension and case erasure require (docs/domain.md rule 2)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral import domain, events
from services.referral.domain import OPEN_STATES
from services.referral.service import Referrals, known_consent
from services.referral.store import (
    case_consent,
    lock_case,
    open_referrals,
    record_case_consent,
    record_erased_case,
    record_withdrawn_consent,
    shred_case,
    upsert_agency,
    upsert_service,
)
from shared.consumer import Handler, PoisonEvent
from shared.envelope import Event

Model = TypeVar("Model", bound=BaseModel)
_OPEN = [str(s) for s in OPEN_STATES]


def _parse(model: type[Model], event: Event) -> Model:
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        # The event can never be applied: dead-letter it (the error names fields, not values).
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        raise PoisonEvent(f"{event.short_type} payload invalid: {fields}") from None


def registry_handlers(referrals: Referrals) -> Mapping[str, Handler]:
    async def agency_changed(session: AsyncSession, event: Event) -> None:
        agency = _parse(events.AgencyChanged, event)
        await upsert_agency(session, agency.model_dump())
        if agency.status == "suspended":
            rows = await open_referrals(session, open_states=_OPEN, to_agency=agency.agency_id)
            await referrals.cancel_by_system(session, rows, "recipient-suspended")

    async def service_changed(session: AsyncSession, event: Event) -> None:
        svc = _parse(events.ServiceChanged, event)
        status = "withdrawn" if event.short_type == events.SERVICE_WITHDRAWN else svc.status
        await upsert_service(session, {
            "service_id": svc.service_id, "agency_id": svc.agency_id, "taxonomy": svc.taxonomy, "status": status,
            "countries": svc.countries, "languages": svc.languages, "accepts_children": svc.accepts_children,
            "capacity_available": svc.capacity.available, "capacity_total": svc.capacity.total,
            "capacity_status": svc.capacity.status,
            "lat": svc.location.lat if svc.location else None, "lon": svc.location.lon if svc.location else None,
        })

    return {
        events.AGENCY_REGISTERED: agency_changed,
        events.AGENCY_UPDATED: agency_changed,
        events.AGENCY_SUSPENDED: agency_changed,
        events.SERVICE_PUBLISHED: service_changed,
        events.SERVICE_UPDATED: service_changed,
        events.SERVICE_WITHDRAWN: service_changed,
        events.SERVICE_CAPACITY_CHANGED: service_changed,
    }


def intake_handlers(referrals: Referrals) -> Mapping[str, Handler]:
    async def cancel_unconsented(session: AsyncSession, case_id: str, consent: domain.KnownConsent | None,
                                 at: datetime) -> None:
        """Cancel the case's open referrals that the consent now in force (whatever version they were made
        under) no longer covers (docs/domain.md rule 2)."""
        rows = await open_referrals(session, open_states=_OPEN, case_id=case_id)
        gone = set(domain.no_longer_consented(
            consent, [domain.OpenReferral(r.id, r.to_agency, tuple(r.shared_categories), r.consent_id)
                      for r in rows], at))
        await referrals.cancel_by_system(session, [r for r in rows if r.id in gone], "consent-withdrawn")

    async def consent_granted(session: AsyncSession, event: Event) -> None:
        granted = _parse(events.ConsentGranted, event)
        await lock_case(session, granted.case_id)
        await record_case_consent(
            session, case_id=granted.case_id, consent_id=granted.consent_id, version=granted.consent_version,
            kind="grant", provisions=[p.model_dump() for p in granted.provisions], valid_from=granted.valid_from,
            valid_until=granted.valid_until)
        # The latest version we know decides (this one, unless a later one came first).
        known = known_consent(await case_consent(session, granted.case_id))
        await cancel_unconsented(session, granted.case_id, known, referrals.clock())

    async def consent_withdrawn(session: AsyncSession, event: Event) -> None:
        withdrawn = _parse(events.ConsentWithdrawn, event)
        await lock_case(session, withdrawn.case_id)
        await record_withdrawn_consent(session, withdrawn.consent_id, withdrawn.case_id)
        known = None  # a withdrawal leaves no consent in force
        if withdrawn.consent_version is not None:
            await record_case_consent(
                session, case_id=withdrawn.case_id, consent_id=withdrawn.consent_id,
                version=withdrawn.consent_version, kind="withdrawal", provisions=[], valid_from=None,
                valid_until=None)
            known = known_consent(await case_consent(session, withdrawn.case_id))
        await cancel_unconsented(session, withdrawn.case_id, known, referrals.clock())

    async def case_erased(session: AsyncSession, event: Event) -> None:
        erased = _parse(events.CaseErased, event)
        await lock_case(session, erased.case_id)
        await record_erased_case(session, erased.case_id)
        await shred_case(session, erased.case_id)  # crypto-shredding: the free text goes with the key
        rows = await open_referrals(session, open_states=_OPEN, case_id=erased.case_id)
        await referrals.cancel_by_system(session, rows, "case-erased")

    return {events.CONSENT_GRANTED: consent_granted, events.CONSENT_WITHDRAWN: consent_withdrawn,
            events.CASE_ERASED: case_erased}
