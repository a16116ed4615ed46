"""The risk-to-life override (docs/domain.md rule 6): disclosure to one recipient without consent, for a while --
requested by one person, approved by a different supervisor of the same agency, each with their own access
token; revocable. The rules are ``domain``'s; here: the case, the row, the audit entries and the event.

Audit entries, each naming its person (``acting_user``, ``attested_by`` ``token``): the request is an access
record ``consent.override.request``, the approval the ``consent.overridden`` event (``consent.override``, with
``requested_by`` beside the approver), the revocation ``consent.override.revoke``; a refused act is its
access record with outcome ``denied`` and the refusal's slug.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain, schemas, store
from services.intake import events as ev
from services.intake.crypto import seal
from services.intake.service.common import Resources, actor, now, own_case
from services.intake.store import OverrideRow
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.ids import is_override_id, new_id

REQUEST = "consent.override.request"
APPROVE = "consent.override"  # the audit action of consent.overridden, the approval's event
REVOKE = "consent.override.revoke"


def signer(principal: Principal) -> domain.Signer:
    return domain.Signer(person=principal.person, agency=principal.agency_id, roles=principal.roles,
                         scopes=principal.scopes, acr=principal.acr)


def facts(row: OverrideRow) -> domain.OverrideFacts:
    return domain.OverrideFacts(agency=row.agency, requested_by=row.requested_by, requested_at=row.created_at,
                                approved_by=row.approved_by, approved_at=row.approved_at,
                                valid_until=row.valid_until, revoked_at=row.revoked_at)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class Overrides:
    res: Resources
    #: How long an approved override is in force (and a request waits for its approval): a setting.
    validity: timedelta = domain.OVERRIDE_VALIDITY

    def view(self, row: OverrideRow, at: datetime) -> dict[str, Any]:
        """An override as its agency sees it: who, when, the state -- not the justification (free text)."""
        return {"id": row.id, "case_id": row.case_id, "recipient_agency": row.recipient_agency,
                "state": domain.override_state(facts(row), at, self.validity),
                "requested_by": row.requested_by, "requested_at": row.created_at.isoformat(),
                "approved_by": row.approved_by, "approved_at": _iso(row.approved_at),
                "valid_until": _iso(row.valid_until),
                "revoked_by": row.revoked_by, "revoked_at": _iso(row.revoked_at)}

    async def _refused(self, principal: Principal, case_id: str, action: str, refused: domain.OverrideRefused,
                       override_id: str | None) -> Problem:
        """Commit the refusal's audit entry, then the problem to raise."""
        async with unit_of_work(self.res.sessions) as session:
            await self.res.access(session, principal, action=action, outcome="denied", case_id=case_id,
                                  resource_type="Override", resource_id=override_id, reason=refused.slug)
        return Problem(refused.status, refused.slug, refused.message[:1].upper() + refused.message[1:] + ".")

    async def request(self, principal: Principal, case_id: str, body: schemas.OverrideBody) -> dict[str, Any]:
        """A person asks for disclosure without consent: pending, no effect until another person approves."""
        async with unit_of_work(self.res.sessions) as session:
            await own_case(session, principal, case_id)  # a stranger learns nothing, not even the refusal
        try:
            requester = domain.check_override_request(signer(principal))
        except domain.OverrideRefused as refused:
            raise await self._refused(principal, case_id, REQUEST, refused, None) from None
        async with unit_of_work(self.res.sessions) as session:
            case = await own_case(session, principal, case_id, lock=True)
            if case.status == "erased":
                raise Problem(409, "case-erased", "The case was erased; nothing can be disclosed.")
            data_key = await self.res.data_key(session, case.id)
            assert data_key is not None
            at = now()
            override_id = new_id("override")
            row = OverrideRow(
                id=override_id, case_id=case.id, agency=principal.agency_id, recipient_agency=body.recipient_agency,
                requested_by=requester, client_id=principal.client_id,
                sealed_justification=seal(data_key, {"justification": body.justification}, case_id=case.id,
                                          label=f"override:{override_id}"),
                created_at=at,
            )
            session.add(row)
            await self.res.access(session, principal, action=REQUEST, outcome="success", case_id=case.id,
                                  resource_type="Override", resource_id=override_id,
                                  recipient_agency=body.recipient_agency)
            return self.view(row, at)

    async def _own_override(self, session: AsyncSession, principal: Principal, case_id: str, override_id: str,
                            *, lock: bool = False) -> OverrideRow:
        await own_case(session, principal, case_id)
        row = await store.override(session, case_id, override_id, lock=lock) if is_override_id(override_id) else None
        if row is None:
            raise not_found("override")
        return row

    async def approve(self, principal: Principal, case_id: str, override_id: str) -> dict[str, Any]:
        """A second person, a supervisor of the agency, approves: in force from now for ``validity``."""
        async with unit_of_work(self.res.sessions) as session:
            row = await self._own_override(session, principal, case_id, override_id, lock=True)
            at = now()
            try:
                approver = domain.check_override_approval(facts(row), signer(principal), at, self.validity)
            except domain.OverrideRefused as refused:
                refusal = refused
            else:
                row.approved_by, row.approved_at = approver, at
                row.valid_until = domain.override_valid_until(at, self.validity)
                await self.res.emit(session, ev.CONSENT_OVERRIDDEN, row.case_id, ev.ConsentOverridden(
                    case_id=row.case_id, **actor(principal), override_id=row.id,
                    recipient_agency=row.recipient_agency, approver=approver, requested_by=row.requested_by,
                    approved_at=at, valid_until=row.valid_until))
                return self.view(row, at)
        raise await self._refused(principal, case_id, APPROVE, refusal, override_id)

    async def revoke(self, principal: Principal, case_id: str, override_id: str) -> dict[str, Any]:
        """The requester or a supervisor ends the override now: disclosure under it stops at once."""
        async with unit_of_work(self.res.sessions) as session:
            row = await self._own_override(session, principal, case_id, override_id, lock=True)
            at = now()
            try:
                revoker = domain.check_override_revocation(facts(row), signer(principal), at, self.validity)
            except domain.OverrideRefused as refused:
                refusal = refused
            else:
                row.revoked_by, row.revoked_at = revoker, at
                await self.res.access(session, principal, action=REVOKE, outcome="success", case_id=row.case_id,
                                      resource_type="Override", resource_id=row.id,
                                      recipient_agency=row.recipient_agency)
                return self.view(row, at)
        raise await self._refused(principal, case_id, REVOKE, refusal, override_id)

    async def list(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """The case's overrides, for its own agency: who asked, who approved, who revoked, and when."""
        async with unit_of_work(self.res.sessions) as session:
            case = await own_case(session, principal, case_id)
            rows = await store.case_overrides(session, case.id)
            at = now()
            return {"items": [self.view(row, at) for row in rows]}

    async def get(self, principal: Principal, case_id: str, override_id: str) -> dict[str, Any]:
        async with unit_of_work(self.res.sessions) as session:
            return self.view(await self._own_override(session, principal, case_id, override_id), now())
