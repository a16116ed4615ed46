"""Cases, their wrapped data keys, consent versions (append-only), overrides, read models.

Revision ID: intake_0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "intake_0002"
down_revision = "intake_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner_agency", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("is_minor", sa.Boolean()),
        sa.Column("age_band", sa.String(16), nullable=False),
        sa.Column("gender", sa.String(32), nullable=False),
        sa.Column("citizenship", sa.String(2)),
        sa.Column("trafficking_status", sa.String(32)),
        sa.Column("facts", JSONB, nullable=False),
        sa.Column("bia_completed_at", sa.Date()),
        sa.Column("bid_completed_at", sa.Date()),
        sa.Column("sealed", sa.LargeBinary()),
        sa.Column("created_by_client", sa.String(128), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("erased_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
    )
    op.create_index("ix_cases_owner_agency", "cases", ["owner_agency"])
    op.create_table(
        "case_keys",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(32), nullable=False),
        sa.Column("rewrapped_at", TS),
        sa.PrimaryKeyConstraint("case_id", name="pk_case_keys"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_case_keys_case_id_cases"),
    )
    op.create_index("ix_case_keys_master_key_id", "case_keys", ["master_key_id"])
    op.create_table(
        "consents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("withdraws", sa.String(64)),
        sa.Column("grantor", sa.String(16)),
        sa.Column("child_assent", sa.Boolean()),
        sa.Column("method", sa.String(16)),
        sa.Column("language", sa.String(3)),
        sa.Column("interpreter_used", sa.Boolean()),
        sa.Column("provisions", JSONB, nullable=False),
        sa.Column("checklist", JSONB),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_until", TS),
        sa.Column("recorded_by_agency", sa.String(128), nullable=False),
        sa.Column("recorded_by_client", sa.String(128), nullable=False),
        sa.Column("recorded_by_user", sa.String(128)),
        sa.Column("sealed", sa.LargeBinary()),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_consents_case_id_cases"),
        sa.UniqueConstraint("case_id", "version", name="uq_consents_case_id"),
    )
    op.create_index("ix_consents_case_id", "consents", ["case_id"])
    # Consent is a record of what a person agreed to, when: versions are never changed or removed.
    op.execute(
        """
CREATE FUNCTION intake_consents_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent versions are append-only';
END $$"""
    )
    op.execute(
        "CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents "
        "FOR EACH ROW EXECUTE FUNCTION intake_consents_append_only()"
    )
    op.create_table(
        "overrides",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("agency", sa.String(128), nullable=False),
        sa.Column("recipient_agency", sa.String(128), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("sealed_justification", sa.LargeBinary()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("valid_until", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_overrides"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_overrides_case_id_cases"),
    )
    op.create_index("ix_overrides_case_id", "overrides", ["case_id"])
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("from_agency", sa.String(128), nullable=False),
        sa.Column("to_agency", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("pathway", sa.String(32)),
        sa.Column("shared_categories", JSONB, nullable=False),
        sa.Column("consent_id", sa.String(64)),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_referrals"),
    )
    op.create_index("ix_referrals_case_id", "referrals", ["case_id"])
    op.create_table(
        "agencies",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agencies"),
    )


def downgrade() -> None:
    for table in ("agencies", "referrals", "overrides"):
        op.drop_table(table)
    op.execute("DROP TRIGGER consents_append_only ON consents")
    op.execute("DROP FUNCTION intake_consents_append_only()")
    for table in ("consents", "case_keys", "cases"):
        op.drop_table(table)
