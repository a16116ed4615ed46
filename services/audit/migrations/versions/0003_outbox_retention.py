"""The outbox keeps what it published (and where the broker put it) for its retention, and the revocation
list is kept in the database: neither is lost when the broker loses its log. The writer role the service
runs as may record republishes and revocations, and nothing more.

Revision ID: audit_0003
"""

from alembic import op

from shared.migration_ops import create_retention_tables, drop_retention_tables

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None

WRITER = "refnet_audit_writer"


def upgrade() -> None:
    create_retention_tables()
    op.execute(f"GRANT SELECT, INSERT ON outbox_republished TO {WRITER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_marks TO {WRITER}")
    op.execute(f"GRANT USAGE ON SEQUENCE outbox_republished_id_seq TO {WRITER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON revocations TO {WRITER}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON revocations, outbox_marks, outbox_republished FROM {WRITER}")
    op.execute(f"REVOKE ALL ON SEQUENCE outbox_republished_id_seq FROM {WRITER}")
    drop_retention_tables()
