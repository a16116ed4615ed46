"""A referral's free text (its reason, its transitions' notes): sealed under the case's data key, opened only
as docs/domain.md rules 3 and 7 allow, shredded with the key when the case is erased."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import domain, store
from services.referral.domain import Party, Status
from services.referral.service.clock import Clock
from services.referral.service.views import FreeTextView, party_of
from services.referral.store import ReferralRow, TransitionRow
from shared.crypto import Envelope, Keyring, new_data_key
from shared.db import unit_of_work
from shared.errors import Problem

log = structlog.get_logger("refnet.referral")

ENVELOPE = Envelope("referral")


def reason_label(referral_id: str) -> str:
    return f"referral:{referral_id}:reason"


def note_label(transition_id: int) -> str:
    return f"transition:{transition_id}:note"


def known_consent(row: store.CaseConsentRow | None) -> domain.KnownConsent | None:
    if row is None:
        return None
    return domain.KnownConsent(version=row.version, kind="grant" if row.kind == "grant" else "withdrawal",
                               provisions=tuple(row.provisions), valid_from=row.valid_from,
                               valid_until=row.valid_until)


class FreeTexts:
    """Sealing and opening free text; ``keyring`` None: no master key configured (503 for free text)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: Keyring | None, clock: Clock) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.clock = clock

    def keys(self) -> Keyring:
        if self.keyring is None:
            raise Problem(503, "master-key-unavailable",
                          "The referral master key is not configured; free text cannot be handled.")
        return self.keyring

    async def data_key(self, session: AsyncSession, case_id: str, *, create: Keyring | None = None) -> bytes | None:
        """The case's data key; with ``create``, a new one if the case has none yet (call under the case lock,
        or where a concurrent creation is harmless: the first key stored wins). None: none (erased)."""
        row = (await store.case_keys(session, [case_id])).get(case_id)
        if row is None and create is not None:
            await store.add_case_key(session, case_id, ENVELOPE.wrap(new_data_key(), create.current, case_id),
                                     create.current.key_id)
            row = (await store.case_keys(session, [case_id])).get(case_id)
        if row is None:
            return None
        return ENVELOPE.unwrap(row.wrapped_key, self.keys().by_id(row.master_key_id), case_id)

    async def of_referral(self, session: AsyncSession, row: ReferralRow, history: Sequence[TransitionRow],
                          viewer: Party) -> FreeTextView:
        """The reason and notes of one referral as ``viewer`` may see them."""
        keys = await store.case_keys(session, [row.case_id])
        consents = await store.case_consents(session, [row.case_id])
        return self._open(row, history, viewer, keys.get(row.case_id), consents.get(row.case_id))

    async def reasons(self, session: AsyncSession, rows: Sequence[ReferralRow], me: str) -> dict[str, FreeTextView]:
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
            data_key = ENVELOPE.unwrap(key_row.wrapped_key, self.keys().by_id(key_row.master_key_id), row.case_id)

        def shown(author: Party | None) -> bool:
            return domain.free_text_shown(viewer=viewer, author=author, status=Status(row.status),
                                          shared_categories=row.shared_categories, consented=consented)

        reason: str | None = None
        state = "erased"
        if row.sealed_reason is not None and data_key is not None:
            state = "shown" if shown(Party.sender) else "withheld"
            if state == "shown":
                reason = ENVELOPE.open_sealed(data_key, row.sealed_reason, case_id=row.case_id,
                                              label=reason_label(row.id))["reason"]
        elif row.reason is not None:  # made before sealing, not yet sealed
            state = "shown" if shown(Party.sender) else "withheld"
            reason = row.reason if state == "shown" else None
        notes: dict[int, str | None] = {}
        for t in history or ():
            if not shown(Party(t.party)):
                notes[t.id] = None
            elif t.sealed_note is not None and data_key is not None:
                notes[t.id] = ENVELOPE.open_sealed(data_key, t.sealed_note, case_id=row.case_id,
                                                   label=note_label(t.id))["note"]
            else:
                notes[t.id] = t.note
        return FreeTextView(reason=reason, state=state, notes=notes)

    async def seal_clear_text(self, batch: int = 200) -> int:
        """Seal the reasons and notes of referrals made before free text was sealed (once, at start-up);
        those of erased cases are dropped. Returns how many referrals were done."""
        keys = self.keys()
        done = 0
        while True:
            async with unit_of_work(self.sessions) as session:
                rows = await store.referrals_with_clear_text(session, batch)
                for row in rows:
                    data_key = None
                    if not await store.case_standing_erased(session, row.case_id):
                        data_key = await self.data_key(session, row.case_id, create=keys)
                    if row.reason is not None:
                        row.sealed_reason = None if data_key is None else ENVELOPE.seal(
                            data_key, {"reason": row.reason}, case_id=row.case_id, label=reason_label(row.id))
                        row.reason = None
                        # The old fingerprint was a plain SHA-256 of the request, reason included: a guessed
                        # reason could be confirmed against it. Dropped: a replay of that request is refused
                        # (422) rather than matched.
                        row.request_hash = None
                    for t in await store.history(session, row.id):
                        if t.note is not None:
                            t.sealed_note = None if data_key is None else ENVELOPE.seal(
                                data_key, {"note": t.note}, case_id=row.case_id, label=note_label(t.id))
                            t.note = None
            done += len(rows)
            if len(rows) < batch:
                break
        if done:
            log.info("free_text_sealed", referrals=done)
        return done
