"""The outbox keeps what it published (and where the broker put it) for its retention, and the revocation
list is kept in the database: neither is lost when the broker loses its log.

Revision ID: referral_0005
"""

from shared.migration_ops import create_retention_tables, drop_retention_tables

revision = "referral_0005"
down_revision = "referral_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_retention_tables()


def downgrade() -> None:
    drop_retention_tables()
