"""intake's tables (its own database; no other service reads them).

Personal data lives only in ``sealed`` columns (AES-256-GCM under the case's data key); the data key lives
only wrapped, in ``case_keys``. Consent versions are append-only (a trigger refuses UPDATE and DELETE).
"""

from __future__ import annotations

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
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
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
    # Free text (capacity note, witness, withdrawal reason), sealed with the case's data key.
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OverrideRow(Base):
    __tablename__ = "overrides"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    agency: Mapped[str] = mapped_column(String(128))
    recipient_agency: Mapped[str] = mapped_column(String(128))
    requested_by: Mapped[str] = mapped_column(String(128))
    approver: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(128))
    sealed_justification: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
