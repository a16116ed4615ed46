"""Agencies' own identity providers (issue #20 part 5): the registry brokers an agency's OpenID Connect
provider. ``identity_providers`` holds the trusts an operator registered; ``federated_identities`` links an
upstream (issuer, subject) to a person of the registry; ``federated_logins`` holds a sign-in on its way through
the upstream (state, nonce, PKCE verifier; minutes long, single use).

New tables, and a nullable column on ``sign_in_sessions`` (``expires_at``: a brokered sign-in's end): nothing
for replicas of the previous release to trip over during a rolling upgrade.

Revision ID: registry_0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "registry_0009"
down_revision = "registry_0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identity_providers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=False, index=True),
        sa.Column("issuer", sa.Text, nullable=False, unique=True),
        sa.Column("discovery_url", sa.Text, nullable=False),
        sa.Column("jwks_uri", sa.Text),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("client_secret_wrapped", sa.LargeBinary),
        sa.Column("client_secret_kek_id", sa.String(32)),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("login_claim", sa.String(200), nullable=False),
        sa.Column("roles_claim", sa.String(200), nullable=False),
        sa.Column("role_map", JSONB, nullable=False),
        sa.Column("tenant_claim", sa.String(200)),
        sa.Column("tenant_value", sa.Text),
        sa.Column("mfa_amr", ARRAY(sa.Text), nullable=False),
        sa.Column("mfa_acr", ARRAY(sa.Text), nullable=False),
        sa.Column("algorithms", ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("(client_secret_wrapped IS NULL) = (client_secret_kek_id IS NULL)",
                           name="ck_identity_providers_secret_kek"),
        sa.CheckConstraint("(tenant_claim IS NULL) = (tenant_value IS NULL)", name="ck_identity_providers_tenant"),
    )
    op.create_table(
        "federated_identities",
        sa.Column("issuer", sa.Text, primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("person_id", sa.String(64), sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_sign_in_at", TS),
    )
    op.create_table(
        "federated_logins",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("idp_id", sa.String(64), sa.ForeignKey("identity_providers.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("return_query", sa.Text, nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
        sa.Column("used_at", TS),
    )
    # A brokered sign-in's end, however active (REFNET_REGISTRY_FEDERATED_SESSION_MAX_SECONDS); NULL for others.
    op.add_column("sign_in_sessions", sa.Column("expires_at", TS))


def downgrade() -> None:
    op.drop_column("sign_in_sessions", "expires_at")
    for table in ("federated_logins", "federated_identities", "identity_providers"):
        op.drop_table(table)
