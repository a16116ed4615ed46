"""intake's tables (its own database; no other service reads them) and every query of them.

Personal data lives only in ``sealed`` columns (AES-256-GCM under the case's data key); the data key lives
only wrapped, in ``case_keys``. Consent versions are append-only (a trigger refuses UPDATE and DELETE).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, array, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CaseRow(Base):
    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_agency: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(32))
    is_minor: Mapped[bool | None] = mapped_column(Boolean)
    # Filled by releases before intake_0005 only: now sealed with the person (NULL once intake sealed them).
    age_band: Mapped[str | None] = mapped_column(String(16))
    gender: Mapped[str | None] = mapped_column(String(32))
    citizenship: Mapped[str | None] = mapped_column(String(2))
    trafficking_status: Mapped[str | None] = mapped_column(String(32))
    # The screening facts a decision or a listing needs (domain.CLEAR_FACTS); the rest is in ``sealed``.
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)
    bia_completed_at: Mapped[date | None] = mapped_column(Date)
    bid_completed_at: Mapped[date | None] = mapped_column(Date)
    # Personal fields and notes, sealed with the case's data key; NULL once erased.
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_by_client: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The registration's Idempotency-Key (unique per owner) and its request's HMAC under the data key.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (UniqueConstraint("owner_agency", "idempotency_key"),)


class CaseKeyRow(Base):
    """A case's data key, wrapped by the master key ``master_key_id``. Deleted on erasure."""

    __tablename__ = "case_keys"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    rewrapped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsentRow(Base):
    """One consent version. A withdrawal is a version of kind ``withdrawal`` naming what it ends."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("case_id", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    withdraws: Mapped[str | None] = mapped_column(String(64))
    grantor: Mapped[str | None] = mapped_column(String(16))
    child_assent: Mapped[bool | None] = mapped_column(Boolean)
    method: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(3))
    interpreter_used: Mapped[bool | None] = mapped_column(Boolean)
    provisions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    checklist: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_by_agency: Mapped[str] = mapped_column(String(128))
    recorded_by_client: Mapped[str] = mapped_column(String(128))
    recorded_by_user: Mapped[str | None] = mapped_column(String(128))
    # On whose authentication recorded_by_user is named: "token" (the person's own), "system" (asserted by the
    # agency's system); None when nobody is named, or recorded before intake_0006.
    recorded_by_attested_by: Mapped[str | None] = mapped_column(String(8))
    # Free text (capacity note, witness, withdrawal reason), sealed with the case's data key.
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OverrideRow(Base):
    """A risk-to-life override (docs/domain.md rule 6): requested by one person, approved by another (intake_0006)."""

    __tablename__ = "overrides"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    agency: Mapped[str] = mapped_column(String(128))
    recipient_agency: Mapped[str] = mapped_column(String(128))
    # People by the ids their tokens name (before intake_0006: whatever the caller wrote).
    requested_by: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(128))  # the client the requester signed in through
    sealed_justification: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # requested at
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set by the approval
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReferralRow(Base):
    """Read model of the referral service's referrals (from ``refnet.referral.events``)."""

    __tablename__ = "referrals"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    from_agency: Mapped[str] = mapped_column(String(128))
    to_agency: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    pathway: Mapped[str | None] = mapped_column(String(32))
    shared_categories: Mapped[list[str]] = mapped_column(JSONB, default=list)
    consent_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AgencyRow(Base):
    """Read model of the registry's agencies (from ``refnet.registry.events``)."""

    __tablename__ = "agencies"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- cases ------------------------------------------------------------------------------------------------


async def case(session: AsyncSession, case_id: str) -> CaseRow | None:
    return await session.get(CaseRow, case_id)


async def own_case(session: AsyncSession, owner: str, case_id: str, *, lock: bool = False) -> CaseRow | None:
    query = select(CaseRow).where(CaseRow.id == case_id, CaseRow.owner_agency == owner)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def case_by_key(session: AsyncSession, owner: str, idempotency_key: str) -> CaseRow | None:
    return (await session.execute(select(CaseRow).where(
        CaseRow.owner_agency == owner, CaseRow.idempotency_key == idempotency_key))).scalar_one_or_none()


async def cases_page(session: AsyncSession, owner: str, *, status: str | None, trafficking_status: str | None,
                     needs: str | None, after: str | None, limit: int) -> list[CaseRow]:
    """Up to ``limit`` of ``owner``'s cases after the id ``after``, by id."""
    query = select(CaseRow).where(CaseRow.owner_agency == owner)
    if status:
        query = query.where(CaseRow.status == status)
    if trafficking_status:
        query = query.where(CaseRow.trafficking_status == trafficking_status)
    if needs:
        query = query.where(CaseRow.facts["needs"].contains([needs]))
    if after:
        query = query.where(CaseRow.id > after)
    return list((await session.execute(query.order_by(CaseRow.id).limit(limit))).scalars())


