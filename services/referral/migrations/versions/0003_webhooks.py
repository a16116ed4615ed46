"""Webhook subscriptions and their delivery log.

Revision ID: referral_0003
"""

from alembic import op

revision = "referral_0003"
down_revision = "referral_0002"
branch_labels = None
depends_on = None

UPGRADE = (
    """
CREATE TABLE webhook_subscriptions (
    id               VARCHAR(64) PRIMARY KEY,
    agency_id        VARCHAR(128) NOT NULL,
    url              VARCHAR(2048) NOT NULL,
    event_types      JSONB,
    secret           VARCHAR(128) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    cursor           BIGINT NOT NULL,
    failures         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    disabled_at      TIMESTAMPTZ
)""",
    "CREATE INDEX ix_webhook_subscriptions_agency_id ON webhook_subscriptions (agency_id)",
    """
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    subscription_id  VARCHAR(64) NOT NULL REFERENCES webhook_subscriptions (id),
    event_id         VARCHAR(64) NOT NULL,
    event_type       VARCHAR(128) NOT NULL,
    feed_seq         BIGINT NOT NULL,
    attempt          INTEGER NOT NULL,
    outcome          VARCHAR(16) NOT NULL,
    status_code      INTEGER,
    error            VARCHAR(64),
    duration_ms      INTEGER NOT NULL,
    at               TIMESTAMPTZ NOT NULL
)""",
    "CREATE INDEX ix_webhook_deliveries_subscription_id ON webhook_deliveries (subscription_id)",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_subscriptions")
