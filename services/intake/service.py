"""intake's use cases: one transaction each (load, apply a rule of ``domain``, store, add outbox events).

Every read of case data -- granted or refused -- writes an access record in the same transaction as the
read's decision, and a refused read commits its record before the caller gets its 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import domain
from services.intake import events as ev
from services.intake.crypto import (
    Keyring,
    KeyUnavailable,
    MasterKey,
    Undecryptable,
    new_data_key,
    open_sealed,
    seal,
    unwrap,
    wrap,
)
from services.intake.store import AgencyRow, CaseKeyRow, CaseRow, ConsentRow, OverrideRow, ReferralRow
from shared.access import AccessRecord, Outcome, record_access
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.ids import is_case_id, is_consent_id, new_id
from shared.outbox import add_event

_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
PERSON_SEALED = ("given_name", "family_name", "other_names", "birth_date", "estimated_age", "gender",
                 "citizenship", "languages", "phone", "email", "address", "documents")
# Quasi-identifiers an older release kept in clear columns (now sealed with the person).
DEMOGRAPHIC_COLUMNS = ("gender", "citizenship", "age_band")
CASE_LABEL = "case"


def _token(value: str | None) -> str | None:
    return value if value is not None and _TOKEN.fullmatch(value) else None


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    return new_id(prefix)


@dataclass
class Context:
    """What every use case needs: the database, the master keys and this service's event source."""

    sessions: async_sessionmaker[AsyncSession]
    keyring: Keyring | None
    source: str
    override_validity: timedelta = domain.OVERRIDE_VALIDITY
    # Re-read the key files (after a master-key rotation replaced them); None when not configurable.
    reload_keys: Callable[[], Keyring | None] | None = None
    # Wait until every referral event the broker holds is applied (True) or give up (False); None: never wait.
    referrals_applied: Callable[[], Awaitable[bool]] | None = None

    def keys(self) -> Keyring:
        if self.keyring is None:
            raise Problem(503, "master-key-unavailable",
                          "The intake master key is not configured; personal data cannot be handled.")
        return self.keyring

    def master_key(self, key_id: str) -> MasterKey:
        try:
            return self.keys().by_id(key_id)
        except KeyUnavailable:
            if self.reload_keys is None:
                raise
            # A rotation may have re-wrapped this data key since we loaded ours: look at the files again.
            self.keyring = self.reload_keys()
            return self.keys().by_id(key_id)


# --- access records and events -----------------------------------------------------------------------


async def _access(
    ctx: Context, session: AsyncSession, principal: Principal, *, action: str, outcome: Outcome,
    case_id: str | None, purpose: str | None = None, resource_type: str = "Case",
    resource_id: str | None = None, **details: Any,
) -> None:
    # Only an id of intake's own format is recorded: a string a caller typed in a URL never reaches the log.
    case_id = case_id if is_case_id(case_id) else None
    record = AccessRecord(
        action=action, outcome=outcome, agency=_token(principal.agency_id),
        client_id=_token(principal.client_id), acting_user=_token(principal.acting_user),
        purpose=_token(purpose), resource_type=resource_type, resource_id=_token(resource_id) or case_id,
        case_id=case_id, details={k: v for k, v in details.items() if v is not None},
    )
    await record_access(session, source=ctx.source, record=record)


async def _emit(ctx: Context, session: AsyncSession, type: str, case_id: str, model: Any) -> None:
    await add_event(session, source=ctx.source, topic=ev.TOPIC, type=type, aggregate_type="Case",
                    aggregate_id=case_id, payload=ev.payload(model), subject=case_id)


def _actor(principal: Principal) -> dict[str, Any]:
    return {"agency": principal.agency_id, "client_id": principal.client_id,
            "acting_user": principal.acting_user}


def _case_event(row: CaseRow, principal: Principal, purpose: str, changed: Sequence[str] = ()) -> ev.CaseEvent:
    """The write, and the case its answer carried to the owner: one event, so one audit entry for the act
    (an access record beside it would be a second entry for the same act). Nothing about the person."""
    return ev.CaseEvent(case_id=row.id, **_actor(principal), purpose=purpose, status=row.status,
                        data_categories=sorted(domain.ALL_CATEGORIES), changed=list(changed))


# --- keys and sealed data ------------------------------------------------------------------------------


async def _data_key(ctx: Context, session: AsyncSession, case_id: str) -> bytes | None:
    row = await session.get(CaseKeyRow, case_id)
    if row is None:
        return None  # erased: the key is gone
    return unwrap(row.wrapped_key, ctx.master_key(row.master_key_id), case_id)


