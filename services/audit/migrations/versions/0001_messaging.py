"""Outbox and inbox: how audit publishes and consumes events.

Revision ID: audit_0001
"""

from shared.migration_ops import create_messaging_tables, drop_messaging_tables

revision = "audit_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables()


def downgrade() -> None:
    drop_messaging_tables()
