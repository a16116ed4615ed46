"""Access records: who touched which case's data, when, why, with what outcome.

Every read of case data (granted or refused), every issued or refused token, every consent action is an
access record on ``refnet.audit.access``, written through the outbox in the same transaction as the thing
it records. The audit service turns each into a log entry (docs/contract.md, audit). The schema is closed:
ids, enumerations and timestamps only -- never a name, a birth date, a contact or free text. Who acted is
``acting_user`` with ``attested_by``: whether a person's own verified token named them, or the agency's
system asserted it (docs/domain.md rule 10).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contract import ACCESS_RECORDED
from shared.outbox import add_event
from shared.topics import AUDIT_ACCESS

# Opaque ids and enumeration values: letters, digits and a few separators, no spaces, bounded.
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")]
DETAIL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")

Outcome = Literal["success", "denied", "error"]
#: On whose authentication ``acting_user`` is named: ``token`` a person's verified access token, ``system``
#: the agency's system client asserting it (X-Acting-User); None when no person is named.
Attestation = Literal["token", "system"]


class AccessRecord(BaseModel):
    """One access, as the recording service saw it. Unknown fields are refused, not dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Token  # case.read, token.issue, token.refused, access.denied, consent.override, ...
    outcome: Outcome
    agency: Token | None = None  # the acting agency
    client_id: Token | None = None
    acting_user: Token | None = None
    attested_by: Attestation | None = None
    purpose: Token | None = None  # X-Purpose: case_management, referral, audit, ...
    resource_type: Token | None = None  # Case, Consent, Referral, Token, ...
    resource_id: Token | None = None
    case_id: Token | None = None
    # Non-identifying facts only: data categories read, consent version in force, reason codes.
    details: dict[Token, Token | int | bool | list[Token] | None] = Field(default_factory=dict)


async def record_access(session: AsyncSession, *, source: str, record: AccessRecord) -> None:
    """Write the record to the outbox in the caller's transaction (keyed by case, else by agency)."""
    key = record.case_id or record.agency or record.client_id or "unknown"
    await add_event(
        session,
        source=source,
        topic=AUDIT_ACCESS,
        type=ACCESS_RECORDED,
        aggregate_type=record.resource_type or "Access",
        aggregate_id=key,
        payload=record.model_dump(mode="json"),
        subject=record.resource_id,
    )


def parse_access_record(data: dict[str, Any]) -> AccessRecord:
    """For consumers: raises pydantic.ValidationError on anything outside the closed schema."""
    return AccessRecord.model_validate(data)
