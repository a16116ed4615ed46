"""Outbox and inbox: how intake publishes and consumes events.

Revision ID: intake_0001
"""

from shared.migration_ops import create_messaging_tables, drop_messaging_tables

revision = "intake_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables()


def downgrade() -> None:
    drop_messaging_tables()
