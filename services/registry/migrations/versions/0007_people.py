"""People (issue #20): staff accounts, their one-time invitation links, first-party OpenID Connect clients,
sign-in sessions, authorization codes and refresh tokens.

Revision ID: registry_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "registry_0007"
down_revision = "registry_0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=False, index=True),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("roles", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("totp_secret_wrapped", sa.LargeBinary),
        sa.Column("totp_kek_id", sa.String(32)),
        sa.Column("totp_last_step", sa.Integer),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_failure_at", TS),
        sa.Column("locked_until", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("agency_id", "login", name="uq_people_agency_login"),
        sa.CheckConstraint("(totp_secret_wrapped IS NULL) = (totp_kek_id IS NULL)", name="ck_people_totp_kek"),
    )
    op.create_table(
        "person_invites",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(64), sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS),
        sa.Column("totp_secret_wrapped", sa.LargeBinary),
        sa.Column("totp_kek_id", sa.String(32)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "first_party_clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("redirect_uris", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("secret_hash", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "sign_in_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("person_id", sa.String(64), sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("amr", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("auth_time", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("ended_at", TS),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("sign_in_sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("nonce", sa.Text),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("code_challenge_method", sa.String(8), nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
        sa.Column("used_at", TS),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(64), nullable=False, index=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("sign_in_sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("access_jti", sa.String(64), nullable=False),
        sa.Column("access_expires_at", TS, nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("rotated_at", TS),
        sa.Column("revoked_at", TS),
    )


def downgrade() -> None:
    for table in ("refresh_tokens", "authorization_codes", "sign_in_sessions", "first_party_clients",
                  "person_invites", "people"):
        op.drop_table(table)
