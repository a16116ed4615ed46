"""The referral aggregate's use cases: create, read, move along the lifecycle, cancel on other services'
events, flag overdue -- one transaction each: load, ask the domain, store, add the events to the outbox.

Who may see a referral is decided from the authenticated caller in every query: an agency sees the
referrals it sent or received, nothing else (404 otherwise, so existence does not leak).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import domain, events, store
from services.referral.clearance import CaseNotFound, ClearanceClient, ClearanceRequest, ClearanceUnavailable
from services.referral.domain import OPEN_STATES, Party, Pathway, Status
from services.referral.service.clock import Clock, field_problem, system_clock
from services.referral.service.texts import ENVELOPE, FreeTexts, note_label, reason_label
from services.referral.service.views import FreeTextView, party_of, referral_view
from services.referral.store import FeedRow, ReferralRow, TransitionRow
from shared import idempotency, pagination
from shared.auth import Principal
from shared.crypto import Keyring
from shared.db import unit_of_work
from shared.envelope import full_type
from shared.errors import Problem, not_found
from shared.outbox import NewEvent, add_events
from shared.topics import delivery_topic

log = structlog.get_logger("refnet.referral")

#: The fingerprint's label: a referral request (shared.idempotency).
REQUEST = b"refnet-referral-request"


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

    def comparable(self) -> dict[str, Any]:
        """What a retry must repeat to be the same request (shared.idempotency fingerprints it)."""
        return {"case_id": self.case_id, "to_agency": self.to_agency, "service_id": self.service_id,
                "pathway": str(self.pathway), "service_type": self.service_type, "priority": str(self.priority),
                "reason": self.reason, "shared_categories": sorted(map(str, self.shared_categories))}


@dataclass(frozen=True)
class _Actor:
    """Who moved a referral: the agency, the person acting in it, and on whose authentication that person is
    named (issue 20; all None when RefNet itself acted)."""

    agency: str | None
    acting_user: str | None
    attested_by: events.Attestation | None


#: RefNet itself (cancellations on other services' events, deadlines).
REFNET = _Actor(None, None, None)


def _actor(principal: Principal) -> _Actor:
    return _Actor(principal.agency_id, principal.acting_user, principal.attested_by)


class _Replay(Exception):
    """The key's first request already made the referral: answer with it (rolls our transaction back)."""


