"""referral's use cases: one transaction each -- load, ask the domain, store, add the events to the outbox.

Who may see a referral is decided from the authenticated caller in every query: an agency sees the
referrals it sent or received, nothing else (404 otherwise, so existence does not leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import domain, events, store
from services.referral.clearance import CaseNotFound, ClearanceClient, ClearanceRequest, ClearanceUnavailable
from services.referral.domain import OPEN_STATES, Party, Pathway, Status
from services.referral.store import AgencyRow, FeedRow, ReferralRow, ServiceRow, TransitionRow
from shared.auth import Principal
from shared.crypto import Envelope, Keyring, new_data_key
from shared.db import unit_of_work
from shared.envelope import full_type
from shared.errors import Problem, not_found
from shared.outbox import NewEvent, add_events
from shared.topics import delivery_topic

log = structlog.get_logger("refnet.referral")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewReferralRequest:
    """A validated POST /referrals body."""

    case_id: str
    to_agency: str | None
    service_id: str | None
    pathway: domain.Pathway
    service_type: str | None
    priority: domain.Priority
    reason: str
    shared_categories: list[domain.DataCategory]

    def fingerprint(self, data_key: bytes) -> str:
        """What a retry must repeat to be the same request: an HMAC under the case's data key, so the stored
        fingerprint says nothing of the reason and is shredded with the key."""
        body = {"case_id": self.case_id, "to_agency": self.to_agency, "service_id": self.service_id,
                "pathway": str(self.pathway), "service_type": self.service_type, "priority": str(self.priority),
                "reason": self.reason, "shared_categories": sorted(map(str, self.shared_categories))}
        canonical = json.dumps(body, sort_keys=True).encode()
        return hmac.new(data_key, b"refnet-referral-request\x00" + canonical, hashlib.sha256).hexdigest()


def field_problem(field: str, detail: str, slug: str = "validation-error", status: int = 422,
                  **extensions: Any) -> Problem:
    return Problem(status, slug, detail, title="Unprocessable Content",
                   errors=[{"loc": ["body", field], "msg": detail}], **extensions)


class _Replay(Exception):
    """The key's first request already made the referral: answer with it (rolls our transaction back)."""


class WaitingPolls:
    """Pull-feed requests waiting for events (``wait`` > 0), per agency, on this replica: a bounded number
    each, so one agency's clients cannot hold every connection and database session of the replica."""

    def __init__(self, per_agency: int) -> None:
        self.per_agency = per_agency
        self._held: dict[str, int] = {}

    def held(self, agency_id: str) -> int:
        return self._held.get(agency_id, 0)

    @contextlib.contextmanager
    def hold(self, agency_id: str) -> Iterator[None]:
        held = self._held.get(agency_id, 0)
        if held >= self.per_agency:
            raise Problem(429, "too-many-waiting-polls",
                          f"An agency may have at most {self.per_agency} waiting /events requests at once; "
                          "retry when one of them has returned.", headers={"Retry-After": "1"})
        self._held[agency_id] = held + 1
        try:
            yield
        finally:
            left = self._held[agency_id] - 1
            if left:
                self._held[agency_id] = left
            else:
                del self._held[agency_id]


