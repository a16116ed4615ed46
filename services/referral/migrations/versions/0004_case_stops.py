"""Withdrawn consents and erased cases, as referral heard of them: a create racing the event must see it.

Revision ID: referral_0004
"""

from alembic import op

revision = "referral_0004"
down_revision = "referral_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE withdrawn_consents (
    consent_id  VARCHAR(128) PRIMARY KEY,
    case_id     VARCHAR(128) NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
)""")
    op.execute("""
CREATE TABLE erased_cases (
    case_id  VARCHAR(128) PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
)""")


def downgrade() -> None:
    op.execute("DROP TABLE erased_cases")
    op.execute("DROP TABLE withdrawn_consents")
