"""Handlers of other services' events, keeping intake's read models (referrals, agencies), and the consumers
that run them."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import events as ev
from services.intake import store
from services.intake.settings import IntakeSettings
from shared.consumer import EventConsumer, PoisonEvent
from shared.envelope import Event


async def on_referral(session: AsyncSession, event: Event) -> None:
    """Upsert the referral. Events of one case arrive in order (keyed by case id); ``overdue`` is a flag,
    not a state, so it keeps the stored status."""
    try:
        change = ev.ReferralChanged.model_validate(event.data)
    except ValidationError as exc:
        raise PoisonEvent("referral event without the fields intake needs") from exc
    state = event.short_type.split(".")[1] if event.short_type.count(".") >= 2 else None
    new_status = change.status if state != "overdue" else None
    if new_status is None and state != "overdue":
        new_status = state
    await store.upsert_referral(session, {
        "id": change.referral_id, "case_id": change.case_id, "from_agency": change.from_agency,
        "to_agency": change.to_agency, "status": new_status or "requested", "pathway": change.pathway,
        "shared_categories": change.shared_categories, "consent_id": change.consent_id,
        "updated_at": event.time,
    }, keep_status=new_status is None)


async def on_agency(session: AsyncSession, event: Event) -> None:
    agency_id = event.data.get("agency_id")
    if not isinstance(agency_id, str) or not agency_id:
        raise PoisonEvent("agency event without agency_id")
    status = event.data.get("status")
    if status is None:
        status = "suspended" if event.short_type.startswith("agency.suspended") else "active"
    if status not in ("active", "suspended"):
        # A wrong-typed status must not be read as "active": that would let a suspended agency's reads back in.
        raise PoisonEvent("agency event with a status other than active or suspended")
    await store.upsert_agency(session, agency_id, status, event.time)


def build(settings: IntakeSettings, sessions: async_sessionmaker[AsyncSession]
          ) -> tuple[EventConsumer, EventConsumer]:
    """-> (the referral events' consumer, the registry's agency events' consumer)."""
    group = settings.consumer_group
    return (
        EventConsumer.from_settings(settings, sessions, name=f"{group}-referrals", topics=[ev.REFERRAL_EVENTS],
                                    handlers=dict.fromkeys(ev.REFERRAL_TYPES, on_referral)),
        EventConsumer.from_settings(settings, sessions, name=f"{group}-agencies", topics=[ev.REGISTRY_EVENTS],
                                    handlers=dict.fromkeys(ev.AGENCY_TYPES, on_agency)),
    )
