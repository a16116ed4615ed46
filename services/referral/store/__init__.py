"""referral's tables (its own database; no other service reads them) and the queries on them.

Referrals with their transition history; the registry read model (agencies, services) kept from
``refnet.registry.events``; and the feed of referral events each agency is party to (pull feed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ReferralRow(Base):
    __tablename__ = "referrals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Insertion order: the work queues' cursor.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    case_id: Mapped[str] = mapped_column(String(128), index=True)
    from_agency: Mapped[str] = mapped_column(String(128), index=True)
    to_agency: Mapped[str] = mapped_column(String(128), index=True)
    service_id: Mapped[str | None] = mapped_column(String(128))
    pathway: Mapped[str] = mapped_column(String(32))
    service_type: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16))
    # Free text for the recipient, personal data: sealed under the case's data key (``case_keys``), never in
    # events or logs. ``reason`` holds it in clear only in rows made before sealing, until they are sealed.
    reason: Mapped[str | None] = mapped_column(Text)
    sealed_reason: Mapped[bytes | None] = mapped_column(LargeBinary)
    shared_categories: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    consent_id: Mapped[str | None] = mapped_column(String(128), index=True)
    consent_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by_client: Mapped[str] = mapped_column(String(128))
    acting_user: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("from_agency", "idempotency_key", name="uq_referrals_idempotency"),
        Index("ix_referrals_due_requested", "due_at", postgresql_where=text("status = 'requested' AND "
                                                                           "overdue_at IS NULL")),
    )


class TransitionRow(Base):
    __tablename__ = "referral_transitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    party: Mapped[str] = mapped_column(String(16))  # sender | recipient | system
    agency: Mapped[str | None] = mapped_column(String(128))
    acting_user: Mapped[str | None] = mapped_column(String(128))
    # On whose authentication acting_user is named: token | system; None when nobody is, or before referral_0008.
    attested_by: Mapped[str | None] = mapped_column(String(8))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    # Free text for the parties, sealed like the referral's reason (``note``: only rows made before sealing).
    note: Mapped[str | None] = mapped_column(Text)
    sealed_note: Mapped[bytes | None] = mapped_column(LargeBinary)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AgencyRow(Base):
    """Read model of the registry's agencies."""

    __tablename__ = "agencies"

    agency_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    country: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ServiceRow(Base):
    """Read model of the registry's services."""

    __tablename__ = "services"

    service_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(128), index=True)
    taxonomy: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # active | withdrawn
    countries: Mapped[list[str]] = mapped_column(JSONB)
    languages: Mapped[list[str]] = mapped_column(JSONB)
    accepts_children: Mapped[bool] = mapped_column(Boolean)
    capacity_available: Mapped[int] = mapped_column(Integer)
    capacity_total: Mapped[int] = mapped_column(Integer)
    capacity_status: Mapped[str] = mapped_column(String(16))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FeedRow(Base):
    """Every referral event, once, with the two agencies party to it: the pull feed reads it by ``seq``."""

    __tablename__ = "referral_feed"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(128))
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    from_agency: Mapped[str] = mapped_column(String(128), index=True)
    to_agency: Mapped[str] = mapped_column(String(128), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- queries ------------------------------------------------------------------------------------------------


async def lock_case(session: AsyncSession, case_id: str) -> None:
    """Serialise referral decisions per case until the transaction ends (non-refoulement, idempotency)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                          {"k": f"referral-case:{case_id}"})


async def referral_by_key(session: AsyncSession, from_agency: str, key: str) -> ReferralRow | None:
    return (await session.execute(
        select(ReferralRow).where(ReferralRow.from_agency == from_agency, ReferralRow.idempotency_key == key)
    )).scalar_one_or_none()


async def referral(session: AsyncSession, referral_id: str, *, for_update: bool = False) -> ReferralRow | None:
    query = select(ReferralRow).where(ReferralRow.id == referral_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def history(session: AsyncSession, referral_id: str) -> list[TransitionRow]:
    return list((await session.execute(
        select(TransitionRow).where(TransitionRow.referral_id == referral_id).order_by(TransitionRow.id)
    )).scalars())


async def agency(session: AsyncSession, agency_id: str) -> AgencyRow | None:
    return await session.get(AgencyRow, agency_id)


async def service(session: AsyncSession, service_id: str) -> ServiceRow | None:
    return await session.get(ServiceRow, service_id)


async def upsert_agency(session: AsyncSession, values: dict[str, Any]) -> None:
    statement = insert(AgencyRow).values(**values)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[AgencyRow.agency_id],
        set_={k: statement.excluded[k] for k in values if k != "agency_id"} | {"updated_at": func.now()},
    ))


async def upsert_service(session: AsyncSession, values: dict[str, Any]) -> None:
    statement = insert(ServiceRow).values(**values)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[ServiceRow.service_id],
        set_={k: statement.excluded[k] for k in values if k != "service_id"} | {"updated_at": func.now()},
    ))


class SubscriptionRow(Base):
    """A case system's webhook: the referral events its agency is party to, signed with ``secret``."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(128), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str] | None] = mapped_column(JSONB)
    # The Standard Webhooks signing secret ("whsec_" + base64): the service must hold it to sign, so it is
    # kept wrapped under referral's master key (``secret_key_id`` names which). ``secret`` is a clear secret
    # of a row made before referral_0007, sealed at start-up.
    secret: Mapped[str | None] = mapped_column(String(128))
    secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_key_id: Mapped[str | None] = mapped_column(String(64))
    # After a rotation: the old secret, still signing until ``previous_secret_until``.
    previous_secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_key_id: Mapped[str | None] = mapped_column(String(64))
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # active | disabled | deleted
    cursor: Mapped[int] = mapped_column(BigInteger)  # the last referral_feed.seq handled
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed attempts
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryRow(Base):
    """One attempt to deliver one event to one subscription."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(128))
    feed_seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | failed
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(64))  # an exception class name, never a body
    duration_ms: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WithdrawnConsentRow(Base):
    """A consent version intake told us was withdrawn: no new referral may rely on it."""

    __tablename__ = "withdrawn_consents"

    consent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CaseConsentRow(Base):
    """The latest consent version of a case, from intake's consent events: what decides whether an open
    referral is still consented to (ids and enumerations only, as the events carry them)."""

    __tablename__ = "case_consents"

    case_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # grant | withdrawal
    provisions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CaseKeyRow(Base):
    """A case's data key for referral's free text, wrapped by referral's master key. Deleted on erasure."""

    __tablename__ = "case_keys"

    case_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ErasedCaseRow(Base):
    __tablename__ = "erased_cases"

    case_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


async def record_withdrawn_consent(session: AsyncSession, consent_id: str, case_id: str) -> None:
    await session.execute(insert(WithdrawnConsentRow).values(consent_id=consent_id, case_id=case_id)
                          .on_conflict_do_nothing())


async def record_case_consent(session: AsyncSession, *, case_id: str, consent_id: str, version: int, kind: str,
                              provisions: list[dict[str, Any]], valid_from: datetime | None,
                              valid_until: datetime | None) -> None:
    """Keep the case's latest consent version: an older or repeated event changes nothing."""
    values = {"case_id": case_id, "consent_id": consent_id, "version": version, "kind": kind,
              "provisions": provisions, "valid_from": valid_from, "valid_until": valid_until}
    statement = insert(CaseConsentRow).values(**values)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[CaseConsentRow.case_id],
        set_={k: statement.excluded[k] for k in values if k != "case_id"} | {"at": func.now()},
        where=CaseConsentRow.version < statement.excluded.version,
    ))


