"""A referral's moves say on whose authentication their acting user is named (issue 20): ``attested_by`` is
``token`` (the person's own verified access token) or ``system`` (asserted by the agency's system client,
X-Acting-User); empty when nobody is named, and for moves made before this release (unknown).

Revision ID: referral_0008
"""

from alembic import op

revision = "referral_0008"
down_revision = "referral_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE referral_transitions
    ADD COLUMN attested_by VARCHAR(8),
    ADD CONSTRAINT ck_referral_transitions_attested_by CHECK (attested_by IN ('token', 'system'))""")


def downgrade() -> None:
    op.execute("ALTER TABLE referral_transitions DROP CONSTRAINT ck_referral_transitions_attested_by, "
               "DROP COLUMN attested_by")
