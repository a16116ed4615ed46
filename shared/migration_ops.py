"""Pieces every service's first Alembic migration needs: the outbox and inbox tables."""

from __future__ import annotations

from alembic import op

from shared.consumer import INBOX_DDL, INBOX_DROP
from shared.outbox import OUTBOX_DDL, OUTBOX_DROP


def create_messaging_tables() -> None:
    for statement in (*OUTBOX_DDL, *INBOX_DDL):
        op.execute(statement)


def drop_messaging_tables() -> None:
    for statement in (*INBOX_DROP, *OUTBOX_DROP):
        op.execute(statement)
