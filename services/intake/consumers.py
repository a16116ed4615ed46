"""Handlers of other services' events, keeping intake's read models (referrals, agencies)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import events as ev
from services.intake import service
from services.intake.settings import IntakeSettings
from services.intake.store import AgencyRow, ReferralRow
from shared.app import Runtime
from shared.consumer import EventConsumer, PoisonEvent
from shared.envelope import Event
from shared.loops import stopping


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
    values = {
        "id": change.referral_id, "case_id": change.case_id, "from_agency": change.from_agency,
        "to_agency": change.to_agency, "status": new_status or "requested", "pathway": change.pathway,
        "shared_categories": change.shared_categories, "consent_id": change.consent_id,
        "updated_at": event.time,
    }
    update = {k: v for k, v in values.items() if k != "id"}
    if new_status is None:
        update.pop("status")
    statement = insert(ReferralRow).values(**values)
    # An event older than what we hold (a redelivery out of order) must not reopen a closed referral.
    await session.execute(statement.on_conflict_do_update(
        index_elements=[ReferralRow.id], set_=update, where=ReferralRow.updated_at <= statement.excluded.updated_at))


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
    statement = insert(AgencyRow).values(id=agency_id, status=status, updated_at=event.time)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[AgencyRow.id], set_={"status": status, "updated_at": event.time}))


log = structlog.get_logger("refnet.intake")
#: How often intake looks for trafficking facts still in clear (older rows, or an older replica's writes while
#: a rolling upgrade runs); the first look is at start-up.
SEAL_SWEEP_SECONDS = 3600.0


async def seal_sweeps(runtime: Runtime, interval: float = SEAL_SWEEP_SECONDS) -> None:
    """Re-seal what an older release left in clear, now and then every ``interval`` (never crashes)."""
    settings = runtime.settings
    while True:
        ctx = service.Context(sessions=runtime.sessions, keyring=runtime.extras.get("keyring"),
                              source=settings.source, override_validity=timedelta(hours=72),
                              reload_keys=runtime.extras.get("reload_keys"))
        if ctx.keyring is not None:
            try:
                sealed = await service.seal_clear_facts(ctx)
                if sealed:
                    log.info("trafficking_facts_sealed", cases=sealed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("trafficking_facts_sweep_interrupted", error=type(exc).__name__)
        await asyncio.sleep(interval)


def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
    """The consumers and background jobs intake runs beside its HTTP routes."""
    settings = runtime.settings
    group = settings.consumer_group if isinstance(settings, IntakeSettings) else "intake"
    common = {"service": settings.service_name, "sessions": runtime.sessions, "bootstrap": settings.kafka_bootstrap,
              "max_attempts": settings.consumer_max_attempts,
              "retry_backoff_seconds": settings.consumer_retry_backoff_seconds}

    async def trafficking_facts_sweep() -> None:
        await seal_sweeps(runtime)

    return [
        trafficking_facts_sweep,
        EventConsumer(name=f"{group}-referrals", topics=[ev.REFERRAL_EVENTS],
                      handlers=dict.fromkeys(ev.REFERRAL_TYPES, on_referral), **common),  # type: ignore[arg-type]
        EventConsumer(name=f"{group}-agencies", topics=[ev.REGISTRY_EVENTS],
                      handlers=dict.fromkeys(ev.AGENCY_TYPES, on_agency), **common),  # type: ignore[arg-type]
    ]
