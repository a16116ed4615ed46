"""Each location carries its service's search attributes, and one GiST index covers point and filters.

With 100,000 services the bounding box of a 300 km search holds ~1,400 locations, of which only a few
dozen belong to services of the asked taxonomy that accept referrals: joining every one to ``services`` to
find them out was most of the search's time (registry_0003's index narrows by place only). So each
location keeps a copy of what the common filters read -- its service's taxonomy, whether it accepts
referrals, whether it is active -- and a GiST index (``btree_gist`` for the scalar columns) finds the
locations near the point *and* of the taxonomy's root *and* accepting in one scan.

The copies are the database's, kept by triggers rather than by each writer (so the previous release's
code, which knows nothing of them, keeps them right too during a rollout): a location takes its service's
values when inserted (under a share lock on the service row, so a concurrent capacity change cannot slip
between the read and the commit), and a change of the service's taxonomy, status or capacity is copied to
its locations in the same transaction. The search still checks the services' own columns; the copies only
let the index discard locations early. The backfill runs in the migration's transaction, with the triggers
already in place: a directory of 100,000 locations takes seconds.

Revision ID: registry_0004
"""

from alembic import op

revision = "registry_0004"
down_revision = "registry_0003"
branch_labels = None
depends_on = None

def upgrade() -> None:
    # A trusted extension (PostgreSQL 13+): the database's owner may create it, no superuser needed.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute("ALTER TABLE locations ADD COLUMN service_taxonomy varchar(64), "
               "ADD COLUMN service_accepting boolean, ADD COLUMN service_active boolean")
    op.execute("""
        CREATE FUNCTION locations_copy_service() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            SELECT s.taxonomy, (s.capacity_status = 'accepting' AND s.capacity_available > 0), (s.status = 'active')
              INTO NEW.service_taxonomy, NEW.service_accepting, NEW.service_active
              FROM services s WHERE s.id = NEW.service_id FOR SHARE;
            RETURN NEW;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER locations_copy_service BEFORE INSERT OR UPDATE OF service_id ON locations
        FOR EACH ROW EXECUTE FUNCTION locations_copy_service()
    """)
    op.execute("""
        CREATE FUNCTION services_copy_to_locations() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE locations
               SET service_taxonomy = NEW.taxonomy,
                   service_accepting = (NEW.capacity_status = 'accepting' AND NEW.capacity_available > 0),
                   service_active = (NEW.status = 'active')
             WHERE service_id = NEW.id;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER services_copy_to_locations
        AFTER UPDATE OF taxonomy, status, capacity_status, capacity_available ON services
        FOR EACH ROW WHEN (OLD.taxonomy IS DISTINCT FROM NEW.taxonomy OR OLD.status IS DISTINCT FROM NEW.status
                           OR (OLD.capacity_status = 'accepting' AND OLD.capacity_available > 0)
                              IS DISTINCT FROM (NEW.capacity_status = 'accepting' AND NEW.capacity_available > 0))
        EXECUTE FUNCTION services_copy_to_locations()
    """)
    op.execute("""
        UPDATE locations l
           SET service_taxonomy = s.taxonomy,
               service_accepting = (s.capacity_status = 'accepting' AND s.capacity_available > 0),
               service_active = (s.status = 'active')
          FROM services s WHERE s.id = l.service_id
    """)
    # Searches only ever list active services, and the taxonomy is matched on its root (a prefix such as
    # "health" or a code such as "health.srh" both fall under one root). registry_0003's ix_locations_point
    # stays for the previous release's replicas during a rollout (expand, then contract: a later release
    # drops it).
    op.execute(
        "CREATE INDEX ix_locations_search ON locations USING gist "
        "(point(longitude, latitude), split_part(service_taxonomy, '.', 1), service_accepting) "
        "WHERE latitude IS NOT NULL AND longitude IS NOT NULL AND service_active"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_locations_search")
    op.execute("DROP TRIGGER services_copy_to_locations ON services")
    op.execute("DROP FUNCTION services_copy_to_locations()")
    op.execute("DROP TRIGGER locations_copy_service ON locations")
    op.execute("DROP FUNCTION locations_copy_service()")
    op.execute("ALTER TABLE locations DROP COLUMN service_taxonomy, DROP COLUMN service_accepting, "
               "DROP COLUMN service_active")
    # btree_gist stays: another schema object may have come to use it.
