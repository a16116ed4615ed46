"""Trafficking facts under the case key (exploitation types, means of control, recruiter relation, migration
status, risk level, country of exploitation, who identified) and the quasi-identifiers gender, citizenship and
age band: from this release intake seals them with the names, so erasure destroys them.

Here: the demographic columns become optional, and erased cases lose what their erasure should have destroyed
(no key needed -- there is none). Live
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
    # Gender, citizenship and age band are sealed with the person from now on: their columns become optional.
    op.alter_column("cases", "gender", existing_type=sa.String(32), nullable=True)
    op.alter_column("cases", "age_band", existing_type=sa.String(16), nullable=True)
    statement = sa.text("UPDATE cases SET facts = facts - CAST(:moved AS text[]), gender = NULL, "
                        "citizenship = NULL, age_band = NULL WHERE sealed IS NULL")
    op.get_bind().execute(statement, {"moved": MOVED})


def downgrade() -> None:
    # Destroyed facts cannot come back; the older release needs values in these columns.
    op.execute("UPDATE cases SET gender = 'unknown' WHERE gender IS NULL")
    op.execute("UPDATE cases SET age_band = 'unknown' WHERE age_band IS NULL")
    op.alter_column("cases", "age_band", existing_type=sa.String(16), nullable=False)
    op.alter_column("cases", "gender", existing_type=sa.String(32), nullable=False)
