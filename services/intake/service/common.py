"""What every intake use case shares: the master keys, the access record and event of an act, a case's data key
and its view, and moving what an older release left in clear into the sealed data."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import domain, store
from services.intake import events as ev
from services.intake.crypto import Keyring, KeyUnavailable, MasterKey, open_sealed, unwrap
from services.intake.store import CaseRow
from shared.access import AccessRecord, Outcome, record_access
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.ids import is_case_id
from shared.outbox import add_event

log = structlog.get_logger("refnet.intake")

TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
PERSON_SEALED = ("given_name", "family_name", "other_names", "birth_date", "estimated_age", "gender",
                 "citizenship", "languages", "phone", "email", "address", "documents")
# Quasi-identifiers an older release kept in clear columns (now sealed with the person).
DEMOGRAPHIC_COLUMNS = ("gender", "citizenship", "age_band")
CASE_LABEL = "case"


def token(value: str | None) -> str | None:
    return value if value is not None and TOKEN.fullmatch(value) else None


def now() -> datetime:
    return datetime.now(UTC)


class MasterKeys:
    """The master keys wrapping the cases' data keys, re-read from their files when a data key names one this
    process does not hold (a rotation re-wrapped it since). ``load`` raises ``KeyUnavailable`` when there is
    none; ``None``: nothing to re-read."""

    def __init__(self, keyring: Keyring | None, load: Callable[[], Keyring] | None = None) -> None:
        self.keyring = keyring
        self.load = load

    @classmethod
    def from_files(cls, load: Callable[[], Keyring]) -> MasterKeys:
        try:
            keyring = load()
        except KeyUnavailable as exc:
            # Without a key no personal data is accepted or shown (503), rather than kept under a
            # throwaway key; the rest of the service (health, clearance) still answers.
            log.warning("master_key_unavailable", reason=str(exc))
            return cls(None, load)
        log.info("master_key_loaded", key_id=keyring.current.key_id)
        return cls(keyring, load)

    def current(self) -> Keyring:
        if self.keyring is None:
            raise Problem(503, "master-key-unavailable",
                          "The intake master key is not configured; personal data cannot be handled.")
        return self.keyring

    def by_id(self, key_id: str) -> MasterKey:
        try:
            return self.current().by_id(key_id)
        except KeyUnavailable:
            if self.load is None:
                raise
            # A rotation may have re-wrapped this data key since we loaded ours: look at the files again.
            self.reload()
            return self.current().by_id(key_id)

    def reload(self) -> None:
        """Re-read the key files, keeping the keys this process already had (data keys it wrapped while a
        rotation ran must stay readable until the rotation sweeps them)."""
        assert self.load is not None
        try:
            fresh = self.load()
        except KeyUnavailable:
            return
        self.keyring = fresh.merged(self.keyring)
        log.info("master_keys_reloaded", current_key_id=self.keyring.current.key_id,
                 keys=1 + len(self.keyring.previous))


@dataclass(frozen=True)
class Resources:
    """What every use case needs: the database, the master keys and this service's event source."""

    sessions: async_sessionmaker[AsyncSession]
    keys: MasterKeys
    source: str

    async def access(
        self, session: AsyncSession, principal: Principal, *, action: str, outcome: Outcome,
        case_id: str | None, purpose: str | None = None, resource_type: str = "Case",
        resource_id: str | None = None, **details: Any,
    ) -> None:
        # Only an id of intake's own format is recorded: a string a caller typed in a URL never reaches the log.
        case_id = case_id if is_case_id(case_id) else None
        record = AccessRecord(
            action=action, outcome=outcome, agency=token(principal.agency_id),
            client_id=token(principal.client_id), acting_user=token(principal.acting_user),
            attested_by=principal.attested_by,
            purpose=token(purpose), resource_type=resource_type, resource_id=token(resource_id) or case_id,
            case_id=case_id, details={k: v for k, v in details.items() if v is not None},
        )
        await record_access(session, source=self.source, record=record)

    async def emit(self, session: AsyncSession, type: str, case_id: str, model: Any) -> None:
        await add_event(session, source=self.source, topic=ev.TOPIC, type=type, aggregate_type="Case",
                        aggregate_id=case_id, payload=ev.payload(model), subject=case_id)

    async def data_key(self, session: AsyncSession, case_id: str) -> bytes | None:
        row = await store.case_key(session, case_id)
        if row is None:
            return None  # erased: the key is gone
        return unwrap(row.wrapped_key, self.keys.by_id(row.master_key_id), case_id)

    async def personal(self, session: AsyncSession, row: CaseRow) -> dict[str, Any] | None:
        if row.sealed is None:
            return None
        key = await self.data_key(session, row.id)
        if key is None:
            return None
        return open_sealed(key, row.sealed, case_id=row.id, label=CASE_LABEL)


def actor(principal: Principal) -> dict[str, Any]:
    return {"agency": principal.agency_id, "client_id": principal.client_id,
            "acting_user": principal.acting_user, "attested_by": principal.attested_by}


def case_event(row: CaseRow, principal: Principal, purpose: str, changed: Sequence[str] = ()) -> ev.CaseEvent:
    """The write, and the case its answer carried to the owner: one event, so one audit entry for the act
    (an access record beside it would be a second entry for the same act). Nothing about the person."""
    return ev.CaseEvent(case_id=row.id, **actor(principal), purpose=purpose, status=row.status,
                        data_categories=sorted(domain.ALL_CATEGORIES), changed=list(changed))


async def own_case(session: AsyncSession, principal: Principal, case_id: str, *, lock: bool = False) -> CaseRow:
    """The caller's own case, or 404 (another agency's case is indistinguishable from none)."""
    if not is_case_id(case_id):
        raise not_found("case")
    row = await store.own_case(session, principal.agency_id, case_id, lock=lock)
    if row is None:
        raise not_found("case")
    return row


def view(row: CaseRow, personal: dict[str, Any] | None) -> dict[str, Any]:
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


def anything_in_clear(row: CaseRow) -> bool:
    """Does the case still hold in clear what is now sealed (trafficking facts, gender, citizenship, age band)?
    Stored before intake_0005, or by an older replica during a rolling upgrade."""
    return any(k in row.facts for k in domain.SEALED_FACTS) or any(
        getattr(row, k) is not None for k in DEMOGRAPHIC_COLUMNS)


def seal_clear_facts(row: CaseRow, personal: dict[str, Any] | None) -> dict[str, Any]:
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


async def shred(session: AsyncSession, row: CaseRow, erased_at: datetime) -> None:
    """Destroy the case's data key and ciphertext; the pseudonymous record stays, marked erased."""
    await store.delete_case_key(session, row.id)
    seal_clear_facts(row, None)  # a case stored before intake_0005: its facts go with its key
    row.sealed = None
    row.status = "erased"
    row.erased_at = row.updated_at = erased_at
