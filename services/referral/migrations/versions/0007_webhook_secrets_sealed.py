"""Webhook signing secrets encrypted at rest under referral's master key, and rotatable: the current secret
and, for a grace period after a rotation, the previous one (deliveries are signed with both). Rows made
before keep their clear secret until the service seals it at start-up (``seal_clear_secrets``), which needs
the master key.

Revision ID: referral_0007
"""

from alembic import op

revision = "referral_0007"
down_revision = "referral_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE webhook_subscriptions ALTER COLUMN secret DROP NOT NULL")
    op.execute("""
ALTER TABLE webhook_subscriptions
    ADD COLUMN secret_wrapped BYTEA,
    ADD COLUMN secret_key_id VARCHAR(64),
    ADD COLUMN previous_secret_wrapped BYTEA,
    ADD COLUMN previous_secret_key_id VARCHAR(64),
    ADD COLUMN previous_secret_until TIMESTAMPTZ""")


def downgrade() -> None:
    # Sealed secrets cannot be brought back in clear here (no key): such subscriptions must subscribe again.
    op.execute("""
ALTER TABLE webhook_subscriptions
    DROP COLUMN secret_wrapped, DROP COLUMN secret_key_id, DROP COLUMN previous_secret_wrapped,
    DROP COLUMN previous_secret_key_id, DROP COLUMN previous_secret_until""")
    op.execute("UPDATE webhook_subscriptions SET status = 'disabled' WHERE secret IS NULL")
    op.execute("UPDATE webhook_subscriptions SET secret = '' WHERE secret IS NULL")
    op.execute("ALTER TABLE webhook_subscriptions ALTER COLUMN secret SET NOT NULL")
