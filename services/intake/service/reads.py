"""Read use cases: a read of a case (the owner all of it, a recipient what its referral shares), and the
referral service's clearance (may this case be referred to that agency for these categories?). Both ask
``domain.disclosure``; this module gathers its inputs and records the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain, schemas, store
from services.intake.service.common import Resources, now, view
from services.intake.service.consent import consent_states
from services.intake.store import CaseRow
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import not_found
from shared.ids import is_case_id


async def _decide(session: AsyncSession, case: CaseRow, recipient: str, referrals: list[domain.Shared] | None,
                  purpose: str, at: datetime) -> domain.Disclosure:
    """The disclosure rule for ``recipient``, over what the database holds; ``referrals`` None: the recipient's
    referrals of the case from its owner, as intake's read model knows them."""
    if referrals is None and recipient != case.owner_agency:
        referrals = [domain.Shared(r.status, frozenset(r.shared_categories), r.consent_id)
                     for r in await store.referrals_of(session, case.id, from_agency=case.owner_agency,
                                                       to_agency=recipient)]
    if recipient == case.owner_agency or not referrals:  # nothing more to look up
        return domain.disclosure(owner=case.owner_agency, case_status=case.status, recipient=recipient,
                                 referrals=referrals or [], suspended=False, consents=[], overrides=[],
                                 purpose=purpose, at=at)
    overrides = [domain.OverrideGrant(o.id, o.approved_at, o.valid_until, o.revoked_at)
                 for o in await store.overrides(session, case.id, recipient)]
    return domain.disclosure(
        owner=case.owner_agency, case_status=case.status, recipient=recipient, referrals=referrals,
        suspended=await store.agency_suspended(session, recipient), consents=await consent_states(session, case.id),
        overrides=overrides, purpose=purpose, at=at)


class _MayBeNews(Exception):
    """A refusal that a referral event not yet applied could turn into a grant."""


# Refusals for want of a referral intake may simply not have heard of yet (it learns of referrals by events).
_NEWS_COULD_CHANGE = frozenset({"not-a-party", "referral-not-open"})


@dataclass(frozen=True)
class Reads:
    """Who sees what of a case. Every read -- granted or refused -- writes an access record in the same
    transaction as its decision, and a refused read commits its record before the caller gets its 404."""

    res: Resources
    # Wait until every referral event the broker holds is applied (True) or give up (False); None: never wait.
    referrals_applied: Callable[[], Awaitable[bool]] | None = None

    async def read(self, principal: Principal, case_id: str, purpose: str) -> dict[str, Any]:
        try:
            return await self._read(principal, case_id, purpose, wait_for_news=self.referrals_applied is not None)
        except _MayBeNews:
            # Every refusal is a permanent audit entry, read by auditors as an agency reaching for a case it may
            # not see: a recipient that reads the moment it is told of a referral must not leave one because our
            # copy of the referral was a few hundred milliseconds behind. So apply what the broker holds first.
            assert self.referrals_applied is not None
            await self.referrals_applied()
            return await self._read(principal, case_id, purpose, wait_for_news=False)

    async def _read(self, principal: Principal, case_id: str, purpose: str, *, wait_for_news: bool) -> dict[str, Any]:
        at = now()
        async with unit_of_work(self.res.sessions) as session:
            well_formed = is_case_id(case_id)
            row = await store.case(session, case_id) if well_formed else None
            decision = (await _decide(session, row, principal.agency_id, None, purpose, at) if row is not None
                        else domain.Disclosure(False, "not-a-party"))
            if wait_for_news and row is not None and decision.reason in _NEWS_COULD_CHANGE:
                raise _MayBeNews  # nothing written yet: the unit of work rolls back
            # A malformed id: a 404 like any unknown case, and still an attempt worth an entry -- without the
            # string typed.
            reason = decision.reason if well_formed else "malformed-id"
            role = "owner" if decision.owner else "none" if reason in ("not-a-party", "malformed-id") else "recipient"
            shown: dict[str, Any] | None = None
            if decision.permitted and row is not None:
                full = view(row, await self.res.personal(session, row))
                shown = full if decision.owner else domain.project(full, decision.categories)
            consent = decision.consent
            await self.res.access(
                session, principal, action="case.read", outcome="success" if decision.permitted else "denied",
                case_id=case_id, purpose=purpose, categories=sorted(decision.categories), reason=reason,
                consent_id=consent.id if consent else None, consent_version=consent.version if consent else None,
                override_id=decision.override_id, role=role)
        if shown is None:
            raise not_found("case")
        return shown

    async def clearance(self, body: schemas.ClearanceBody) -> dict[str, Any]:
        """The same rule as a read, asked of the referral about to be made (its categories, no consent of its
        own yet), for the referral service."""
        at = now()
        async with self.res.sessions() as session:
            case = await store.case(session, body.case_id) if is_case_id(body.case_id) else None
            if case is None or (body.from_agency is not None and body.from_agency != case.owner_agency):
                raise not_found("case")
            # Unknown age answers as a child (rule 4), so the child guards apply and nothing waits for an age.
            facts = {"is_minor": domain.presumed_minor(case.is_minor), "age_known": case.is_minor is not None,
                     "bia_completed": case.bia_completed_at is not None,
                     "bid_completed": case.bid_completed_at is not None,
                     "fear_of_return": bool(case.facts.get("fear_of_return")), "status": case.status}
            proposed = domain.Shared("requested", frozenset(body.data_categories), consent_id=None)
            decision = await _decide(session, case, body.to_agency, [proposed], body.purpose, at)
        consent = decision.consent
        return {"permitted": decision.permitted,
                "reason": "override" if decision.override_id else decision.reason,
                "consent_id": consent.id if consent else None,
                "consent_version": consent.version if consent else None,
                "override_id": decision.override_id, "facts": facts}
