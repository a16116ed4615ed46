"""Consent use cases: record a consent version, list a case's versions, withdraw the current one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain, schemas, store
from services.intake import events as ev
from services.intake.crypto import open_sealed, seal
from services.intake.service.common import Resources, actor, now, own_case
from services.intake.store import CaseRow, ConsentRow
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem, invalid, not_found
from shared.ids import is_consent_id, new_id


def check_consent(body: schemas.ConsentBody, is_minor: bool | None, *, prefix: tuple[str, ...]) -> None:
    try:
        domain.check_consent_for_case(body, case_is_minor=is_minor)
    except domain.ConsentRefused as refused:
        loc = [*prefix, refused.field]
        raise invalid(loc, refused.message) from None


def state(r: ConsentRow) -> domain.ConsentState:
    return domain.ConsentState(id=r.id, version=r.version, kind=r.kind,  # type: ignore[arg-type]
                               provisions=r.provisions, valid_from=r.valid_from, valid_until=r.valid_until)


async def consent_states(session: AsyncSession, case_id: str) -> list[domain.ConsentState]:
    return [state(r) for r in await store.consents(session, case_id)]


async def store_consent(
    res: Resources, session: AsyncSession, principal: Principal, case: CaseRow, data_key: bytes,
    body: schemas.ConsentBody, *, version: int,
) -> ConsentRow:
    """Add consent version ``version`` (its free text sealed) and its event: within the caller's transaction."""
    consent_id = new_id("consent")
    free_text = {"capacity_note": body.capacity_note, "witness": body.witness}
    row = ConsentRow(
        id=consent_id, case_id=case.id, version=version, kind="grant", grantor=body.grantor,
        child_assent=body.child_assent, method=body.method, language=body.language,
        interpreter_used=body.interpreter_used, provisions=domain.provisions_summary(body),
        checklist=body.checklist.model_dump(), valid_from=body.valid_from or now(), valid_until=body.valid_until,
        recorded_by_agency=principal.agency_id, recorded_by_client=principal.client_id,
        recorded_by_user=principal.acting_user, recorded_by_attested_by=principal.attested_by,
        sealed=seal(data_key, free_text, case_id=case.id, label=f"consent:{consent_id}"),
        created_at=now(),
    )
    session.add(row)
    await session.flush()
    await res.emit(session, ev.CONSENT_GRANTED, case.id, ev.ConsentGranted(
        case_id=case.id, **actor(principal), consent_id=consent_id, consent_version=version,
        grantor=body.grantor, provisions=[ev.ProvisionSummary(**p) for p in row.provisions],
        valid_from=row.valid_from, valid_until=row.valid_until))
    return row


def _status(row: ConsentRow, states: Sequence[domain.ConsentState], at: datetime) -> str:
    if row.kind == "withdrawal":
        return "withdrawal"
    latest = max(states, key=lambda s: s.version)
    if latest.version != row.version:
        return "withdrawn" if latest.kind == "withdrawal" and any(
            s.kind == "withdrawal" and s.version == row.version + 1 for s in states) else "superseded"
    if row.valid_from > at:
        return "pending"
    if row.valid_until is not None and row.valid_until <= at:
        return "expired"
    return "active"


def _view(row: ConsentRow, free_text: dict[str, Any] | None, states: Sequence[domain.ConsentState]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id, "case_id": row.case_id, "version": row.version, "kind": row.kind,
        "status": _status(row, states, now()), "withdraws": row.withdraws, "grantor": row.grantor,
        "child_assent": row.child_assent, "method": row.method, "language": row.language,
        "interpreter_used": row.interpreter_used, "provisions": row.provisions, "checklist": row.checklist,
        "valid_from": row.valid_from.isoformat(),
        "valid_until": row.valid_until.isoformat() if row.valid_until else None,
        "recorded_by_agency": row.recorded_by_agency, "recorded_by_user": row.recorded_by_user,
        "recorded_by_attested_by": row.recorded_by_attested_by, "created_at": row.created_at.isoformat(),
    }
    if free_text is not None:
        view.update({k: v for k, v in free_text.items()})
    return view


@dataclass(frozen=True)
class Consents:
    """A case's consent versions (append-only): grant, list, withdraw -- by the case's owner."""

    res: Resources

    async def grant(self, principal: Principal, case_id: str, body: schemas.ConsentBody) -> dict[str, Any]:
        async with unit_of_work(self.res.sessions) as session:
            case = await own_case(session, principal, case_id, lock=True)
            if case.status == "erased":
                raise Problem(409, "case-erased", "The case was erased; consent cannot be recorded.")
            check_consent(body, case.is_minor, prefix=("body",))
            data_key = await self.res.data_key(session, case.id)
            assert data_key is not None  # only erased cases have no key
            states = await consent_states(session, case.id)
            row = await store_consent(self.res, session, principal, case, data_key, body,
                                      version=max((s.version for s in states), default=0) + 1)
            states = await consent_states(session, case.id)
            return _view(row, {"capacity_note": body.capacity_note, "witness": body.witness}, states)

    async def history(self, principal: Principal, case_id: str, purpose: str) -> dict[str, Any]:
        async with unit_of_work(self.res.sessions) as session:
            case = await own_case(session, principal, case_id)
            rows = await store.consents(session, case.id)
            data_key = await self.res.data_key(session, case.id) if case.status != "erased" else None
            states = [state(r) for r in rows]
            items = []
            for r in rows:
                text = None
                if data_key is not None and r.sealed is not None:
                    text = open_sealed(data_key, r.sealed, case_id=case.id, label=f"consent:{r.id}")
                items.append(_view(r, text, states))
            await self.res.access(session, principal, action="consent.read", outcome="success", case_id=case.id,
                                  purpose=purpose, resource_type="Consent")
        return {"items": items, "next_cursor": None}

    async def withdraw(
        self, principal: Principal, case_id: str, consent_id: str, body: schemas.WithdrawBody,
    ) -> dict[str, Any]:
        async with unit_of_work(self.res.sessions) as session:
            case = await own_case(session, principal, case_id, lock=True)
            target = await store.consent(session, consent_id) if is_consent_id(consent_id) else None
            if target is None or target.case_id != case.id or target.kind != "grant":
                raise not_found("consent")
            states = await consent_states(session, case.id)
            latest = max(states, key=lambda s: s.version)
            if latest.version != target.version:
                raise Problem(409, "consent-not-current",
                              "Only the current consent version can be withdrawn; this one was already ended.")
            data_key = await self.res.data_key(session, case.id)
            version = latest.version + 1
            at = now()
            withdrawal_id = new_id("consent")
            row = ConsentRow(
                id=withdrawal_id, case_id=case.id, version=version, kind="withdrawal", withdraws=target.id,
                provisions=[], valid_from=at, recorded_by_agency=principal.agency_id,
                recorded_by_client=principal.client_id, recorded_by_user=principal.acting_user,
                recorded_by_attested_by=principal.attested_by, created_at=at,
                sealed=seal(data_key, {"reason": body.reason}, case_id=case.id, label=f"consent:{withdrawal_id}")
                if data_key is not None else None,
            )
            session.add(row)
            await session.flush()
            await self.res.emit(session, ev.CONSENT_WITHDRAWN, case.id, ev.ConsentWithdrawn(
                case_id=case.id, **actor(principal), consent_id=target.id, consent_version=version,
                withdrawn_version=target.version))
            return _view(row, {"reason": body.reason}, [*states, state(row)])
