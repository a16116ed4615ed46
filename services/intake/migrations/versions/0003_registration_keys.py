"""Idempotent registration: a case remembers the Idempotency-Key it was registered with (unique per owner)
and an HMAC of that request under its own data key, so a retried registration finds it instead of making a
second record of the same person.

Revision ID: intake_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "intake_0003"
down_revision = "intake_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("idempotency_key", sa.String(255)))
    op.add_column("cases", sa.Column("request_fingerprint", sa.LargeBinary()))
    # NULLs never collide: cases registered without a key are not constrained.
    op.create_unique_constraint("uq_cases_owner_agency", "cases", ["owner_agency", "idempotency_key"])


def downgrade() -> None:
    op.drop_constraint("uq_cases_owner_agency", "cases", type_="unique")
    op.drop_column("cases", "request_fingerprint")
    op.drop_column("cases", "idempotency_key")
