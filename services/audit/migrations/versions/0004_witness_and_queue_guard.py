"""Witness cosignatures, verification marks, and a queue the writer cannot empty unseen.

- ``audit_cosignatures``: a witness's C2SP cosignature of a signed checkpoint (append-only, as the log).
- ``audit_verified``: the checkpoints a verification recomputed the log up to, so the next one starts there
  (append-only).
- ``audit_pending``: a queued entry may leave the queue only once the log holds it. The writer keeps
  DELETE (the sequencer removes what it appended) but a trigger refuses any other deletion, whoever asks,
  and TRUNCATE; only the table's owner could drop the trigger.

Revision ID: audit_0004
"""

from alembic import op

revision = "audit_0004"
down_revision = "audit_0003"
branch_labels = None
depends_on = None

WRITER = "refnet_audit_writer"
NEW_LOG_TABLES = ("audit_cosignatures", "audit_verified")

UPGRADE = [
    """
CREATE TABLE audit_cosignatures (
    tree_size   BIGINT NOT NULL CHECK (tree_size >= 0),
    witness     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    cosigned_at BIGINT NOT NULL CHECK (cosigned_at >= 0),
    line        TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, key_id)
)""",
    """
CREATE TABLE audit_verified (
    tree_size   BIGINT PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   BYTEA NOT NULL CHECK (octet_length(root_hash) = 32),
    verified_at TIMESTAMPTZ NOT NULL,
    full_scan   BOOLEAN NOT NULL
)""",
    *[
        statement
        for table in NEW_LOG_TABLES
        for statement in (
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refnet_audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION refnet_audit_append_only()",
        )
    ],
    *[f"GRANT SELECT, INSERT ON {table} TO {WRITER}" for table in NEW_LOG_TABLES],
    """
CREATE FUNCTION refnet_audit_pending_leaves_only_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_entries e
                   WHERE e.source_service = OLD.source_service AND e.event_id = OLD.event_id) THEN
        RAISE EXCEPTION 'a queued audit entry leaves the queue only into the log'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END $$""",
    "CREATE TRIGGER audit_pending_only_logged BEFORE DELETE ON audit_pending "
    "FOR EACH ROW EXECUTE FUNCTION refnet_audit_pending_leaves_only_logged()",
    "CREATE TRIGGER audit_pending_no_truncate BEFORE TRUNCATE ON audit_pending "
    "FOR EACH STATEMENT EXECUTE FUNCTION refnet_audit_append_only()",
]

DOWNGRADE = [
    "DROP TRIGGER audit_pending_no_truncate ON audit_pending",
    "DROP TRIGGER audit_pending_only_logged ON audit_pending",
    "DROP FUNCTION refnet_audit_pending_leaves_only_logged()",
    f"REVOKE ALL ON {', '.join(NEW_LOG_TABLES)} FROM {WRITER}",
    "DROP TABLE audit_verified",
    "DROP TABLE audit_cosignatures",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
