"""The append-only log: entries, Merkle nodes, signed checkpoints, and the role that may only append.

Entries wait in ``audit_pending`` (written by the consumer, in the same transaction as its inbox row) until
the single sequencer gives them their dense index, appends their leaves and nodes, and removes them from
the queue. ``audit_entries``, ``merkle_nodes`` and ``audit_checkpoints`` refuse UPDATE, DELETE and TRUNCATE
by trigger, whoever asks; the runtime role ``refnet_audit_writer`` is moreover granted only INSERT and
SELECT on them, so even dropping a trigger is beyond it (only the owner may).

Revision ID: audit_0002
"""

from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None

WRITER = "refnet_audit_writer"
LOG_TABLES = ("audit_entries", "merkle_nodes", "audit_checkpoints")

UPGRADE = [
    """
CREATE TABLE audit_pending (
    seq             BIGSERIAL PRIMARY KEY,
    source_service  TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    agency          TEXT,
    client_id       TEXT,
    acting_user     TEXT,
    purpose         TEXT,
    resource_type   TEXT,
    resource_id     TEXT,
    case_id         TEXT,
    details         JSONB NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT uq_audit_pending_event UNIQUE (source_service, event_id)
)""",
    """
CREATE TABLE audit_entries (
    idx             BIGINT PRIMARY KEY CHECK (idx >= 0),
    recorded_at     TIMESTAMPTZ NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    agency          TEXT,
    client_id       TEXT,
    acting_user     TEXT,
    purpose         TEXT,
    resource_type   TEXT,
    resource_id     TEXT,
    case_id         TEXT,
    source_service  TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    details         JSONB NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT uq_audit_entries_event UNIQUE (source_service, event_id)
)""",
    "CREATE INDEX ix_audit_entries_case ON audit_entries (case_id, idx) WHERE case_id IS NOT NULL",
    "CREATE INDEX ix_audit_entries_agency ON audit_entries (agency, idx)",
    "CREATE INDEX ix_audit_entries_action ON audit_entries (action, idx)",
    "CREATE INDEX ix_audit_entries_recorded ON audit_entries (recorded_at)",
    """
CREATE TABLE merkle_nodes (
    level  SMALLINT NOT NULL CHECK (level >= 0 AND level < 64),
    idx    BIGINT NOT NULL CHECK (idx >= 0),
    hash   BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
)""",
    """
CREATE TABLE audit_checkpoints (
    tree_size   BIGINT PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   BYTEA NOT NULL CHECK (octet_length(root_hash) = 32),
    origin      TEXT NOT NULL,
    signed_at   TIMESTAMPTZ NOT NULL,
    body        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   BYTEA NOT NULL
)""",
    """
CREATE FUNCTION refnet_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$""",
    *[
        statement
        for table in LOG_TABLES
        for statement in (
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refnet_audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION refnet_audit_append_only()",
        )
    ],
    # Roles belong to the cluster, not the database: another audit database may have made it already, or
    # the cluster's init script did (deploy/postgres/init: a LOGIN role the service connects as). Only
    # where it is missing (the local stack, tests) is it made here, NOLOGIN: the service SETs ROLE to it.
    f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WRITER}') THEN
        CREATE ROLE {WRITER} NOLOGIN;
    END IF;
END $$""",  # noqa: S608 -- a constant, not input
    f"GRANT USAGE ON SCHEMA public TO {WRITER}",
    *[f"GRANT SELECT, INSERT ON {table} TO {WRITER}" for table in LOG_TABLES],
    # DELETE on the queue: the sequencer removes what it appended, in the same transaction. The queue is
    # not the log; what it holds for the moment before sequencing is also in Kafka and in the inbox.
    f"GRANT SELECT, INSERT, DELETE ON audit_pending TO {WRITER}",
    f"GRANT USAGE ON SEQUENCE audit_pending_seq_seq TO {WRITER}",
    # The messaging tables of shared/: inbox (dedupe: insert only); consumer_marks (UPDATE and DELETE: the
    # consumer moves its per-partition mark and forgets it on a broker reset); outbox (DELETE: the relay
    # removes published rows, and claims them with SELECT ... FOR UPDATE, which needs UPDATE; audit emits
    # nothing today, but the relay runs in every service).
    f"GRANT SELECT, INSERT ON inbox TO {WRITER}",
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON consumer_marks TO {WRITER}",
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO {WRITER}",
    f"GRANT USAGE ON SEQUENCE outbox_seq_seq TO {WRITER}",
]

DOWNGRADE = [
    f"REVOKE ALL ON outbox, consumer_marks, inbox, audit_pending, {', '.join(LOG_TABLES)} FROM {WRITER}",
    f"REVOKE ALL ON SEQUENCE outbox_seq_seq FROM {WRITER}",
    f"REVOKE USAGE ON SCHEMA public FROM {WRITER}",
    # The role stays: other databases in the cluster may still grant it something.
    "DROP TABLE audit_checkpoints",
    "DROP TABLE merkle_nodes",
    "DROP TABLE audit_entries",
    "DROP TABLE audit_pending",
    "DROP FUNCTION refnet_audit_append_only()",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