async def cases_holding_in_clear(session: AsyncSession, facts: Sequence[str], columns: Sequence[str], *,
                                 after: str, limit: int) -> list[CaseRow]:
    """Cases still holding any of ``facts`` or a value in ``columns`` in clear, locked (replicas skip each
    other's rows)."""
    return list((await session.execute(
        select(CaseRow).where(or_(CaseRow.facts.has_any(array(facts)),
                                  *(getattr(CaseRow, k).is_not(None) for k in columns)),
                              CaseRow.id > after)
        .order_by(CaseRow.id).limit(limit).with_for_update(skip_locked=True))).scalars())


async def unerased_cases(session: AsyncSession, ids: Sequence[str]) -> list[CaseRow]:
    return list((await session.execute(
        select(CaseRow).where(CaseRow.id.in_(ids), CaseRow.status != "erased").with_for_update())).scalars())


# --- data keys ----------------------------------------------------------------------------------------------


async def case_key(session: AsyncSession, case_id: str) -> CaseKeyRow | None:
    return await session.get(CaseKeyRow, case_id)


async def delete_case_key(session: AsyncSession, case_id: str) -> None:
    await session.execute(delete(CaseKeyRow).where(CaseKeyRow.case_id == case_id))


async def case_keys_not_under(session: AsyncSession, key_id: str, *, limit: int) -> list[CaseKeyRow]:
    """Data keys wrapped by another master key than ``key_id``, locked (replicas skip each other's rows)."""
    return list((await session.execute(
        select(CaseKeyRow).where(CaseKeyRow.master_key_id != key_id)
        .order_by(CaseKeyRow.case_id).limit(limit).with_for_update(skip_locked=True))).scalars())


async def count_case_keys_not_under(session: AsyncSession, key_id: str) -> int:
    rows = (await session.execute(select(CaseKeyRow.case_id).where(CaseKeyRow.master_key_id != key_id))).all()
    return len(rows)


# --- consent and overrides ------------------------------------------------------------------------------


async def consents(session: AsyncSession, case_id: str) -> list[ConsentRow]:
    """Every consent version of the case, oldest first."""
    return list((await session.execute(
        select(ConsentRow).where(ConsentRow.case_id == case_id).order_by(ConsentRow.version))).scalars())


async def consent(session: AsyncSession, consent_id: str) -> ConsentRow | None:
    return await session.get(ConsentRow, consent_id)


async def overrides(session: AsyncSession, case_id: str, recipient: str) -> list[OverrideRow]:
    """The approved overrides of the case for ``recipient`` (the rule still checks each is in force)."""
    return list((await session.execute(select(OverrideRow).where(
        OverrideRow.case_id == case_id, OverrideRow.recipient_agency == recipient,
        OverrideRow.approved_at.is_not(None)))).scalars())


async def case_overrides(session: AsyncSession, case_id: str) -> list[OverrideRow]:
    """Every override of the case, oldest request first."""
    return list((await session.execute(select(OverrideRow).where(OverrideRow.case_id == case_id)
                                       .order_by(OverrideRow.created_at, OverrideRow.id))).scalars())


async def override(session: AsyncSession, case_id: str, override_id: str, *, lock: bool = False
                   ) -> OverrideRow | None:
    query = select(OverrideRow).where(OverrideRow.id == override_id, OverrideRow.case_id == case_id)
    return (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()


# --- read models (referrals, agencies) ------------------------------------------------------------------


async def referrals_of(session: AsyncSession, case_id: str, *, from_agency: str, to_agency: str
                       ) -> list[ReferralRow]:
    return list((await session.execute(select(ReferralRow).where(
        ReferralRow.case_id == case_id, ReferralRow.to_agency == to_agency,
        ReferralRow.from_agency == from_agency))).scalars())


async def agency_suspended(session: AsyncSession, agency_id: str) -> bool:
    """From the registry's events (eventually consistent); an agency not heard of is not suspended."""
    row = await session.get(AgencyRow, agency_id)
    return row is not None and row.status == "suspended"


async def upsert_referral(session: AsyncSession, values: dict[str, Any], *, keep_status: bool) -> None:
    """Insert or update the referral; ``keep_status``: the event says nothing of its status. An event older
    than what we hold (a redelivery out of order) must not reopen a closed referral."""
    update = {k: v for k, v in values.items() if k != "id" and not (keep_status and k == "status")}
    statement = insert(ReferralRow).values(**values)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[ReferralRow.id], set_=update, where=ReferralRow.updated_at <= statement.excluded.updated_at))


async def upsert_agency(session: AsyncSession, agency_id: str, status: str, at: datetime) -> None:
    statement = insert(AgencyRow).values(id=agency_id, status=status, updated_at=at)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[AgencyRow.id], set_={"status": status, "updated_at": at}))
