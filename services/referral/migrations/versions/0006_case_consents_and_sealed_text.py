"""Each case's latest consent version, as intake's events tell it (a referral made under any earlier version
ends when the version in force no longer covers it); and the free text of referrals and transitions sealed
under per-case data keys (erasure destroys the key). Rows made before keep their clear text until the
service seals them at start-up (``Referrals.seal_clear_text``), which needs the master key.

Revision ID: referral_0006
"""

from alembic import op

revision = "referral_0006"
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
    op.execute("""
CREATE TABLE case_keys (
    case_id        VARCHAR(128) PRIMARY KEY,
    wrapped_key    BYTEA NOT NULL,
    master_key_id  VARCHAR(32) NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
)""")
    op.execute("CREATE INDEX ix_case_keys_master_key_id ON case_keys (master_key_id)")
    op.execute("ALTER TABLE referrals ALTER COLUMN reason DROP NOT NULL")
    op.execute("ALTER TABLE referrals ADD COLUMN sealed_reason BYTEA")
    op.execute("ALTER TABLE referral_transitions ADD COLUMN sealed_note BYTEA")


def downgrade() -> None:
    # Sealed text cannot go back to clear without the master key: the downgrade drops it.
    op.execute("ALTER TABLE referral_transitions DROP COLUMN sealed_note")
    op.execute("ALTER TABLE referrals DROP COLUMN sealed_reason")
    op.execute("UPDATE referrals SET reason = '' WHERE reason IS NULL")
    op.execute("ALTER TABLE referrals ALTER COLUMN reason SET NOT NULL")
    op.execute("DROP TABLE case_keys")
    op.execute("DROP TABLE case_consents")
