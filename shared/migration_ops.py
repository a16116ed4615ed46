"""Pieces every service's migrations share: the outbox and inbox tables, then the outbox's retention and the
persisted revocation list."""

from __future__ import annotations

from alembic import op

from shared.consumer import INBOX_DDL, INBOX_DROP
from shared.outbox import OUTBOX_DDL, OUTBOX_DROP, OUTBOX_RETENTION_DDL, OUTBOX_RETENTION_DROP
from shared.revocation import REVOCATIONS_DDL, REVOCATIONS_DROP

#: Everything messaging needs, in migration order: for tests that build the tables without Alembic.
MESSAGING_DDL = (*OUTBOX_DDL, *INBOX_DDL, *OUTBOX_RETENTION_DDL, *REVOCATIONS_DDL)


def create_messaging_tables() -> None:
    for statement in (*OUTBOX_DDL, *INBOX_DDL):
        op.execute(statement)


def drop_messaging_tables() -> None:
    for statement in (*INBOX_DROP, *OUTBOX_DROP):
        op.execute(statement)


def create_retention_tables() -> None:
    for statement in (*OUTBOX_RETENTION_DDL, *REVOCATIONS_DDL):
        op.execute(statement)


def drop_retention_tables() -> None:
    for statement in (*REVOCATIONS_DROP, *OUTBOX_RETENTION_DROP):
        op.execute(statement)