async def case_consent(session: AsyncSession, case_id: str) -> CaseConsentRow | None:
    return await session.get(CaseConsentRow, case_id, populate_existing=True)


async def record_erased_case(session: AsyncSession, case_id: str) -> None:
    await session.execute(insert(ErasedCaseRow).values(case_id=case_id).on_conflict_do_nothing())


@dataclass(frozen=True)
class CaseStanding:
    """What a new referral must know about its case, read in one round trip under the case lock."""

    key_used: bool  # the idempotency key already made a referral
    erased: bool
    consent_withdrawn: bool
    open_pathways: list[str]
    consent_version: int | None  # the case's latest consent version we heard of


async def case_standing(session: AsyncSession, *, case_id: str, from_agency: str, idempotency_key: str | None,
                        consent_id: str | None, open_states: list[str]) -> CaseStanding:
    """One statement instead of four: a referral is created under load, and each round trip costs more
    than the lookup it carries. Read after ``lock_case`` (a separate statement, so that this statement's
    snapshot is taken with the lock held)."""
    row = (await session.execute(select(
        exists().where(ReferralRow.from_agency == from_agency, ReferralRow.idempotency_key == idempotency_key)
        if idempotency_key else literal(False),
        exists().where(ErasedCaseRow.case_id == case_id),
        exists().where(WithdrawnConsentRow.consent_id == consent_id) if consent_id else literal(False),
        select(func.array_agg(ReferralRow.pathway)).where(ReferralRow.case_id == case_id,
                                                          ReferralRow.status.in_(open_states)).scalar_subquery(),
        select(CaseConsentRow.version).where(CaseConsentRow.case_id == case_id).scalar_subquery(),
    ))).one()
    return CaseStanding(key_used=bool(row[0]), erased=bool(row[1]), consent_withdrawn=bool(row[2]),
                        open_pathways=list(row[3] or []), consent_version=row[4])


