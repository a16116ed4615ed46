"""The outbox keeps what it published (and where the broker put it) for its retention, and the revocation
list is kept in the database: neither is lost when the broker loses its log.

Revision ID: intake_0004
"""

from shared.migration_ops import create_retention_tables, drop_retention_tables

revision = "intake_0004"
down_revision = "intake_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_retention_tables()


def downgrade() -> None:
    drop_retention_tables()
