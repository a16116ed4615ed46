"""Each case's latest consent version, as intake's events tell it (a referral made under any earlier version
ends when the version in force no longer covers it).

Revision ID: referral_0007
"""

from alembic import op

revision = "referral_0007"
# Chained after referral_0005 on this branch; referral_0006 is another branch's. At merge, set this to
# "referral_0006" -- nothing here depends on what 0006 does.
down_revision = "referral_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE case_consents (
    case_id      VARCHAR(128) PRIMARY KEY,
    consent_id   VARCHAR(128) NOT NULL,
    version      INTEGER NOT NULL,
    kind         VARCHAR(16) NOT NULL,
    provisions   JSONB NOT NULL,
    valid_from   TIMESTAMPTZ,
    valid_until  TIMESTAMPTZ,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
)""")


def downgrade() -> None:
    op.execute("DROP TABLE case_consents")