def _view(row: CaseRow, personal: dict[str, Any] | None) -> dict[str, Any]:
    # Columns an older release filled (gender, citizenship, age band) until the sweep seals them.
    person: dict[str, Any] = {"gender": row.gender, "citizenship": row.citizenship} if row.gender else {}
    age_band = row.age_band
    screening: dict[str, Any] = dict(row.facts)
    screening["bia_completed_at"] = row.bia_completed_at.isoformat() if row.bia_completed_at else None
    screening["bid_completed_at"] = row.bid_completed_at.isoformat() if row.bid_completed_at else None
    if personal is not None:
        person.update(personal.get("person", {}))
        screening.update(personal.get("screening", {}))
        screening["notes"] = personal.get("notes")
        age_band = personal.get("age_band", age_band)
    return {
        "id": row.id, "status": row.status, "owner_agency": row.owner_agency,
        "created_at": row.created_at.isoformat(), "is_minor": row.is_minor, "age_band": age_band,
        "person": person, "screening": screening,
    }


async def _personal(ctx: Context, session: AsyncSession, row: CaseRow) -> dict[str, Any] | None:
    if row.sealed is None:
        return None
    key = await _data_key(ctx, session, row.id)
    if key is None:
        return None
    return open_sealed(key, row.sealed, case_id=row.id, label=CASE_LABEL)


def _anything_in_clear(row: CaseRow) -> bool:
    """Does the case still hold in clear what is now sealed (trafficking facts, gender, citizenship, age band)?
    Stored before intake_0005, or by an older replica during a rolling upgrade."""
    return any(k in row.facts for k in domain.SEALED_FACTS) or any(
        getattr(row, k) is not None for k in DEMOGRAPHIC_COLUMNS)


def _seal_clear_facts(row: CaseRow, personal: dict[str, Any] | None) -> dict[str, Any]:
    """Move what ``row`` holds in clear of the sealed fields into ``personal`` (to be sealed by the caller; a
    value already sealed is newer and wins) -- or, with no personal data (erased), drop it."""
    clear = {k: row.facts[k] for k in domain.SEALED_FACTS if k in row.facts}
    if clear:
        row.facts = {k: v for k, v in row.facts.items() if k not in domain.SEALED_FACTS}
    demographics = {k: getattr(row, k) for k in DEMOGRAPHIC_COLUMNS if getattr(row, k) is not None}
    for name in DEMOGRAPHIC_COLUMNS:
        setattr(row, name, None)
    if personal is None:
        return {}
    personal["screening"] = {**clear, **personal.get("screening", {})}
    person = personal.setdefault("person", {})
    for name in ("gender", "citizenship"):
        if name in demographics:
            person.setdefault(name, demographics[name])
    if "age_band" in demographics:
        personal.setdefault("age_band", demographics["age_band"])
    return personal


async def seal_clear_facts(ctx: Context, batch: int = 200) -> int:
    """Seal what cases still hold in clear of the sealed fields (trafficking facts, gender, citizenship, age
    band), batch by batch (resumable; replicas skip each other's rows). Returns how many cases it changed. A
    case whose key does not open is left for the next run."""
    done, after = 0, ""
    while True:
        async with unit_of_work(ctx.sessions) as session:
            rows = list((await session.execute(
                select(CaseRow).where(or_(CaseRow.facts.has_any(array(domain.SEALED_FACTS)),
                                          *(getattr(CaseRow, k).is_not(None) for k in DEMOGRAPHIC_COLUMNS)),
                                      CaseRow.id > after)
                .order_by(CaseRow.id).limit(batch).with_for_update(skip_locked=True))).scalars())
            for row in rows:
                try:
                    data_key = await _data_key(ctx, session, row.id) if row.sealed is not None else None
                    if data_key is None or row.sealed is None:
                        _seal_clear_facts(row, None)  # erased: the facts should have gone with the key
                    else:
                        personal = open_sealed(data_key, row.sealed, case_id=row.id, label=CASE_LABEL)
                        row.sealed = seal(data_key, _seal_clear_facts(row, personal), case_id=row.id,
                                          label=CASE_LABEL)
                except (KeyUnavailable, Undecryptable):
                    continue  # left in clear until its master key is configured; the others go on
                done += 1
        if len(rows) < batch:
            return done
        after = rows[-1].id


