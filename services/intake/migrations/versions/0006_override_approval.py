"""The risk-to-life override becomes an authenticated act of two people (issue 20, docs/domain.md rule 6): a request
(pending, no effect), then an approval by a different person -- from then on in force until ``valid_until`` --
and a revocation.

``approver`` (a name the caller wrote) becomes ``approved_by`` (the approving person's token subject), empty
while pending; ``approved_at``, ``revoked_by`` and ``revoked_at`` are new. Overrides made before this release
were in force from their creation: they keep that (``approved_at`` = ``created_at``) and run out at their
``valid_until`` as before -- revocable now like any other.

Consent versions say on whose authentication ``recorded_by_user`` is named (``recorded_by_attested_by``:
``token`` or ``system``; unknown, so empty, for versions recorded before).

Revision ID: intake_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "intake_0006"
down_revision = "intake_0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.alter_column("overrides", "approver", new_column_name="approved_by", existing_type=sa.String(128),
                    nullable=True)
    op.alter_column("overrides", "valid_until", existing_type=TS, nullable=True)
    op.add_column("overrides", sa.Column("approved_at", TS))
    op.add_column("overrides", sa.Column("revoked_by", sa.String(128)))
    op.add_column("overrides", sa.Column("revoked_at", TS))
    op.execute("UPDATE overrides SET approved_at = created_at")
    # A new column, not a change of any version: the append-only trigger guards rows, not the table's shape.
    op.add_column("consents", sa.Column("recorded_by_attested_by", sa.String(8)))
    # The two-person rule and the approval's parts, held by the database too, whatever the code does.
    op.create_check_constraint("ck_overrides_second_person", "overrides",
                               "approved_by IS NULL OR approved_by <> requested_by")
    op.create_check_constraint(
        "ck_overrides_approval_whole", "overrides",
        "(approved_by IS NULL) = (approved_at IS NULL) AND (approved_at IS NULL) = (valid_until IS NULL)")
    op.create_check_constraint("ck_overrides_revocation_whole", "overrides",
                               "(revoked_by IS NULL) = (revoked_at IS NULL)")


def downgrade() -> None:
    # The older release knows no pending or revoked override: a request never approved disappears (it had no
    # effect), a revoked one ends where it was revoked.
    op.drop_constraint("ck_overrides_revocation_whole", "overrides", type_="check")
    op.drop_constraint("ck_overrides_approval_whole", "overrides", type_="check")
    op.drop_constraint("ck_overrides_second_person", "overrides", type_="check")
    op.drop_column("consents", "recorded_by_attested_by")
    op.execute("DELETE FROM overrides WHERE approved_at IS NULL")
    op.execute("UPDATE overrides SET valid_until = LEAST(valid_until, revoked_at) WHERE revoked_at IS NOT NULL")
    op.drop_column("overrides", "revoked_at")
    op.drop_column("overrides", "revoked_by")
    op.drop_column("overrides", "approved_at")
    op.alter_column("overrides", "valid_until", existing_type=TS, nullable=False)
    op.alter_column("overrides", "approved_by", new_column_name="approver", existing_type=sa.String(128),
                    nullable=False)