class Referrals:
    """The referral broker's use cases."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, source: str, clearance: ClearanceClient,
                 clock: Clock = system_clock,
                 acknowledge_within: Mapping[domain.Priority, timedelta] = domain.ACKNOWLEDGE_WITHIN,
                 registry_loaded: Callable[[], bool] = lambda: True, keyring: Keyring | None = None) -> None:
        self.sessions = sessions
        # Wraps the per-case data keys the free text is sealed under; None: not configured (503 for free text).
        self.keyring = keyring
        self.source = source
        self.clearance = clearance
        self.clock = clock
        self.acknowledge_within = acknowledge_within
        # False until the read model of the registry holds what the registry had published when we started.
        self.registry_loaded = registry_loaded

    # -- create ------------------------------------------------------------------------------------------

    async def create(self, principal: Principal, request: NewReferralRequest,
                     idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        """-> (the referral, whether it is the replay of an earlier request with the same key)."""
        keys = self._keys()
        async with self.sessions() as session:
            if idempotency_key:
                existing = await store.referral_by_key(session, principal.agency_id, idempotency_key)
                if existing is not None:
                    return await self._replay(session, existing, request), True
            to_agency = await self._recipient_of(session, request, principal.agency_id)
        try:
            clearance = await self.clearance.clear(ClearanceRequest(
                case_id=request.case_id, requesting_agency=principal.agency_id, to_agency=to_agency,
                pathway=str(request.pathway), data_categories=sorted(map(str, request.shared_categories))))
        except CaseNotFound:
            raise not_found("case") from None
        except ClearanceUnavailable as exc:
            raise Problem(503, "intake-unavailable",
                          "Consent cannot be checked right now (intake is unavailable); try again later.",
                          headers={"Retry-After": str(exc.retry_after)}) from None
        if clearance.facts.status == "erased" or clearance.reason == "case-erased":
            raise not_found("case")

        try:
            async with unit_of_work(self.sessions) as session:
                await store.lock_case(session, request.case_id)
                # The case lock and the recipient's row lock serialise us with the consumers that cancel on
                # withdrawal, erasure and suspension: either they see this referral, or we see their event.
                standing = await store.case_standing(
                    session, case_id=request.case_id, from_agency=principal.agency_id,
                    idempotency_key=idempotency_key, consent_id=clearance.consent_id,
                    open_states=[str(s) for s in OPEN_STATES])
                if standing.key_used:
                    raise _Replay
                if standing.erased:
                    raise not_found("case")
                agency = await store.agency_for_share(session, to_agency)
                if agency is None:
                    raise self._unknown("to_agency", "The recipient agency is not known to the registry.")
                offer = None
                service_type = request.service_type
                if request.service_id is not None:
                    svc = await store.service(session, request.service_id)
                    if svc is None or svc.status != "active":
                        raise self._unknown("service_id", "No such service in the registry.")
                    offer = domain.ServiceOffer(svc.service_id, svc.agency_id, svc.taxonomy, svc.capacity_status,
                                                svc.capacity_available)
                    service_type = service_type or svc.taxonomy
                assert service_type is not None
                open_paths = standing.open_pathways
                consent_ok = (clearance.permitted and not standing.consent_withdrawn
                              and domain.consent_still_current(clearance.consent_version, standing.consent_version))
                recipient_status = agency.status
                if not clearance.permitted and clearance.reason == "recipient-suspended":
                    # intake knows of the suspension before our read model does; it stopped before consent.
                    consent_ok, recipient_status = True, "suspended"
                failure = domain.check_guards(domain.NewReferral(
                    pathway=request.pathway, consent_permitted=consent_ok, facts=clearance.facts,
                    recipient=domain.Recipient(agency.agency_id, recipient_status), service=offer,
                    open_pathways_of_case=tuple(Pathway(p) for p in open_paths)))
                if failure is not None:
                    log.info("referral_refused", guard=failure.guard, case_id=request.case_id,
                             agency=principal.agency_id)
                    raise Problem(409, failure.guard, failure.detail, title="Referral refused",
                                  guard=failure.guard)

                now = self.clock()
                data_key = await self._data_key(session, request.case_id, create=keys)
                assert data_key is not None  # created if the case had none; an erased case was refused above
                referral_id = uuid.uuid4().hex
                row = ReferralRow(
                    id=referral_id, case_id=request.case_id, from_agency=principal.agency_id,
                    to_agency=to_agency, service_id=request.service_id, pathway=str(request.pathway),
                    service_type=service_type, priority=str(request.priority), reason=None,
                    sealed_reason=_ENVELOPE.seal(data_key, {"reason": request.reason}, case_id=request.case_id,
                                                 label=_reason_label(referral_id)),
                    shared_categories=[str(c) for c in request.shared_categories],
                    consent_id=clearance.consent_id, consent_version=clearance.consent_version,
                    status=str(Status.requested), overdue_at=None,
                    due_at=domain.due_at(request.priority, now, self.acknowledge_within),
                    created_at=now, updated_at=now, created_by_client=principal.client_id,
                    acting_user=principal.acting_user, idempotency_key=idempotency_key,
                    request_hash=request.fingerprint(data_key),
                )
                session.add(row)
                transition = TransitionRow(referral_id=row.id, from_status=None, to_status=row.status,
                                           party=str(Party.sender), agency=principal.agency_id,
                                           acting_user=principal.acting_user, reason_code=None, note=None, at=now)
                session.add(transition)
                await session.flush()
                await self._emit(session, row, events.state_event_type(row.status), None,
                                 principal.agency_id, principal.acting_user)
                view = referral_view(row, [transition], texts=FreeTextView(
                    reason=request.reason, state="shown", notes={}))
        except (_Replay, IntegrityError):
            # Either we found the key's referral under the case lock, or the first request committed between
            # our check and our insert (the unique constraint said so).
            if not idempotency_key:
                raise
            async with self.sessions() as session:
                existing = await store.referral_by_key(session, principal.agency_id, idempotency_key)
                if existing is None:
                    raise
                return await self._replay(session, existing, request), True
        log.info("referral_requested", referral_id=view["id"], case_id=request.case_id, pathway=str(request.pathway))
        return view, False

    def _unknown(self, field: str, detail: str) -> Problem:
        """Not in our read model of the registry: unknown (422) -- unless that is still loading after start-up,
        when it may just not have arrived yet (503, try again)."""
        if not self.registry_loaded():
            return Problem(503, "registry-loading", "The referral service is still loading the registry's agencies "
                           "and services after starting; try again shortly.", headers={"Retry-After": "2"})
        return field_problem(field, detail)

    async def _replay(self, session: AsyncSession, row: ReferralRow, request: NewReferralRequest) -> dict[str, Any]:
        data_key = await self._data_key(session, row.case_id)
        if data_key is None:  # the case was erased since: nothing to answer with
            raise not_found("case")
        if row.request_hash is None or not hmac.compare_digest(row.request_hash, request.fingerprint(data_key)):
            raise Problem(422, "idempotency-key-reused",
                          "This Idempotency-Key was used for a different request.", title="Unprocessable Content",
                          errors=[{"loc": ["header", "Idempotency-Key"], "msg": "used for a different request"}])
        history = await store.history(session, row.id)
        return referral_view(row, history, texts=await self._texts(session, row, history, Party.sender))

    async def _recipient_of(self, session: AsyncSession, request: NewReferralRequest, sender: str) -> str:
        if request.service_id is None:
            assert request.to_agency is not None
            if request.to_agency == sender:
                raise field_problem("to_agency", "An agency cannot refer a case to itself.")
            return request.to_agency
        svc = await store.service(session, request.service_id)
        if svc is None or svc.status != "active":
            raise self._unknown("service_id", "No such service in the registry.")
        if request.to_agency is not None and request.to_agency != svc.agency_id:
            raise field_problem("to_agency", "to_agency is not the provider of service_id.")
        if request.service_type is not None and request.service_type != svc.taxonomy:
            raise field_problem("service_type", "service_type does not match the service's taxonomy.")
        if svc.agency_id == sender:
            raise field_problem("service_id", "An agency cannot refer a case to its own service.")
        return svc.agency_id

    # -- read --------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, referral_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            # Row, history and key read from one snapshot: under READ COMMITTED a cancellation committing between
            # the statements showed a referral still `requested` whose history already said `cancelled`.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            row = await store.referral(session, referral_id)
            party = party_of(row, principal.agency_id) if row is not None else None
            if row is None or party is None:
                raise not_found("referral")
            history = await store.history(session, row.id)
            return referral_view(row, history, now=self.clock(),
                                 texts=await self._texts(session, row, history, party))

    async def queue(self, principal: Principal, *, role: str | None, status: Status | None,
                    pathway: Pathway | None, overdue: bool | None, limit: int,
                    after: int | None) -> tuple[list[dict[str, Any]], str | None]:
        me = principal.agency_id
        query = select(ReferralRow)
        if role == "sent":
            query = query.where(ReferralRow.from_agency == me)
        elif role == "received":
            query = query.where(ReferralRow.to_agency == me)
        else:
            query = query.where(or_(ReferralRow.from_agency == me, ReferralRow.to_agency == me))
        if status is not None:
            query = query.where(ReferralRow.status == str(status))
        if pathway is not None:
            query = query.where(ReferralRow.pathway == str(pathway))
        if overdue is not None:
            now = self.clock()
            late = or_(ReferralRow.overdue_at.is_not(None),
                       and_(ReferralRow.status == str(Status.requested), ReferralRow.due_at <= now))
            query = query.where(late if overdue else ~late)
        if after is not None:
            query = query.where(ReferralRow.seq > after)
        query = query.order_by(ReferralRow.seq).limit(limit + 1)
        async with self.sessions() as session:
            rows = list((await session.execute(query)).scalars())
            more = len(rows) > limit
            rows = rows[:limit]
            texts = await self._reasons(session, rows, me)
        now = self.clock()
        return ([referral_view(r, None, now=now, texts=texts[r.id]) for r in rows],
                (str(rows[-1].seq) if more and rows else None))

    async def suggest(self, principal: Principal, need: domain.Need, *, case_id: str | None,
                      limit: int) -> list[dict[str, Any]]:
        """Registry services ranked for a need; with ``case_id``, leaving out agencies the caller already has
        an open referral of that case with."""
        family = need.service_type.split(".", 1)[0]
        query = (select(ServiceRow, AgencyRow.status)
                 .outerjoin(AgencyRow, AgencyRow.agency_id == ServiceRow.agency_id)
                 .where(ServiceRow.status == "active",
                        or_(ServiceRow.taxonomy == family, ServiceRow.taxonomy.like(family + ".%"))))
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
            busy: set[str] = set()
            if case_id is not None:
                busy = set((await session.execute(
                    select(ReferralRow.to_agency).where(ReferralRow.case_id == case_id,
                                                        ReferralRow.from_agency == principal.agency_id,
                                                        ReferralRow.status.in_([str(s) for s in OPEN_STATES]))
                )).scalars())
        offers = [domain.Offer(
            service_id=svc.service_id, agency_id=svc.agency_id, agency_active=agency_status == "active",
            taxonomy=svc.taxonomy, capacity_status=svc.capacity_status, available=svc.capacity_available,
            total=svc.capacity_total, languages=frozenset(svc.languages), countries=frozenset(svc.countries),
            accepts_children=svc.accepts_children, lat=svc.lat, lon=svc.lon,
        ) for svc, agency_status in rows if svc.agency_id not in busy and svc.agency_id != principal.agency_id]
        return [{
            "service_id": s.offer.service_id, "agency_id": s.offer.agency_id, "taxonomy": s.offer.taxonomy,
            "score": s.score, "reasons": list(s.reasons), "distance_km": s.distance_km,
            "capacity": {"available": s.offer.available, "total": s.offer.total, "status": s.offer.capacity_status},
            "languages": sorted(s.offer.languages), "countries": sorted(s.offer.countries),
            "accepts_children": s.offer.accepts_children,
        } for s in domain.rank_services(offers, need)[:limit]]

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def transition(self, principal: Principal, referral_id: str, to: str, reason_code: str | None,
                         note: str | None) -> dict[str, Any]:
        async with unit_of_work(self.sessions) as session:
            row = await store.referral(session, referral_id, for_update=True)
            party = party_of(row, principal.agency_id) if row is not None else None
            if row is None or party is None:
                raise not_found("referral")
            current = Status(row.status)
            try:
                move = domain.decide_transition(current, to, party, reason_code)
            except domain.InvalidTransition as refused:
                raise Problem(409, "invalid-transition", str(refused), title="Invalid transition",
                              current_state=str(current), requested_state=to,
                              allowed=[str(s) for s in refused.allowed]) from None
            except domain.ReasonCodeInvalid as refused:
                raise field_problem("reason_code", str(refused), slug="invalid-reason-code",
                                    allowed_reason_codes=refused.allowed) from None
            await self._apply(session, row, move, principal.agency_id, principal.acting_user, note)
            history = await store.history(session, row.id)
            view = referral_view(row, history, now=self.clock(), texts=await self._texts(session, row, history, party))
        log.info("referral_moved", referral_id=referral_id, to=str(move.to), party=str(party))
        return view

    async def _apply(self, session: AsyncSession, row: ReferralRow, move: domain.Move, agency: str | None,
                     acting_user: str | None, note: str | None) -> None:
        now = self.clock()
        data_key = None
        if note is not None:
            if await store.case_standing_erased(session, row.case_id):
                raise Problem(409, "case-erased", "The case was erased: no note about it can be kept.")
            data_key = await self._data_key(session, row.case_id, create=self._keys())
        row.status = str(move.to)
        row.updated_at = now
        transition = TransitionRow(referral_id=row.id, from_status=str(move.frm), to_status=str(move.to),
                                   party=str(move.party), agency=agency, acting_user=acting_user,
                                   reason_code=move.reason_code, note=None, at=now)
        session.add(transition)
        await session.flush()
        if data_key is not None and note is not None:
            # Sealed once the row has its id: the label binds the text to this transition.
            transition.sealed_note = _ENVELOPE.seal(data_key, {"note": note}, case_id=row.case_id,
                                                    label=_note_label(transition.id))
            await session.flush()
        await self._emit(session, row, events.state_event_type(row.status), move.reason_code, agency, acting_user)

    async def cancel_by_system(self, session: AsyncSession, rows: Sequence[ReferralRow], reason_code: str) -> int:
        """Cancel open referrals in the caller's transaction (a consumer's), as RefNet itself."""
        count = 0
        for row in rows:
            current = Status(row.status)
            if current not in OPEN_STATES:
                continue
            move = domain.decide_transition(current, Status.cancelled, Party.system, reason_code)
            await self._apply(session, row, move, None, None, None)
            count += 1
        if count:
            log.info("referrals_cancelled_by_system", reason_code=reason_code, count=count)
        return count

    # -- free text: sealed under the case's data key, shown as DOMAIN.md rules 3 and 7 allow ------------

    def _keys(self) -> Keyring:
        if self.keyring is None:
            raise Problem(503, "master-key-unavailable",
                          "The referral master key is not configured; free text cannot be handled.")
        return self.keyring

    async def _data_key(self, session: AsyncSession, case_id: str, *, create: Keyring | None = None) -> bytes | None:
        """The case's data key; with ``create``, a new one if the case has none yet (call under the case lock,
        or where a concurrent creation is harmless: the first key stored wins). None: none (erased)."""
        row = (await store.case_keys(session, [case_id])).get(case_id)
        if row is None and create is not None:
            await store.add_case_key(session, case_id, _ENVELOPE.wrap(new_data_key(), create.current, case_id),
                                     create.current.key_id)
            row = (await store.case_keys(session, [case_id])).get(case_id)
        if row is None:
            return None
        return _ENVELOPE.unwrap(row.wrapped_key, self._keys().by_id(row.master_key_id), case_id)

    async def _texts(self, session: AsyncSession, row: ReferralRow, history: Sequence[TransitionRow],
                     viewer: Party) -> FreeTextView:
        """The reason and notes of one referral as ``viewer`` may see them."""
        keys = await store.case_keys(session, [row.case_id])
        consents = await store.case_consents(session, [row.case_id])
        return self._open(row, history, viewer, keys.get(row.case_id), consents.get(row.case_id))

    async def _reasons(self, session: AsyncSession, rows: Sequence[ReferralRow], me: str) -> dict[str, FreeTextView]:
        """The reasons of a page of the work queue, as the caller may see them (one query for the keys)."""
        case_ids = sorted({r.case_id for r in rows})
        keys = await store.case_keys(session, case_ids)
        consents = await store.case_consents(session, case_ids)
        return {r.id: self._open(r, None, party_of(r, me) or Party.recipient, keys.get(r.case_id),
                                 consents.get(r.case_id)) for r in rows}

    def _open(self, row: ReferralRow, history: Sequence[TransitionRow] | None, viewer: Party,
              key_row: store.CaseKeyRow | None, consent_row: store.CaseConsentRow | None) -> FreeTextView:
        consented = row.consent_id is None or consent_row is None or domain.consent_covers(
            known_consent(consent_row), recipient=row.to_agency, categories=row.shared_categories, at=self.clock())
        data_key: bytes | None = None
        if key_row is not None and (row.sealed_reason is not None
                                    or any(t.sealed_note is not None for t in history or ())):
            data_key = _ENVELOPE.unwrap(key_row.wrapped_key, self._keys().by_id(key_row.master_key_id), row.case_id)

        def shown(author: Party | None) -> bool:
            return domain.free_text_shown(viewer=viewer, author=author, status=Status(row.status),
                                          shared_categories=row.shared_categories, consented=consented)

        reason: str | None = None
        state = "erased"
        if row.sealed_reason is not None and data_key is not None:
            state = "shown" if shown(Party.sender) else "withheld"
            if state == "shown":
                reason = _ENVELOPE.open_sealed(data_key, row.sealed_reason, case_id=row.case_id,
                                               label=_reason_label(row.id))["reason"]
        elif row.reason is not None:  # made before sealing, not yet sealed
            state = "shown" if shown(Party.sender) else "withheld"
            reason = row.reason if state == "shown" else None
        notes: dict[int, str | None] = {}
        for t in history or ():
            if not shown(Party(t.party)):
                notes[t.id] = None
            elif t.sealed_note is not None and data_key is not None:
                notes[t.id] = _ENVELOPE.open_sealed(data_key, t.sealed_note, case_id=row.case_id,
                                                    label=_note_label(t.id))["note"]
            else:
                notes[t.id] = t.note
        return FreeTextView(reason=reason, state=state, notes=notes)

    async def seal_clear_text(self, batch: int = 200) -> int:
        """Seal the reasons and notes of referrals made before free text was sealed (once, at start-up);
        those of erased cases are dropped. Returns how many referrals were done."""
        keys = self._keys()
        done = 0
        while True:
            async with unit_of_work(self.sessions) as session:
                rows = await store.referrals_with_clear_text(session, batch)
                for row in rows:
                    data_key = None
                    if not await store.case_standing_erased(session, row.case_id):
                        data_key = await self._data_key(session, row.case_id, create=keys)
                    if row.reason is not None:
                        row.sealed_reason = None if data_key is None else _ENVELOPE.seal(
                            data_key, {"reason": row.reason}, case_id=row.case_id, label=_reason_label(row.id))
                        row.reason = None
                        # The old fingerprint was a plain SHA-256 of the request, reason included: a guessed
                        # reason could be confirmed against it. Dropped: a replay of that request is refused
                        # (422) rather than matched.
                        row.request_hash = None
                    for t in await store.history(session, row.id):
                        if t.note is not None:
                            t.sealed_note = None if data_key is None else _ENVELOPE.seal(
                                data_key, {"note": t.note}, case_id=row.case_id, label=_note_label(t.id))
                            t.note = None
            done += len(rows)
            if len(rows) < batch:
                break
        if done:
            log.info("free_text_sealed", referrals=done)
        return done

    # -- deadlines ---------------------------------------------------------------------------------------

    async def flag_overdue(self, batch: int = 200) -> int:
        """Flag referrals past due and still requested, each once, with its overdue event in the same
        transaction. Safe to run from several schedulers at once: rows are claimed under lock."""
        flagged = 0
        while True:
            async with unit_of_work(self.sessions) as session:
                now = self.clock()
                rows = list((await session.execute(
                    select(ReferralRow)
                    .where(ReferralRow.status == str(Status.requested), ReferralRow.overdue_at.is_(None),
                           ReferralRow.due_at <= now)
                    .order_by(ReferralRow.due_at).limit(batch).with_for_update(skip_locked=True)
                )).scalars())
                for row in rows:
                    row.overdue_at = now
                    await self._emit(session, row, events.OVERDUE, None, None, None)
            flagged += len(rows)
            if len(rows) < batch:
                break
        if flagged:
            log.info("referrals_overdue", count=flagged)
        return flagged

    async def overdue_counts(self) -> dict[tuple[str, str], int]:
        async with self.sessions() as session:
            return await store.overdue_counts(session)

    # -- events ------------------------------------------------------------------------------------------

    async def _emit(self, session: AsyncSession, row: ReferralRow, type: str, reason_code: str | None,
                    agency: str | None, acting_user: str | None) -> None:
        payload = events.ReferralEvent(
            referral_id=row.id, case_id=row.case_id, from_agency=row.from_agency, to_agency=row.to_agency,
            status=row.status, pathway=row.pathway, service_type=row.service_type, priority=row.priority,
            shared_categories=list(row.shared_categories), consent_id=row.consent_id, reason_code=reason_code,
            due_at=row.due_at, agency=agency, acting_user=acting_user,
        ).model_dump(mode="json")
        event_id, *_ = await add_events(session, source=self.source, events=[
            NewEvent(topic=events.TOPIC, type=type, aggregate_type="Referral", aggregate_id=row.case_id,
                     payload=payload, subject=row.id),
            *(NewEvent(topic=delivery_topic(party_agency), type=type, aggregate_type="Referral",
                       aggregate_id=row.id, payload=payload, subject=row.id)
              for party_agency in (row.from_agency, row.to_agency)),
        ])
        session.add(FeedRow(event_id=str(event_id), type=full_type(type), referral_id=row.id,
                            from_agency=row.from_agency, to_agency=row.to_agency, payload=payload,
                            created_at=self.clock()))

    # -- pull feed ---------------------------------------------------------------------------------------

    async def feed(self, principal: Principal, *, after: int, wait: float, limit: int,
                   event_types: set[str] | None = None) -> tuple[list[dict[str, Any]], str]:
        """The caller's referral events after ``after``, waiting up to ``wait`` seconds for the first."""
        me = principal.agency_id
        deadline = time.monotonic() + wait
        while True:
            query = (select(FeedRow).where(or_(FeedRow.from_agency == me, FeedRow.to_agency == me),
                                           FeedRow.seq > after)
                     .order_by(FeedRow.seq).limit(limit))
            async with self.sessions() as session:
                rows = list((await session.execute(query)).scalars())
            if rows or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
        items = [{"cursor": str(r.seq), "id": r.event_id, "type": r.type,
                  "time": r.created_at.isoformat(), "subject": r.referral_id, "data": r.payload} for r in rows]
        return items, str(rows[-1].seq if rows else after)

    # -- statistics --------------------------------------------------------------------------------------

    async def stats(self, label: str) -> dict[str, Any]:
        """DOMAIN.md's indicators for one closed month or quarter, de-identified (rule 9; domain.py says how).

        Only oversight agencies call this (scope ``stats:read``). A quarter is built from its months, each
        protected alone, so a month and its quarter never difference into a suppressed cell."""
        try:
            period = domain.parse_period(label)
            domain.check_closed(period, self.clock())
        except domain.PeriodInvalid as refused:
            raise Problem(422, "validation-error", str(refused), title="Unprocessable Content",
                          errors=[{"loc": ["query", "period"], "msg": str(refused)}]) from None
        months = []
        async with self.sessions() as session:
            agencies = await store.stats_agencies(session)
            for label_of_month in period.months:
                month = domain.parse_period(label_of_month)
                counts = await store.month_counts(session, month.start, month.end)
                cells, sums = domain.cells_of(counts, agencies)
                months.append((cells, domain.suppress(cells, sums)))
            medians = await store.median_hours(session, period.start, period.end)
        values, hidden = months[0] if len(months) == 1 else domain.protect_quarter(months)
        return domain.statistics_view(period, values, hidden, medians)