async def _own_case(session: AsyncSession, principal: Principal, case_id: str, *, lock: bool = False) -> CaseRow:
    """The caller's own case, or 404 (another agency's case is indistinguishable from none)."""
    if not is_case_id(case_id):
        raise not_found("case")
    query = select(CaseRow).where(CaseRow.id == case_id, CaseRow.owner_agency == principal.agency_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise not_found("case")
    return row


# --- cases -----------------------------------------------------------------------------------------------


async def register_case(ctx: Context, principal: Principal, body: domain.CaseBody, purpose: str,
                        idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """-> (the case, whether it is the replay of an earlier registration with the same Idempotency-Key).

    A case system that lost the answer to a registration sends it again with the same key and gets the case
    the first attempt made, not a second record of the same person.
    """
    if idempotency_key is not None:
        async with unit_of_work(ctx.sessions) as session:
            existing = await _case_by_key(session, principal.agency_id, idempotency_key)
            if existing is not None:
                return await _replay_registration(ctx, session, principal, existing, body, purpose), True
    keys = ctx.keys()
    now = _now()
    age = domain.age_at_intake(body.person, now.date())
    minor = domain.is_minor(age)
    if body.initial_consent is not None:
        _check_consent(body.initial_consent, minor, prefix=("body", "initial_consent"))
    case_id = _new_id("case")
    data_key = new_data_key()
    person = body.person.model_dump(mode="json")
    screening = body.screening.model_dump(mode="json")
    # In clear only what a decision or a listing needs (is_minor, trafficking status, fear of return, needs);
    # gender, citizenship, age band and the trafficking facts are sealed with the names, and die with them.
    personal = {"person": {k: person[k] for k in PERSON_SEALED}, "notes": screening.pop("notes"),
                "screening": {k: screening.pop(k) for k in domain.SEALED_FACTS}, "age_band": domain.age_band(age)}
    row = CaseRow(
        id=case_id, owner_agency=principal.agency_id, status="active", is_minor=minor,
        trafficking_status=body.screening.trafficking_status, facts=screening,
        sealed=seal(data_key, personal, case_id=case_id, label=CASE_LABEL),
        created_by_client=principal.client_id, created_at=now, updated_at=now,
        idempotency_key=idempotency_key,
        request_fingerprint=registration_fingerprint(data_key, body) if idempotency_key is not None else None,
    )
    try:
        async with unit_of_work(ctx.sessions) as session:
            session.add(row)
            await session.flush()
            session.add(CaseKeyRow(case_id=case_id, wrapped_key=wrap(data_key, keys.current, case_id),
                                   master_key_id=keys.current.key_id))
            await _emit(ctx, session, ev.CASE_REGISTERED, case_id, _case_event(row, principal, purpose))
            if body.initial_consent is not None:
                await session.flush()
                await _store_consent(ctx, session, principal, row, data_key, body.initial_consent, version=1)
    except IntegrityError:
        # The key's first attempt committed while we were working (the unique constraint says so): answer
        # with its case.
        if idempotency_key is None:
            raise
        async with unit_of_work(ctx.sessions) as session:
            existing = await _case_by_key(session, principal.agency_id, idempotency_key)
            if existing is None:
                raise
            return await _replay_registration(ctx, session, principal, existing, body, purpose), True
    return _view(row, personal), False


def registration_fingerprint(data_key: bytes, body: domain.CaseBody) -> bytes:
    """What a retry must repeat to be the same registration: an HMAC of the request under the case's own
    data key, so the stored fingerprint says nothing about the person and is shredded with the key."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(data_key, b"refnet-intake-registration\x00" + canonical, hashlib.sha256).digest()


async def _case_by_key(session: AsyncSession, owner: str, idempotency_key: str) -> CaseRow | None:
    return (await session.execute(select(CaseRow).where(
        CaseRow.owner_agency == owner, CaseRow.idempotency_key == idempotency_key))).scalar_one_or_none()


async def _replay_registration(ctx: Context, session: AsyncSession, principal: Principal, row: CaseRow,
                               body: domain.CaseBody, purpose: str) -> dict[str, Any]:
    data_key = await _data_key(ctx, session, row.id)
    if data_key is None:
        raise Problem(409, "case-erased", "The case registered with this Idempotency-Key was erased.")
    fingerprint = registration_fingerprint(data_key, body)
    if row.request_fingerprint is None or not hmac.compare_digest(bytes(row.request_fingerprint), fingerprint):
        raise Problem(422, "idempotency-key-reused", "This Idempotency-Key was used for a different request.",
                      title="Unprocessable Content",
                      errors=[{"loc": ["header", "Idempotency-Key"], "msg": "used for a different request"}])
    # The answer carries the person's data again: that is a read by the owner, recorded like any other.
    await _access(ctx, session, principal, action="case.read", outcome="success", case_id=row.id,
                  purpose=purpose, categories=sorted(domain.ALL_CATEGORIES), role="owner", replay=True)
    return _view(row, await _personal(ctx, session, row))


async def list_cases(
    ctx: Context, principal: Principal, *, status: str | None, trafficking_status: str | None,
    needs: str | None, limit: int, cursor: str | None,
) -> dict[str, Any]:
    query = select(CaseRow).where(CaseRow.owner_agency == principal.agency_id)
    if status:
        query = query.where(CaseRow.status == status)
    if trafficking_status:
        query = query.where(CaseRow.trafficking_status == trafficking_status)
    if needs:
        query = query.where(CaseRow.facts["needs"].contains([needs]))
    if cursor:
        query = query.where(CaseRow.id > _decode_cursor(cursor))
    query = query.order_by(CaseRow.id).limit(limit + 1)
    async with unit_of_work(ctx.sessions) as session:
        rows = list((await session.execute(query)).scalars())
        await _access(ctx, session, principal, action="case.list", outcome="success", case_id=None,
                      count=min(len(rows), limit))
    page = rows[:limit]
    items = [
        {"id": r.id, "status": r.status, "owner_agency": r.owner_agency, "created_at": r.created_at.isoformat(),
         "is_minor": r.is_minor, "trafficking_status": r.trafficking_status,
         "needs": r.facts.get("needs", [])}
        for r in page
    ]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit and page else None
    return {"items": items, "next_cursor": next_cursor}


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "invalid-cursor", "The cursor is not one this API returned.") from exc
    if not _TOKEN.fullmatch(value):
        raise Problem(400, "invalid-cursor", "The cursor is not one this API returned.")
    return value


@dataclass
class ReadDecision:
    granted: bool
    reason: str | None = None
    categories: set[str] = field(default_factory=set)
    owner: bool = False
    consent_id: str | None = None
    consent_version: int | None = None
    override_id: str | None = None

    @property
    def role(self) -> str:
        if self.owner:
            return "owner"
        return "none" if self.reason in ("not-a-party", "malformed-id") else "recipient"


async def _decide_read(
    ctx: Context, session: AsyncSession, principal: Principal, row: CaseRow | None, purpose: str, at: datetime,
) -> ReadDecision:
    if row is None:
        return ReadDecision(False, "not-a-party")
    if row.owner_agency == principal.agency_id:
        return ReadDecision(True, owner=True, categories=set(domain.ALL_CATEGORIES))
    referrals = list((await session.execute(
        select(ReferralRow).where(ReferralRow.case_id == row.id, ReferralRow.to_agency == principal.agency_id,
                                  ReferralRow.from_agency == row.owner_agency)
    )).scalars())
    if not referrals:
        return ReadDecision(False, "not-a-party")
    readable = [r for r in referrals if r.status in domain.READABLE_REFERRAL_STATES]
    if not readable:
        return ReadDecision(False, "referral-not-open")
    if await _suspended(session, principal.agency_id):
        return ReadDecision(False, "recipient-suspended")
    if row.status == "erased":
        return ReadDecision(False, "case-erased")
    consent = domain.current_consent(await _consent_states(session, row.id), at)
    overrides = [o for o in await _overrides(session, row.id, principal.agency_id)
                 if o.created_at <= at < o.valid_until]
    # The purpose the recipient claims must be one the consent permits it (the referral's own is
    # "referral"); a risk-to-life override permits the referral's purpose only.
    purposes = domain.recipient_purposes(purpose)
    if purposes is None:
        return ReadDecision(False, "purpose-not-permitted")
    granted: set[str] = set()
    bases: set[str] = set()
    for referral in readable:
        shared = set(referral.shared_categories)
        if all(domain.permits(consent, purpose=p, recipient=principal.agency_id, categories=shared)
               for p in purposes):
            granted |= shared
            bases.add("consent")
        elif referral.consent_id is None and overrides and purposes == {"referral"}:
            granted |= shared
            bases.add("override")
    if not granted:
        return ReadDecision(False, "consent-missing" if purposes == {"referral"} else "purpose-not-permitted")
    relied = consent if "consent" in bases else None
    return ReadDecision(True, categories=granted, consent_id=relied.id if relied else None,
                        consent_version=relied.version if relied else None,
                        override_id=overrides[-1].id if "override" in bases else None)


class _MayBeNews(Exception):
    """A refusal that a referral event not yet applied could turn into a grant."""


# Refusals for want of a referral intake may simply not have heard of yet (it learns of referrals by events).
_NEWS_COULD_CHANGE = frozenset({"not-a-party", "referral-not-open"})


async def read_case(ctx: Context, principal: Principal, case_id: str, purpose: str) -> dict[str, Any]:
    try:
        return await _read_case(ctx, principal, case_id, purpose, wait_for_news=ctx.referrals_applied is not None)
    except _MayBeNews:
        # Every refusal is a permanent audit entry, read by auditors as an agency reaching for a case it may
        # not see: a recipient that reads the moment it is told of a referral must not leave one because our
        # copy of the referral was a few hundred milliseconds behind. So apply what the broker holds first.
        assert ctx.referrals_applied is not None
        await ctx.referrals_applied()
        return await _read_case(ctx, principal, case_id, purpose, wait_for_news=False)


async def _read_case(ctx: Context, principal: Principal, case_id: str, purpose: str, *,
                     wait_for_news: bool) -> dict[str, Any]:
    at = _now()
    async with unit_of_work(ctx.sessions) as session:
        well_formed = is_case_id(case_id)
        row = await session.get(CaseRow, case_id) if well_formed else None
        decision = await _decide_read(ctx, session, principal, row, purpose, at)
        if wait_for_news and row is not None and decision.reason in _NEWS_COULD_CHANGE:
            raise _MayBeNews  # nothing written yet: the unit of work rolls back
        if not well_formed:
            # A 404 like any unknown case, and still an attempt worth an entry -- without the string typed.
            decision.reason = "malformed-id"
        view: dict[str, Any] | None = None
        if decision.granted and row is not None:
            full = _view(row, await _personal(ctx, session, row))
            view = full if decision.owner else domain.project(full, decision.categories)
        await _access(ctx, session, principal, action="case.read",
                      outcome="success" if decision.granted else "denied", case_id=case_id, purpose=purpose,
                      categories=sorted(decision.categories), reason=decision.reason,
                      consent_id=decision.consent_id, consent_version=decision.consent_version,
                      override_id=decision.override_id, role=decision.role)
    if view is None:
        raise not_found("case")
    return view


async def update_case(ctx: Context, principal: Principal, case_id: str, patch: domain.CasePatch,
                      purpose: str) -> dict[str, Any]:
    changes = patch.model_dump(mode="json", exclude_unset=True)
    person_changes = patch.person.model_dump(mode="json", exclude_unset=True) if patch.person else {}
    nulls = [["body", n] for n, v in changes.items() if v is None and n in domain.NOT_NULLABLE]
    nulls += [["body", "person", n] for n, v in person_changes.items() if v is None and n in domain.NOT_NULLABLE]
    if nulls:
        raise Problem(422, "validation-error",
                      f"The request is not valid: {', '.join('.'.join(loc) for loc in nulls)}.",
                      title="Unprocessable Content", errors=[{"loc": loc, "msg": "must not be null"} for loc in nulls])
    async with unit_of_work(ctx.sessions) as session:
        row = await _own_case(session, principal, case_id, lock=True)
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
        if person_changes or sealed_changes or "notes" in changes or _anything_in_clear(row):
            data_key = await _data_key(ctx, session, row.id)
            assert data_key is not None and row.sealed is not None  # only erased cases have no key
            personal = _seal_clear_facts(row, open_sealed(data_key, row.sealed, case_id=row.id, label=CASE_LABEL))
            personal["person"].update(person_changes)
            personal.setdefault("screening", {}).update(sealed_changes)
            if "notes" in changes:
                personal["notes"] = changes["notes"]
            row.sealed = seal(data_key, personal, case_id=row.id, label=CASE_LABEL)
        row.updated_at = _now()
        changed = sorted([*(changes.keys() - {"person"}), *(f"person.{k}" for k in person_changes)])
        closing = changes.get("status") in ("closed", "closed_referred")
        await _emit(ctx, session, ev.CASE_CLOSED if closing else ev.CASE_UPDATED, row.id,
                    _case_event(row, principal, purpose, changed))
        view = _view(row, await _personal(ctx, session, row))
    return view


async def erase_case(ctx: Context, principal: Principal, case_id: str) -> dict[str, Any]:
    """Crypto-shredding: destroy the data key and the ciphertext; the pseudonymous record stays."""
    async with unit_of_work(ctx.sessions) as session:
        row = await _own_case(session, principal, case_id, lock=True)
        if row.status != "erased":
            await _shred(session, row, _now())
            # The event is the act's audit entry (one entry per act: no access record beside it).
            await _emit(ctx, session, ev.CASE_ERASED, row.id, ev.CaseErased(case_id=row.id, **_actor(principal)))
    return {"id": row.id, "status": "erased"}


async def _shred(session: AsyncSession, row: CaseRow, erased_at: datetime) -> None:
    """Destroy the case's data key and ciphertext; the pseudonymous record stays, marked erased."""
    await session.execute(delete(CaseKeyRow).where(CaseKeyRow.case_id == row.id))
    _seal_clear_facts(row, None)  # a case stored before intake_0005: its facts go with its key
    row.sealed = None
    row.status = "erased"
    row.erased_at = row.updated_at = erased_at


async def reapply_erasures(sessions: async_sessionmaker[AsyncSession],
                           erasures: Sequence[tuple[str, datetime]]) -> list[str]:
    """After a restore: shred again every case the log says was erased (``(case id, when)``) but which
    the restored database holds unerased. -> the case ids shredded now. Idempotent.

    No ``case.erased`` event is emitted: the erasure was recorded (and consumed) when it happened; this
    only repairs intake's own state, which went back in time with the restore."""
    when = dict(erasures)
    shredded: list[str] = []
    ids = sorted(when)
    for start in range(0, len(ids), 500):
        async with unit_of_work(sessions) as session:
            rows = (await session.execute(
                select(CaseRow).where(CaseRow.id.in_(ids[start:start + 500]), CaseRow.status != "erased")
                .with_for_update())).scalars()
            for row in rows:
                await _shred(session, row, when[row.id])
                shredded.append(row.id)
    return shredded


# --- consent ---------------------------------------------------------------------------------------------


def _check_consent(body: domain.ConsentBody, is_minor: bool | None, *, prefix: tuple[str, ...]) -> None:
    try:
        domain.check_consent_for_case(body, case_is_minor=is_minor)
    except domain.ConsentRefused as refused:
        loc = [*prefix, refused.field]
        raise Problem(422, "validation-error", f"The request is not valid: {'.'.join(loc)}.",
                      title="Unprocessable Content", errors=[{"loc": loc, "msg": refused.message}]) from None


async def _consent_states(session: AsyncSession, case_id: str) -> list[domain.ConsentState]:
    rows = (await session.execute(select(ConsentRow).where(ConsentRow.case_id == case_id))).scalars()
    return [_state(r) for r in rows]


def _state(r: ConsentRow) -> domain.ConsentState:
    return domain.ConsentState(id=r.id, version=r.version, kind=r.kind,  # type: ignore[arg-type]
                               provisions=r.provisions, valid_from=r.valid_from, valid_until=r.valid_until)


async def _suspended(session: AsyncSession, agency_id: str) -> bool:
    """From the registry's events (eventually consistent); an agency not heard of is not suspended."""
    row = await session.get(AgencyRow, agency_id)
    return row is not None and row.status == "suspended"


async def _overrides(session: AsyncSession, case_id: str, recipient: str) -> list[OverrideRow]:
    return list((await session.execute(select(OverrideRow).where(
        OverrideRow.case_id == case_id, OverrideRow.recipient_agency == recipient))).scalars())


async def _next_version(session: AsyncSession, case_id: str) -> int:
    versions = [s.version for s in await _consent_states(session, case_id)]
    return max(versions, default=0) + 1


async def _store_consent(
    ctx: Context, session: AsyncSession, principal: Principal, case: CaseRow, data_key: bytes,
    body: domain.ConsentBody, *, version: int,
) -> ConsentRow:
    consent_id = _new_id("consent")
    free_text = {"capacity_note": body.capacity_note, "witness": body.witness}
    row = ConsentRow(
        id=consent_id, case_id=case.id, version=version, kind="grant", grantor=body.grantor,
        child_assent=body.child_assent, method=body.method, language=body.language,
        interpreter_used=body.interpreter_used, provisions=domain.provisions_summary(body),
        checklist=body.checklist.model_dump(), valid_from=body.valid_from or _now(), valid_until=body.valid_until,
        recorded_by_agency=principal.agency_id, recorded_by_client=principal.client_id,
        recorded_by_user=principal.acting_user,
        sealed=seal(data_key, free_text, case_id=case.id, label=f"consent:{consent_id}"),
        created_at=_now(),
    )
    session.add(row)
    await session.flush()
    await _emit(ctx, session, ev.CONSENT_GRANTED, case.id, ev.ConsentGranted(
        case_id=case.id, **_actor(principal), consent_id=consent_id, consent_version=version,
        grantor=body.grantor, provisions=[ev.ProvisionSummary(**p) for p in row.provisions],
        valid_from=row.valid_from, valid_until=row.valid_until))
    return row


async def grant_consent(ctx: Context, principal: Principal, case_id: str, body: domain.ConsentBody) -> dict[str, Any]:
    async with unit_of_work(ctx.sessions) as session:
        case = await _own_case(session, principal, case_id, lock=True)
        if case.status == "erased":
            raise Problem(409, "case-erased", "The case was erased; consent cannot be recorded.")
        _check_consent(body, case.is_minor, prefix=("body",))
        data_key = await _data_key(ctx, session, case.id)
        assert data_key is not None  # only erased cases have no key
        row = await _store_consent(ctx, session, principal, case, data_key, body,
                                   version=await _next_version(session, case.id))
        states = await _consent_states(session, case.id)
        return _consent_view(row, {"capacity_note": body.capacity_note, "witness": body.witness}, states)


def _consent_status(row: ConsentRow, states: Sequence[domain.ConsentState], at: datetime) -> str:
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


def _consent_view(row: ConsentRow, free_text: dict[str, Any] | None,
                  states: Sequence[domain.ConsentState]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id, "case_id": row.case_id, "version": row.version, "kind": row.kind,
        "status": _consent_status(row, states, _now()), "withdraws": row.withdraws, "grantor": row.grantor,
        "child_assent": row.child_assent, "method": row.method, "language": row.language,
        "interpreter_used": row.interpreter_used, "provisions": row.provisions, "checklist": row.checklist,
        "valid_from": row.valid_from.isoformat(),
        "valid_until": row.valid_until.isoformat() if row.valid_until else None,
        "recorded_by_agency": row.recorded_by_agency, "recorded_by_user": row.recorded_by_user,
        "created_at": row.created_at.isoformat(),
    }
    if free_text is not None:
        view.update({k: v for k, v in free_text.items()})
    return view


async def list_consents(ctx: Context, principal: Principal, case_id: str, purpose: str) -> dict[str, Any]:
    async with unit_of_work(ctx.sessions) as session:
        case = await _own_case(session, principal, case_id)
        rows = list((await session.execute(
            select(ConsentRow).where(ConsentRow.case_id == case.id).order_by(ConsentRow.version))).scalars())
        data_key = await _data_key(ctx, session, case.id) if case.status != "erased" else None
        states = [_state(r) for r in rows]
        items = []
        for r in rows:
            text = None
            if data_key is not None and r.sealed is not None:
                text = open_sealed(data_key, r.sealed, case_id=case.id, label=f"consent:{r.id}")
            items.append(_consent_view(r, text, states))
        await _access(ctx, session, principal, action="consent.read", outcome="success", case_id=case.id,
                      purpose=purpose, resource_type="Consent")
    return {"items": items, "next_cursor": None}


async def withdraw_consent(
    ctx: Context, principal: Principal, case_id: str, consent_id: str, body: domain.WithdrawBody,
) -> dict[str, Any]:
    async with unit_of_work(ctx.sessions) as session:
        case = await _own_case(session, principal, case_id, lock=True)
        target = await session.get(ConsentRow, consent_id) if is_consent_id(consent_id) else None
        if target is None or target.case_id != case.id or target.kind != "grant":
            raise not_found("consent")
        states = await _consent_states(session, case.id)
        latest = max(states, key=lambda s: s.version)
        if latest.version != target.version:
            raise Problem(409, "consent-not-current",
                          "Only the current consent version can be withdrawn; this one was already ended.")
        data_key = await _data_key(ctx, session, case.id)
        version = latest.version + 1
        now = _now()
        withdrawal_id = _new_id("consent")
        row = ConsentRow(
            id=withdrawal_id, case_id=case.id, version=version, kind="withdrawal", withdraws=target.id,
            provisions=[], valid_from=now, recorded_by_agency=principal.agency_id,
            recorded_by_client=principal.client_id, recorded_by_user=principal.acting_user, created_at=now,
            sealed=seal(data_key, {"reason": body.reason}, case_id=case.id, label=f"consent:{withdrawal_id}")
            if data_key is not None else None,
        )
        session.add(row)
        await session.flush()
        await _emit(ctx, session, ev.CONSENT_WITHDRAWN, case.id, ev.ConsentWithdrawn(
            case_id=case.id, **_actor(principal), consent_id=target.id, consent_version=version,
            withdrawn_version=target.version))
        return _consent_view(row, {"reason": body.reason}, [*states, _state(row)])


# --- risk-to-life override -------------------------------------------------------------------------------


async def create_override(
    ctx: Context, principal: Principal, case_id: str, body: domain.OverrideBody,
) -> dict[str, Any]:
    try:
        domain.check_override(requested_by=principal.acting_user, approver=body.approver)
    except domain.OverrideRefused as refused:
        async with unit_of_work(ctx.sessions) as session:
            await _own_case(session, principal, case_id)
            await _access(ctx, session, principal, action="consent.override", outcome="denied", case_id=case_id,
                          resource_type="Override", reason=refused.slug)
        raise Problem(422, refused.slug, refused.message, title="Unprocessable Content",
                      errors=[{"loc": ["body", refused.field] if refused.field == "approver"
                               else ["header", refused.field], "msg": refused.message}]) from None
    async with unit_of_work(ctx.sessions) as session:
        case = await _own_case(session, principal, case_id, lock=True)
        if case.status == "erased":
            raise Problem(409, "case-erased", "The case was erased; nothing can be disclosed.")
        data_key = await _data_key(ctx, session, case.id)
        assert data_key is not None
        now = _now()
        override_id = _new_id("override")
        row = OverrideRow(
            id=override_id, case_id=case.id, agency=principal.agency_id, recipient_agency=body.recipient_agency,
            requested_by=principal.acting_user or "", approver=body.approver, client_id=principal.client_id,
            sealed_justification=seal(data_key, {"justification": body.justification}, case_id=case.id,
                                      label=f"override:{override_id}"),
            created_at=now, valid_until=now + ctx.override_validity,
        )
        session.add(row)
        await _emit(ctx, session, ev.CONSENT_OVERRIDDEN, case.id, ev.ConsentOverridden(
            case_id=case.id, **_actor(principal), override_id=override_id, recipient_agency=body.recipient_agency,
            approver=body.approver, valid_until=row.valid_until))
    return {"id": override_id, "case_id": case.id, "recipient_agency": body.recipient_agency,
            "requested_by": row.requested_by, "approver": body.approver, "created_at": now.isoformat(),
            "valid_until": row.valid_until.isoformat()}


# --- referral clearance (for the referral service) ------------------------------------------------------


async def clearance(ctx: Context, body: domain.ClearanceBody) -> dict[str, Any]:
    at = _now()
    async with ctx.sessions() as session:
        case = await session.get(CaseRow, body.case_id) if is_case_id(body.case_id) else None
        if case is None or (body.from_agency is not None and body.from_agency != case.owner_agency):
            raise not_found("case")
        # Unknown age answers as a child (rule 4), so the child guards apply and nothing waits for an age.
        facts = {"is_minor": domain.presumed_minor(case.is_minor), "age_known": case.is_minor is not None,
                 "bia_completed": case.bia_completed_at is not None,
                 "bid_completed": case.bid_completed_at is not None,
                 "fear_of_return": bool(case.facts.get("fear_of_return")), "status": case.status}
        consent = domain.current_consent(await _consent_states(session, case.id), at)
        answer: dict[str, Any] = {"permitted": False, "reason": None, "consent_id": None, "consent_version": None,
                                  "override_id": None, "facts": facts}
        if case.status == "erased":
            answer["reason"] = "case-erased"
            return answer
        if await _suspended(session, body.to_agency):
            answer["reason"] = "recipient-suspended"
            return answer
        if domain.permits(consent, purpose=body.purpose, recipient=body.to_agency, categories=body.data_categories):
            assert consent is not None
            answer.update(permitted=True, consent_id=consent.id, consent_version=consent.version)
            return answer
        overrides = [o for o in await _overrides(session, case.id, body.to_agency)
                     if o.created_at <= at < o.valid_until]
        if overrides:
            answer.update(permitted=True, reason="override", override_id=overrides[-1].id)
            return answer
        answer["reason"] = "consent-missing"
        return answer


# --- master-key rotation -------------------------------------------------------------------------------


async def rewrap_data_keys(sessions: async_sessionmaker[AsyncSession], old: Keyring, new_key: MasterKey,
                           batch: int = 200) -> int:
    """Re-wrap every data key not yet under ``new_key``; case data is not touched. Resumable: returns the
    number re-wrapped; erased cases have no key and stay that way."""
    done = 0
    while True:
        async with unit_of_work(sessions) as session:
            rows = list((await session.execute(
                select(CaseKeyRow).where(CaseKeyRow.master_key_id != new_key.key_id)
                .order_by(CaseKeyRow.case_id).limit(batch).with_for_update(skip_locked=True))).scalars())
            for row in rows:
                data_key = unwrap(row.wrapped_key, old.by_id(row.master_key_id), row.case_id)
                row.wrapped_key = wrap(data_key, new_key, row.case_id)
                row.master_key_id = new_key.key_id
                row.rewrapped_at = _now()
        done += len(rows)
        if len(rows) < batch:
            return done


async def count_data_keys_not_under(sessions: async_sessionmaker[AsyncSession], key: MasterKey) -> int:
    async with sessions() as session:
        rows = (await session.execute(
            select(CaseKeyRow.case_id).where(CaseKeyRow.master_key_id != key.key_id))).all()
    return len(rows)