class Referrals:
    """The referral broker's use cases."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, source: str, clearance: ClearanceClient,
                 clock: Clock = system_clock,
                 acknowledge_within: Mapping[domain.Priority, timedelta] = domain.ACKNOWLEDGE_WITHIN,
                 registry_loaded: Callable[[], bool] = lambda: True, keyring: Keyring | None = None) -> None:
        self.sessions = sessions
        # Wraps the per-case data keys the free text is sealed under; None: not configured (503 for free text).
        self.keyring = keyring
        self.texts = FreeTexts(sessions, keyring, clock)
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
        keys = self.texts.keys()
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
                data_key = await self.texts.data_key(session, request.case_id, create=keys)
                assert data_key is not None  # created if the case had none; an erased case was refused above
                referral_id = uuid.uuid4().hex
                row = ReferralRow(
                    id=referral_id, case_id=request.case_id, from_agency=principal.agency_id,
                    to_agency=to_agency, service_id=request.service_id, pathway=str(request.pathway),
                    service_type=service_type, priority=str(request.priority), reason=None,
                    sealed_reason=ENVELOPE.seal(data_key, {"reason": request.reason}, case_id=request.case_id,
                                                 label=reason_label(referral_id)),
                    shared_categories=[str(c) for c in request.shared_categories],
                    consent_id=clearance.consent_id, consent_version=clearance.consent_version,
                    status=str(Status.requested), overdue_at=None,
                    due_at=domain.due_at(request.priority, now, self.acknowledge_within),
                    created_at=now, updated_at=now, created_by_client=principal.client_id,
                    acting_user=principal.acting_user, idempotency_key=idempotency_key,
                    request_hash=idempotency.fingerprint(data_key, REQUEST, request.comparable()).hex(),
                )
                session.add(row)
                transition = TransitionRow(referral_id=row.id, from_status=None, to_status=row.status,
                                           party=str(Party.sender), agency=principal.agency_id,
                                           acting_user=principal.acting_user, attested_by=principal.attested_by,
                                           reason_code=None, note=None, at=now)
                session.add(transition)
                await session.flush()
                await self._emit(session, row, events.state_event_type(row.status), None, _actor(principal))
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
        data_key = await self.texts.data_key(session, row.case_id)
        if data_key is None:  # the case was erased since: nothing to answer with
            raise not_found("case")
        stored = bytes.fromhex(row.request_hash) if row.request_hash else None
        if not idempotency.same_request(stored, data_key, REQUEST, request.comparable()):
            raise idempotency.key_reused()
        history = await store.history(session, row.id)
        return referral_view(row, history, texts=await self.texts.of_referral(session, row, history, Party.sender))

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
                                 texts=await self.texts.of_referral(session, row, history, party))

    async def queue(self, principal: Principal, *, role: str | None, status: Status | None,
                    pathway: Pathway | None, overdue: bool | None, limit: int,
                    after: int | None) -> tuple[list[dict[str, Any]], str | None]:
        me = principal.agency_id
        async with self.sessions() as session:
            rows = await store.queue_page(session, me, role=role, status=None if status is None else str(status),
                                          pathway=None if pathway is None else str(pathway), overdue=overdue,
                                          now=self.clock(), after=after, limit=limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            texts = await self.texts.reasons(session, rows, me)
        now = self.clock()
        return ([referral_view(r, None, now=now, texts=texts[r.id]) for r in rows],
                (pagination.encode("referral", rows[-1].seq) if more and rows else None))

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
            await self._apply(session, row, move, _actor(principal), note)
            history = await store.history(session, row.id)
            texts = await self.texts.of_referral(session, row, history, party)
            view = referral_view(row, history, now=self.clock(), texts=texts)
        log.info("referral_moved", referral_id=referral_id, to=str(move.to), party=str(party))
        return view

    async def _apply(self, session: AsyncSession, row: ReferralRow, move: domain.Move, actor: _Actor,
                     note: str | None) -> None:
        now = self.clock()
        data_key = None
        if note is not None:
            if await store.case_standing_erased(session, row.case_id):
                raise Problem(409, "case-erased", "The case was erased: no note about it can be kept.")
            data_key = await self.texts.data_key(session, row.case_id, create=self.texts.keys())
        row.status = str(move.to)
        row.updated_at = now
        transition = TransitionRow(referral_id=row.id, from_status=str(move.frm), to_status=str(move.to),
                                   party=str(move.party), agency=actor.agency, acting_user=actor.acting_user,
                                   attested_by=actor.attested_by, reason_code=move.reason_code, note=None, at=now)
        session.add(transition)
        await session.flush()
        if data_key is not None and note is not None:
            # Sealed once the row has its id: the label binds the text to this transition.
            transition.sealed_note = ENVELOPE.seal(data_key, {"note": note}, case_id=row.case_id,
                                                    label=note_label(transition.id))
            await session.flush()
        await self._emit(session, row, events.state_event_type(row.status), move.reason_code, actor)

    async def cancel_by_system(self, session: AsyncSession, rows: Sequence[ReferralRow], reason_code: str) -> int:
        """Cancel open referrals in the caller's transaction (a consumer's), as RefNet itself."""
        count = 0
        for row in rows:
            current = Status(row.status)
            if current not in OPEN_STATES:
                continue
            move = domain.decide_transition(current, Status.cancelled, Party.system, reason_code)
            await self._apply(session, row, move, REFNET, None)
            count += 1
        if count:
            log.info("referrals_cancelled_by_system", reason_code=reason_code, count=count)
        return count

    async def seal_clear_text(self, batch: int = 200) -> int:
        """Seal the free text of referrals made before it was sealed (``FreeTexts.seal_clear_text``)."""
        return await self.texts.seal_clear_text(batch)

    # -- deadlines ---------------------------------------------------------------------------------------

    async def flag_overdue(self, batch: int = 200) -> int:
        """Flag referrals past due and still requested, each once, with its overdue event in the same
        transaction. Safe to run from several schedulers at once: rows are claimed under lock."""
        flagged = 0
        while True:
            async with unit_of_work(self.sessions) as session:
                now = self.clock()
                rows = await store.claim_overdue(session, now, batch)
                for row in rows:
                    row.overdue_at = now
                    await self._emit(session, row, events.OVERDUE, None, REFNET)
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
                    actor: _Actor) -> None:
        payload = events.ReferralEvent(
            referral_id=row.id, case_id=row.case_id, from_agency=row.from_agency, to_agency=row.to_agency,
            status=row.status, pathway=row.pathway, service_type=row.service_type, priority=row.priority,
            shared_categories=list(row.shared_categories), consent_id=row.consent_id, reason_code=reason_code,
            due_at=row.due_at, agency=actor.agency, acting_user=actor.acting_user, attested_by=actor.attested_by,
        ).payload()
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
