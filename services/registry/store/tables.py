"""registry's tables (its own database; no other service reads them): the ORM mapping, no queries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.registry.hsds_ids import Kind, hsds_id
from shared.db import NAMING


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _hsds_id_of(kind: Kind) -> Any:
    """The insert default of an ``hsds_id`` column: derived from the row's ``id`` (services/registry/hsds_ids.py),
    so every way of adding the row fills it."""
    return lambda context: hsds_id(kind, context.get_current_parameters()["id"])


class Agency(Base):
    """An agency and its OAuth client (one client per agency)."""

    __tablename__ = "agencies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Its id in the HSDS output (the organization's), for the organization_id filter to look up. NULL only
    # on a row an older release added during the upgrade to registry_0008 (docs/operations.md).
    hsds_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True, index=True,
                                                     default=_hsds_id_of("organization"))
    client_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    short_name: Mapped[str | None] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    country: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="active")
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    secret_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SigningKey(Base):
    """The authorization server's token-signing keys, all published in the JWKS but ``retired`` ones:
    ``next`` (published ahead, signs from ``activates_at``), ``current`` (signs), ``previous`` (signed tokens
    that may still be alive).

    The private part is stored only wrapped under the registry's key-encryption key (``kek_id`` names which;
    services/registry/keyvault.py), and is destroyed (NULL) once the key has not signed for the grace period
    (``retired_at``: when it stopped signing); the public part stays, for the JWKS while it is published.
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str | None] = mapped_column(String(32))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    activates_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # A wrapped private part always names its KEK; a key that signs (or is about to) always has one.
        CheckConstraint("(private_key_wrapped IS NULL) = (kek_id IS NULL)", name="private_key_kek"),
        CheckConstraint("status NOT IN ('next', 'current') OR private_key_wrapped IS NOT NULL",
                        name="signing_key_has_private_part"),
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UsedAssertion(Base):
    """A client assertion's jti, kept until the assertion would have expired: replay is refused."""

    __tablename__ = "used_assertions"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Service(Base):
    """An HSDS service of one agency (the HSDS organization)."""

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Its id in the HSDS output, for GET /hsds/services/{id} to look up (NULL as ``Agency.hsds_id``).
    hsds_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True, index=True,
                                                     default=_hsds_id_of("service"))
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    taxonomy: Mapped[str] = mapped_column(String(64), index=True)
    names: Mapped[dict[str, str]] = mapped_column(JSONB)
    descriptions: Mapped[dict[str, str]] = mapped_column(JSONB)
    countries: Mapped[list[str]] = mapped_column(ARRAY(Text))
    admin_areas: Mapped[list[str]] = mapped_column(ARRAY(Text))
    languages: Mapped[list[str]] = mapped_column(ARRAY(Text))
    accepts_children: Mapped[bool] = mapped_column(Boolean)
    eligibility: Mapped[dict[str, Any]] = mapped_column(JSONB)
    hours: Mapped[str | None] = mapped_column(Text)
    contact: Mapped[dict[str, Any]] = mapped_column(JSONB)
    capacity_available: Mapped[int] = mapped_column(Integer)
    capacity_total: Mapped[int] = mapped_column(Integer)
    capacity_status: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    locations: Mapped[list[Location]] = relationship(
        back_populates="service", cascade="all, delete-orphan", order_by="Location.position", lazy="selectin"
    )


class Location(Base):
    """An HSDS location where the service is delivered (service_at_location is the link itself)."""

    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(String(2))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    # Copies of the service's search attributes, written only by the database's triggers (registry_0004)
    # so that one index finds the locations near a point of a taxonomy that accept referrals; never loaded.
    service_taxonomy: Mapped[str | None] = mapped_column(
        String(64), server_default=FetchedValue(), server_onupdate=FetchedValue(), deferred=True)
    service_accepting: Mapped[bool | None] = mapped_column(
        Boolean, server_default=FetchedValue(), server_onupdate=FetchedValue(), deferred=True)
    service_active: Mapped[bool | None] = mapped_column(
        Boolean, server_default=FetchedValue(), server_onupdate=FetchedValue(), deferred=True)

    service: Mapped[Service] = relationship(back_populates="locations")


# --- people (issue #20): staff accounts and the OpenID Connect provider's state ----------------------------


class Person(Base):
    """A member of an agency's staff. ``login`` is unique inside the agency; the password is an argon2id
    hash; the TOTP secret is stored only wrapped under the registry's KEK (like the signing keys)."""

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    login: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    status: Mapped[str] = mapped_column(String(16), default="invited")  # invited, active, disabled
    password_hash: Mapped[str | None] = mapped_column(Text)
    totp_secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_kek_id: Mapped[str | None] = mapped_column(String(32))
    # The last TOTP time step accepted: a code is good once (RFC 6238 section 5.2).
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("agency_id", "login", name="uq_people_agency_login"),
        CheckConstraint("(totp_secret_wrapped IS NULL) = (totp_kek_id IS NULL)", name="totp_kek"),
    )


class PersonInvite(Base):
    """A one-time link to set a password and enrol the second factor (an invitation or a reset): only the
    SHA-256 of its token is kept; used once, then ``used_at`` is set."""

    __tablename__ = "person_invites"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # invite, reset
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The TOTP secret offered on the enrolment page, kept until the first code confirms it.
    totp_secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_kek_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FirstPartyClient(Base):
    """An OpenID Connect relying party the operator registered (the console): public (PKCE only) when
    ``secret_hash`` is NULL, else confidential (client_secret_basic)."""

    __tablename__ = "first_party_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text))
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SignInSession(Base):
    """A person's sign-in at the provider (the browser's cookie names it by the SHA-256 of its token).
    ``amr`` is what was proven so far: a session with only a password, when a second factor is needed, is
    not signed in yet. ``last_seen_at`` moves with every use; idle longer than the setting, it is over."""

    __tablename__ = "sign_in_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    amr: Mapped[list[str]] = mapped_column(ARRAY(Text))
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A brokered sign-in (service/federation.py) ends by then, used or not: the agency's provider is asked again.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuthorizationCode(Base):
    """An authorization code (only its SHA-256 kept), bound to client, redirect URI, PKCE challenge and the
    sign-in session; used once (``used_at``)."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(ForeignKey("sign_in_sessions.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Base):
    """A refresh token (only its SHA-256 kept). Each use rotates it (``rotated_at`` set, a new one of the same
    ``family_id`` issued); a rotated token presented again revokes its whole family."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sign_in_sessions.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)
    # The access token issued with it: revoked with the family.
    access_jti: Mapped[str] = mapped_column(String(64))
    access_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
