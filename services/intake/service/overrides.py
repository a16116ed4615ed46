"""The risk-to-life override (DOMAIN.md rule 6): disclosure to one recipient without consent, for a while,
requested by one named person and approved by another."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.intake import domain, schemas
from services.intake import events as ev
from services.intake.crypto import seal
from services.intake.service.common import Resources, actor, now, own_case
from services.intake.store import OverrideRow
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem
from shared.ids import new_id


@dataclass(frozen=True)
class Overrides:
    res: Resources
    validity: timedelta = domain.OVERRIDE_VALIDITY

    async def create(self, principal: Principal, case_id: str, body: schemas.OverrideBody) -> dict[str, Any]:
        res = self.res
        try:
            domain.check_override(requested_by=principal.acting_user, approver=body.approver)
        except domain.OverrideRefused as refused:
            async with unit_of_work(res.sessions) as session:
                await own_case(session, principal, case_id)
                await res.access(session, principal, action="consent.override", outcome="denied", case_id=case_id,
                                 resource_type="Override", reason=refused.slug)
            raise Problem(422, refused.slug, refused.message, title="Unprocessable Content",
                          errors=[{"loc": ["body", refused.field] if refused.field == "approver"
                                   else ["header", refused.field], "msg": refused.message}]) from None
        async with unit_of_work(res.sessions) as session:
            case = await own_case(session, principal, case_id, lock=True)
            if case.status == "erased":
                raise Problem(409, "case-erased", "The case was erased; nothing can be disclosed.")
            data_key = await res.data_key(session, case.id)
            assert data_key is not None
            at = now()
            override_id = new_id("override")
            row = OverrideRow(
                id=override_id, case_id=case.id, agency=principal.agency_id, recipient_agency=body.recipient_agency,
                requested_by=principal.acting_user or "", approver=body.approver, client_id=principal.client_id,
                sealed_justification=seal(data_key, {"justification": body.justification}, case_id=case.id,
                                          label=f"override:{override_id}"),
                created_at=at, valid_until=at + self.validity,
            )
            session.add(row)
            await res.emit(session, ev.CONSENT_OVERRIDDEN, case.id, ev.ConsentOverridden(
                case_id=case.id, **actor(principal), override_id=override_id,
                recipient_agency=body.recipient_agency, approver=body.approver, valid_until=row.valid_until))
        return {"id": override_id, "case_id": case.id, "recipient_agency": body.recipient_agency,
                "requested_by": row.requested_by, "approver": body.approver, "created_at": at.isoformat(),
                "valid_until": row.valid_until.isoformat()}
