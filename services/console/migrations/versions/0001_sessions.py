"""The console's database: its (unused) outbox and inbox, the shape every service's relay expects; the
server-side sessions (keyed by a hash of the session id, tokens sealed); each person's chosen language.

Revision ID: console_0001
"""

import sqlalchemy as sa
from alembic import op

from shared.migration_ops import (
    create_messaging_tables,
    create_retention_tables,
    drop_messaging_tables,
    drop_retention_tables,
)

revision = "console_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables()
    create_retention_tables()
    op.create_table(
        "console_sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("person", sa.Text, nullable=False, server_default=""),
        sa.Column("agency", sa.Text, nullable=False, server_default=""),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sessions_last_seen_at", "console_sessions", ["last_seen_at"])
    op.create_table(
        "console_preferences",
        sa.Column("person", sa.Text, primary_key=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_preferences")
    op.drop_table("console_sessions")
    drop_retention_tables()
    drop_messaging_tables()
