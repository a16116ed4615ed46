"""Case use cases: register (with Idempotency-Key replay), list the owner's cases, update a case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain, schemas, store
from services.intake import events as ev
from services.intake.crypto import new_data_key, open_sealed, seal, wrap
from services.intake.service.common import (
    CASE_LABEL,
    PERSON_SEALED,
    Resources,
    anything_in_clear,
    case_event,
    now,
    own_case,
    seal_clear_facts,
    view,
)
from services.intake.service.consent import check_consent, store_consent
from services.intake.store import CaseKeyRow, CaseRow
from shared import idempotency, pagination
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem
from shared.ids import new_id

#: The fingerprint's label: a case registration (shared.idempotency).
REGISTRATION = b"refnet-intake-registration"


def registration_fingerprint(data_key: bytes, body: schemas.CaseBody) -> bytes:
    return idempotency.fingerprint(data_key, REGISTRATION, body.model_dump(mode="json"))


@dataclass(frozen=True)
class Cases:
    """The owner's cases: register, list, update (reads by anyone are ``Reads``')."""

    res: Resources

    async def register(self, principal: Principal, body: schemas.CaseBody, purpose: str,
                       idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """-> (the case, whether it is the replay of an earlier registration with the same Idempotency-Key).

        A case system that lost the answer to a registration sends it again with the same key and gets the
        case the first attempt made, not a second record of the same person.
        """
        res = self.res
        if idempotency_key is not None:
            async with unit_of_work(res.sessions) as session:
                existing = await store.case_by_key(session, principal.agency_id, idempotency_key)
                if existing is not None:
                    return await self._replay(session, principal, existing, body, purpose), True
        keys = res.keys.current()
        at = now()
        age = domain.age_at_intake(body.person, at.date())
        minor = domain.is_minor(age)
        if body.initial_consent is not None:
            check_consent(body.initial_consent, minor, prefix=("body", "initial_consent"))
        case_id = new_id("case")
        data_key = new_data_key()
        person = body.person.model_dump(mode="json")
        screening = body.screening.model_dump(mode="json")
        # In clear only what a decision or a listing needs (is_minor, trafficking status, fear of return, needs);
        # gender, citizenship, age band and the trafficking facts are sealed with the names, and die with them.
        personal = {"person": {k: person[k] for k in PERSON_SEALED}, "notes": screening.pop("notes"),
                    "screening": {k: screening.pop(k) for k in domain.SEALED_FACTS},
                    "age_band": domain.age_band(age)}
        row = CaseRow(
            id=case_id, owner_agency=principal.agency_id, status="active", is_minor=minor,
            trafficking_status=body.screening.trafficking_status, facts=screening,
            sealed=seal(data_key, personal, case_id=case_id, label=CASE_LABEL),
            created_by_client=principal.client_id, created_at=at, updated_at=at,
            idempotency_key=idempotency_key,
            request_fingerprint=registration_fingerprint(data_key, body) if idempotency_key is not None else None,
        )
        try:
            async with unit_of_work(res.sessions) as session:
                session.add(row)
                await session.flush()
                session.add(CaseKeyRow(case_id=case_id, wrapped_key=wrap(data_key, keys.current, case_id),
                                       master_key_id=keys.current.key_id))
                await res.emit(session, ev.CASE_REGISTERED, case_id, case_event(row, principal, purpose))
                if body.initial_consent is not None:
                    await session.flush()
                    await store_consent(res, session, principal, row, data_key, body.initial_consent, version=1)
        except IntegrityError:
            # The key's first attempt committed while we were working (the unique constraint says so): answer
            # with its case.
            if idempotency_key is None:
                raise
            async with unit_of_work(res.sessions) as session:
                existing = await store.case_by_key(session, principal.agency_id, idempotency_key)
                if existing is None:
                    raise
                return await self._replay(session, principal, existing, body, purpose), True
        return view(row, personal), False

    async def _replay(self, session: AsyncSession, principal: Principal, row: CaseRow, body: schemas.CaseBody,
                      purpose: str) -> dict[str, Any]:
        data_key = await self.res.data_key(session, row.id)
        if data_key is None:
            raise Problem(409, "case-erased", "The case registered with this Idempotency-Key was erased.")
        stored = bytes(row.request_fingerprint) if row.request_fingerprint is not None else None
        if not idempotency.same_request(stored, data_key, REGISTRATION, body.model_dump(mode="json")):
            raise idempotency.key_reused()
        # The answer carries the person's data again: that is a read by the owner, recorded like any other.
        await self.res.access(session, principal, action="case.read", outcome="success", case_id=row.id,
                              purpose=purpose, categories=sorted(domain.ALL_CATEGORIES), role="owner", replay=True)
        return view(row, await self.res.personal(session, row))

    async def list(
        self, principal: Principal, *, status: str | None, trafficking_status: str | None,
        needs: str | None, limit: int, cursor: str | None,
    ) -> dict[str, Any]:
        after = pagination.decode_id("case", cursor)
        async with unit_of_work(self.res.sessions) as session:
            rows = await store.cases_page(session, principal.agency_id, status=status,
                                          trafficking_status=trafficking_status, needs=needs, after=after,
                                          limit=limit + 1)
            await self.res.access(session, principal, action="case.list", outcome="success", case_id=None,
                                  count=min(len(rows), limit))
        page = rows[:limit]
        items = [
            {"id": r.id, "status": r.status, "owner_agency": r.owner_agency, "created_at": r.created_at.isoformat(),
             "is_minor": r.is_minor, "trafficking_status": r.trafficking_status,
             "needs": r.facts.get("needs", [])}
            for r in page
        ]
        next_cursor = pagination.encode("case", page[-1].id) if len(rows) > limit and page else None
        return {"items": items, "next_cursor": next_cursor}

    async def update(self, principal: Principal, case_id: str, patch: schemas.CasePatch,
                     purpose: str) -> dict[str, Any]:
        changes = patch.model_dump(mode="json", exclude_unset=True)
        person_changes = patch.person.model_dump(mode="json", exclude_unset=True) if patch.person else {}
        nulls = [["body", n] for n, v in changes.items() if v is None and n in schemas.NOT_NULLABLE]
        nulls += [["body", "person", n] for n, v in person_changes.items()
                  if v is None and n in schemas.NOT_NULLABLE]
        if nulls:
            raise Problem(422, "validation-error",
                          f"The request is not valid: {', '.join('.'.join(loc) for loc in nulls)}.",
                          title="Unprocessable Content",
                          errors=[{"loc": loc, "msg": "must not be null"} for loc in nulls])
        res = self.res
        async with unit_of_work(res.sessions) as session:
            row = await own_case(session, principal, case_id, lock=True)
            if row.status == "erased":
                raise Problem(409, "case-erased", "The case was erased; it cannot change.")
            facts = dict(row.facts)
            sealed_changes: dict[str, Any] = {}
            for name in changes.keys() - {"person", "notes"}:
                value = getattr(patch, name)
                if name == "status":
                    row.status = value
                elif name == "bia_completed_at":
                    row.bia_completed_at = value
                elif name == "bid_completed_at":
                    row.bid_completed_at = value
                elif name in domain.SEALED_FACTS:
                    sealed_changes[name] = changes[name]
                else:
                    facts[name] = changes[name]
                    if name == "trafficking_status":
                        row.trafficking_status = value
            row.facts = facts
            if person_changes or sealed_changes or "notes" in changes or anything_in_clear(row):
                data_key = await res.data_key(session, row.id)
                assert data_key is not None and row.sealed is not None  # only erased cases have no key
                personal = seal_clear_facts(row, open_sealed(data_key, row.sealed, case_id=row.id,
                                                             label=CASE_LABEL))
                personal["person"].update(person_changes)
                personal.setdefault("screening", {}).update(sealed_changes)
                if "notes" in changes:
                    personal["notes"] = changes["notes"]
                row.sealed = seal(data_key, personal, case_id=row.id, label=CASE_LABEL)
            row.updated_at = now()
            changed = sorted([*(changes.keys() - {"person"}), *(f"person.{k}" for k in person_changes)])
            closing = changes.get("status") in ("closed", "closed_referred")
            await res.emit(session, ev.CASE_CLOSED if closing else ev.CASE_UPDATED, row.id,
                           case_event(row, principal, purpose, changed))
            return view(row, await res.personal(session, row))
