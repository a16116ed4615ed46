"""The tables of agencies' own identity providers (issue #20 part 5), on registry's ``Base``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.store.tables import Base


class IdentityProvider(Base):
    """An operator's trust in one agency's OpenID Connect provider: where it is, how RefNet authenticates to
    it, and how its ID token's claims map to a RefNet person. The client secret, if any, is stored only
    wrapped under the registry's KEK (like the TOTP secrets)."""

    __tablename__ = "identity_providers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    issuer: Mapped[str] = mapped_column(Text, unique=True)
    discovery_url: Mapped[str] = mapped_column(Text)
    jwks_uri: Mapped[str | None] = mapped_column(Text)  # overrides the discovery document's
    client_id: Mapped[str] = mapped_column(String(255))
    auth_method: Mapped[str] = mapped_column(String(32))
    client_secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    client_secret_kek_id: Mapped[str | None] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(Text)
    login_claim: Mapped[str] = mapped_column(String(200))
    roles_claim: Mapped[str] = mapped_column(String(200))
    role_map: Mapped[dict[str, Any]] = mapped_column(JSONB)
    tenant_claim: Mapped[str | None] = mapped_column(String(200))
    tenant_value: Mapped[str | None] = mapped_column(Text)
    mfa_amr: Mapped[list[str]] = mapped_column(ARRAY(Text))
    mfa_acr: Mapped[list[str]] = mapped_column(ARRAY(Text))
    algorithms: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("(client_secret_wrapped IS NULL) = (client_secret_kek_id IS NULL)", name="secret_kek"),
        CheckConstraint("(tenant_claim IS NULL) = (tenant_value IS NULL)", name="tenant"),
    )


class FederatedIdentity(Base):
    """An upstream account (its issuer and ``sub``, never a name or an e-mail) linked to a person."""

    __tablename__ = "federated_identities"

    issuer: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FederatedLogin(Base):
    """A sign-in sent to the upstream and not back yet: looked up by the SHA-256 of its ``state``; used once."""

    __tablename__ = "federated_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    idp_id: Mapped[str] = mapped_column(ForeignKey("identity_providers.id", ondelete="CASCADE"), index=True)
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    return_query: Mapped[str] = mapped_column(Text)  # the registry's own authorization request, to go on with
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