async def case_standing_erased(session: AsyncSession, case_id: str) -> bool:
    return bool((await session.execute(select(exists().where(ErasedCaseRow.case_id == case_id)))).scalar())


async def overdue_counts(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Referrals flagged overdue and still requested, by pathway and priority (the overdue gauge)."""
    rows = await session.execute(
        select(ReferralRow.pathway, ReferralRow.priority, func.count())
        .where(ReferralRow.status == "requested", ReferralRow.overdue_at.is_not(None))
        .group_by(ReferralRow.pathway, ReferralRow.priority))
    return {(str(pathway), str(priority)): int(n) for pathway, priority, n in rows.all()}


async def agency_for_share(session: AsyncSession, agency_id: str) -> AgencyRow | None:
    """The recipient, locked against a concurrent suspension until the referral is committed."""
    return (await session.execute(
        select(AgencyRow).where(AgencyRow.agency_id == agency_id).with_for_update(read=True)
    )).scalar_one_or_none()


# --- per-case keys and sealed free text -------------------------------------------------------------------


async def case_keys(session: AsyncSession, case_ids: list[str]) -> dict[str, CaseKeyRow]:
    rows = (await session.execute(select(CaseKeyRow).where(CaseKeyRow.case_id.in_(case_ids)))).scalars()
    return {row.case_id: row for row in rows}


async def add_case_key(session: AsyncSession, case_id: str, wrapped_key: bytes, master_key_id: str) -> None:
    """Keep the first key of a case: a concurrent writer's key wins and ours is dropped (read it back)."""
    await session.execute(insert(CaseKeyRow).values(case_id=case_id, wrapped_key=wrapped_key,
                                                    master_key_id=master_key_id).on_conflict_do_nothing())


async def case_keys_not_under(session: AsyncSession, key_id: str, limit: int) -> list[CaseKeyRow]:
    """Data keys wrapped by another master key than ``key_id``, locked (two rotations skip each other's rows)."""
    return list((await session.execute(
        select(CaseKeyRow).where(CaseKeyRow.master_key_id != key_id)
        .order_by(CaseKeyRow.case_id).limit(limit).with_for_update(skip_locked=True))).scalars())


async def count_case_keys_not_under(session: AsyncSession, key_id: str) -> int:
    return int((await session.execute(select(func.count()).select_from(CaseKeyRow)
                                      .where(CaseKeyRow.master_key_id != key_id))).scalar_one())


async def case_consents(session: AsyncSession, case_ids: list[str]) -> dict[str, CaseConsentRow]:
    rows = (await session.execute(select(CaseConsentRow).where(CaseConsentRow.case_id.in_(case_ids)))).scalars()
    return {row.case_id: row for row in rows}


async def shred_case(session: AsyncSession, case_id: str) -> None:
    """Erasure: destroy the case's data key, and with it every sealed text (clear legacy text too)."""
    await session.execute(delete(CaseKeyRow).where(CaseKeyRow.case_id == case_id))
    await session.execute(update(ReferralRow).where(ReferralRow.case_id == case_id)
                          .values(reason=None, sealed_reason=None, request_hash=None))
    await session.execute(update(TransitionRow).where(
        TransitionRow.referral_id.in_(select(ReferralRow.id).where(ReferralRow.case_id == case_id)))
        .values(note=None, sealed_note=None))


async def referrals_with_clear_text(session: AsyncSession, batch: int) -> list[ReferralRow]:
    """Referrals made before free text was sealed whose reason or notes are still in clear."""
    with_clear_note = select(TransitionRow.referral_id).where(TransitionRow.note.is_not(None))
    return list((await session.execute(
        select(ReferralRow).where((ReferralRow.reason.is_not(None)) | ReferralRow.id.in_(with_clear_note))
        .order_by(ReferralRow.seq).limit(batch).with_for_update(skip_locked=True))).scalars())


# --- work queues, suggestions, deadlines, feed --------------------------------------------------------------


async def queue_page(session: AsyncSession, agency_id: str, *, role: str | None, status: str | None,
                     pathway: str | None, overdue: bool | None, now: datetime, after: int | None,
                     limit: int) -> list[ReferralRow]:
    """A page of an agency's work queue in ``seq`` order; ``limit`` rows (ask for one more to know of a next)."""
    query = select(ReferralRow)
    if role == "sent":
        query = query.where(ReferralRow.from_agency == agency_id)
    elif role == "received":
        query = query.where(ReferralRow.to_agency == agency_id)
    else:
        query = query.where(or_(ReferralRow.from_agency == agency_id, ReferralRow.to_agency == agency_id))
    if status is not None:
        query = query.where(ReferralRow.status == status)
    if pathway is not None:
        query = query.where(ReferralRow.pathway == pathway)
    if overdue is not None:
        late = or_(ReferralRow.overdue_at.is_not(None),
                   and_(ReferralRow.status == "requested", ReferralRow.due_at <= now))
        query = query.where(late if overdue else ~late)
    if after is not None:
        query = query.where(ReferralRow.seq > after)
    return list((await session.execute(query.order_by(ReferralRow.seq).limit(limit))).scalars())


async def open_referrals(session: AsyncSession, *, open_states: list[str], case_id: str | None = None,
                         to_agency: str | None = None) -> list[ReferralRow]:
    """The open referrals of a case or to an agency, locked (a consumer cancels them in its transaction)."""
    query = select(ReferralRow).where(ReferralRow.status.in_(open_states))
    if case_id is not None:
        query = query.where(ReferralRow.case_id == case_id)
    if to_agency is not None:
        query = query.where(ReferralRow.to_agency == to_agency)
    return list((await session.execute(query.order_by(ReferralRow.seq).with_for_update())).scalars())


async def active_services_of_family(session: AsyncSession, family: str) -> list[tuple[ServiceRow, str | None]]:
    """Active services whose taxonomy is ``family`` or under it, with their agency's status (None: unknown)."""
    rows = await session.execute(
        select(ServiceRow, AgencyRow.status)
        .outerjoin(AgencyRow, AgencyRow.agency_id == ServiceRow.agency_id)
        .where(ServiceRow.status == "active",
               or_(ServiceRow.taxonomy == family, ServiceRow.taxonomy.like(family + ".%"))))
    return [(svc, agency_status) for svc, agency_status in rows.all()]


async def open_recipients_of_case(session: AsyncSession, case_id: str, from_agency: str,
                                  open_states: list[str]) -> set[str]:
    """The agencies ``from_agency`` has an open referral of the case with."""
    return set((await session.execute(
        select(ReferralRow.to_agency).where(ReferralRow.case_id == case_id, ReferralRow.from_agency == from_agency,
                                            ReferralRow.status.in_(open_states)))).scalars())


async def claim_overdue(session: AsyncSession, now: datetime, batch: int) -> list[ReferralRow]:
    """Referrals past due, still requested and not yet flagged, claimed under lock (skipping others' claims)."""
    return list((await session.execute(
        select(ReferralRow)
        .where(ReferralRow.status == "requested", ReferralRow.overdue_at.is_(None), ReferralRow.due_at <= now)
        .order_by(ReferralRow.due_at).limit(batch).with_for_update(skip_locked=True)
    )).scalars())


async def feed_page(session: AsyncSession, agency_id: str, *, after: int, limit: int) -> list[FeedRow]:
    """The referral events an agency is party to after ``after``, in feed order."""
    return list((await session.execute(
        select(FeedRow).where(or_(FeedRow.from_agency == agency_id, FeedRow.to_agency == agency_id),
                              FeedRow.seq > after)
        .order_by(FeedRow.seq).limit(limit))).scalars())


# The statistics' and the webhooks' queries, in modules of their own (they import the tables above).
from services.referral.store.statistics import (  # noqa: E402, F401 -- re-exported: callers use store.<query>
    median_hours,
    month_counts,
    stats_agencies,
)
from services.referral.store.webhooks import (  # noqa: E402, F401 -- re-exported: callers use store.<query>
    advance_subscription,
    count_subscriptions_with_secret_not_under,
    deliveries_page,
    due_subscriptions,
    last_feed_seq,
    lock_agency_subscriptions,
    subscription,
    subscription_count,
    subscriptions_of,
    subscriptions_with_clear_secret,
    subscriptions_with_secret_not_under,
)
