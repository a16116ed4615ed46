"""Trafficking facts under the case key: exploitation types, means of control, recruiter relation, migration
status, risk level, country of exploitation and who identified the person move from the clear ``facts``
column into the case's sealed blob, so erasing the case (destroying its data key) destroys them too.

Existing cases are re-sealed here, which needs the master key (``REFNET_INTAKE_MASTER_KEY_FILE``, as the
service itself reads it); erased cases have no key and simply lose the facts they should have lost at
erasure. A database with cases and no master key configured stops the migration with that message.

Revision ID: intake_0005
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "intake_0005"
down_revision = "intake_0004"
branch_labels = None
depends_on = None

# A copy, not an import: this migration must keep meaning what it meant when it was written.
MOVED = ("identified_by", "country_of_exploitation", "exploitation_types", "means_of_control",
         "recruiter_relation", "migration_status", "risk_level")
CASE_LABEL = "case"


def _keyring() -> Any:
    from services.intake.crypto import KeyUnavailable
    from services.intake.settings import IntakeSettings

    try:
        return IntakeSettings().keyring()
    except KeyUnavailable as exc:
        raise RuntimeError(
            "intake_0005 re-seals existing cases and needs the master key: set REFNET_INTAKE_MASTER_KEY_FILE "
            f"({exc})") from None


def _move(to_sealed: bool) -> None:
    from services.intake.crypto import open_sealed, seal, unwrap

    bind = op.get_bind()
    cases = sa.table("cases", sa.column("id", sa.String), sa.column("facts", JSONB),
                     sa.column("sealed", sa.LargeBinary))
    rows = bind.execute(sa.text("SELECT c.id, c.facts, c.sealed, k.wrapped_key, k.master_key_id FROM cases c "
                                "LEFT JOIN case_keys k ON k.case_id = c.id ORDER BY c.id")).all()
    keyring = None
    for case_id, facts, sealed, wrapped, master_key_id in rows:
        if sealed is None or wrapped is None:
            if to_sealed and any(name in facts for name in MOVED):
                # Erased: the key is gone, and these facts should have gone with it.
                bind.execute(cases.update().where(cases.c.id == case_id).values(
                    facts={k: v for k, v in facts.items() if k not in MOVED}))
            continue
        keyring = keyring or _keyring()
        data_key = unwrap(bytes(wrapped), keyring.by_id(master_key_id), case_id)
        personal = open_sealed(data_key, bytes(sealed), case_id=case_id, label=CASE_LABEL)
        if to_sealed:
            moved = {k: facts[k] for k in MOVED if k in facts}
            personal["screening"] = {**personal.get("screening", {}), **moved}
            facts = {k: v for k, v in facts.items() if k not in MOVED}
        else:
            facts = {**facts, **{k: v for k, v in personal.pop("screening", {}).items() if k in MOVED}}
        bind.execute(cases.update().where(cases.c.id == case_id).values(
            facts=facts, sealed=seal(data_key, personal, case_id=case_id, label=CASE_LABEL)))


def upgrade() -> None:
    _move(to_sealed=True)


def downgrade() -> None:
    _move(to_sealed=False)
