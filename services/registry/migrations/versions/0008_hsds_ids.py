"""HSDS ids: each agency and service gets ``hsds_id``, the UUID the HSDS 3.0 output (``/hsds/...``) gives it
(services/registry/hsds_ids.py: UUIDv5 of its RefNet id under RefNet's namespace), so that
``GET /hsds/services/{id}`` and the ``organization_id`` filter find a thing by it.

Expand only (docs/operations.md, "Upgrading to registry_0008"): the columns are nullable, so replicas of the
previous release keep adding rows during the rollout; the existing rows are backfilled here in batches, each
committed on its own, and the unique indexes are built concurrently.

Revision ID: registry_0008
"""

import sqlalchemy as sa
from alembic import op

from services.registry.hsds_ids import Kind, hsds_id
from shared.migrations import create_index_concurrently

revision = "registry_0008"
down_revision = "registry_0007"
branch_labels = None
depends_on = None

BATCH = 1000
TABLES: dict[str, Kind] = {"agencies": "organization", "services": "service"}


def _backfill(table: str, kind: Kind) -> None:
    """Every row's ``hsds_id``, ``BATCH`` rows at a time, each row committed on its own (no long lock on the table)."""
    bind = op.get_bind()
    rows = sa.table(table, sa.column("id", sa.Text), sa.column("hsds_id", sa.Uuid))
    pending = sa.select(rows.c.id).where(rows.c.hsds_id.is_(None)).order_by(rows.c.id).limit(BATCH)
    fill = (sa.update(rows).where(rows.c.id == sa.bindparam("row_id"), rows.c.hsds_id.is_(None))
            .values(hsds_id=sa.bindparam("row_hsds_id")))
    with op.get_context().autocommit_block():
        while ids := list(bind.execute(pending).scalars()):
            bind.execute(fill, [{"row_id": i, "row_hsds_id": hsds_id(kind, i)} for i in ids])


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("hsds_id", sa.Uuid))
    for table, kind in TABLES.items():
        _backfill(table, kind)
        create_index_concurrently(f"ix_{table}_hsds_id", table, "hsds_id", unique=True)


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_hsds_id", table_name=table)
        op.drop_column(table, "hsds_id")
