"""A GiST index on each service location's point, for directory searches within a radius.

``GET /services?near=...&radius_km=...`` first keeps the locations inside the radius's bounding box
(``point(longitude, latitude) <@ box(...)``) through this index, then computes great-circle distances for
those few: with 100,000 services the search no longer computes 100,000 distances.

Revision ID: registry_0003
"""

from alembic import op

revision = "registry_0003"
down_revision = "registry_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_locations_point ON locations USING gist (point(longitude, latitude)) "
        "WHERE latitude IS NOT NULL AND longitude IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_locations_point")
