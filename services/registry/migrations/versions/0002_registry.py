"""Agencies (OAuth clients), signing keys, used assertions, revocations, and the HSDS directory.

Revision ID: registry_0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "registry_0002"
down_revision = "registry_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("short_name", sa.String(64), unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("jwks", JSONB),
        sa.Column("jwks_uri", sa.Text),
        sa.Column("secret_hash", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("public_jwk", JSONB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("activates_at", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('next', 'current', 'previous', 'retired')", name="status"),
    )
    # At most one current key, whatever races a rotation.
    op.create_index("uq_signing_keys_current", "signing_keys", ["status"], unique=True,
                    postgresql_where=sa.text("status = 'current'"))
    op.create_table(
        "used_assertions",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires_at", TS, nullable=False, index=True),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("expires_at", TS, nullable=False, index=True),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=False, index=True),
        sa.Column("taxonomy", sa.String(64), nullable=False, index=True),
        sa.Column("names", JSONB, nullable=False),
        sa.Column("descriptions", JSONB, nullable=False),
        sa.Column("countries", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("admin_areas", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("languages", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("accepts_children", sa.Boolean, nullable=False),
        sa.Column("eligibility", JSONB, nullable=False),
        sa.Column("hours", sa.Text),
        sa.Column("contact", JSONB, nullable=False),
        sa.Column("capacity_available", sa.Integer, nullable=False),
        sa.Column("capacity_total", sa.Integer, nullable=False),
        sa.Column("capacity_status", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("capacity_available >= 0 AND capacity_available <= capacity_total", name="capacity"),
    )
    op.create_index("ix_services_countries", "services", ["countries"], postgresql_using="gin")
    op.create_index("ix_services_languages", "services", ["languages"], postgresql_using="gin")
    op.create_table(
        "locations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(64), sa.ForeignKey("services.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("address", sa.Text),
        sa.Column("city", sa.String(120)),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
    )


def downgrade() -> None:
    for table in ("locations", "services", "revoked_tokens", "used_assertions", "signing_keys", "agencies"):
        op.drop_table(table)
