"""Trafficking facts under the case key (exploitation types, means of control, recruiter relation, migration
status, risk level, country of exploitation, who identified): from this release intake seals them with the
names, so erasure destroys them.

Here: erased cases lose the facts their erasure should have destroyed (no key needed -- there is none). Live
cases are re-sealed by intake itself, which holds the master key (``service.seal_clear_facts``, at start-up
and hourly, in batches), so the migration job needs no key and old replicas of a rolling upgrade keep
working; the service reads both shapes meanwhile.

Revision ID: intake_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "intake_0005"
down_revision = "intake_0004"
branch_labels = None
depends_on = None

# A copy, not an import: this migration must keep meaning what it meant when it was written.
MOVED = ["identified_by", "country_of_exploitation", "exploitation_types", "means_of_control",
         "recruiter_relation", "migration_status", "risk_level"]


def upgrade() -> None:
    statement = sa.text("UPDATE cases SET facts = facts - CAST(:moved AS text[]) "
                        "WHERE sealed IS NULL AND facts ?| CAST(:moved AS text[])")
    op.get_bind().execute(statement, {"moved": MOVED})


def downgrade() -> None:
    pass  # destroyed facts cannot come back, and the older release reads cases without them