_ENVELOPE = Envelope("referral")


def _reason_label(referral_id: str) -> str:
    return f"referral:{referral_id}:reason"


def _note_label(transition_id: int) -> str:
    return f"transition:{transition_id}:note"


def known_consent(row: store.CaseConsentRow | None) -> domain.KnownConsent | None:
    if row is None:
        return None
    return domain.KnownConsent(version=row.version, kind="grant" if row.kind == "grant" else "withdrawal",
                               provisions=tuple(row.provisions), valid_from=row.valid_from,
                               valid_until=row.valid_until)


@dataclass(frozen=True)
class FreeTextView:
    """A referral's free text as one party may see it: ``state`` says why the reason is absent, if it is
    (``withheld``: not this party's to read now; ``erased``: the case was erased)."""

    reason: str | None
    state: str
    notes: Mapping[int, str | None]


def party_of(row: ReferralRow, agency_id: str) -> Party | None:
    if agency_id == row.from_agency:
        return Party.sender
    if agency_id == row.to_agency:
        return Party.recipient
    return None


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def referral_view(row: ReferralRow, history: Sequence[TransitionRow] | None, *, texts: FreeTextView,
                  now: datetime | None = None) -> dict[str, Any]:
    overdue = row.overdue_at is not None or (
        now is not None and domain.is_overdue(Status(row.status), row.due_at, now))
    view: dict[str, Any] = {
        "id": row.id, "status": row.status, "case_id": row.case_id, "from_agency": row.from_agency,
        "to_agency": row.to_agency, "service_id": row.service_id, "pathway": row.pathway,
        "service_type": row.service_type, "priority": row.priority, "reason": texts.reason,
        "free_text": texts.state,
        "shared_categories": list(row.shared_categories), "consent_id": row.consent_id,
        "consent_version": row.consent_version, "due_at": _ts(row.due_at), "overdue": overdue,
        "overdue_at": _ts(row.overdue_at), "created_at": _ts(row.created_at), "updated_at": _ts(row.updated_at),
    }
    if history is not None:
        view["history"] = [
            {"from": t.from_status, "to": t.to_status, "by": t.party, "agency": t.agency,
             "acting_user": t.acting_user, "reason_code": t.reason_code, "note": texts.notes.get(t.id),
             "at": _ts(t.at)}
            for t in history
        ]
    return view
