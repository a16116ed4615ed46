"""Reading the log: entries filtered and paged, and a case's access and consent history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.domain import (
    ATTESTED_BY,
    CONSENT_PREFIX,
    consents_in_force,
    in_the_order_they_happened,
    is_access,
)
from services.audit.leaf import ENTRY_FIELDS, entry_json
from shared import pagination
from shared.errors import Problem

MAX_INDEX = 2**63 - 1  # PostgreSQL's BIGINT, the type of an entry's index


class InvalidParameter(Problem):
    """A request parameter that is well-formed but impossible (index beyond the tree, first > second)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(400, "invalid-parameter", f"{name}: {message}", title="Bad Request",
                         errors=[{"loc": ["query", name], "msg": message}])


def entry_of(row: Any) -> dict[str, Any]:
    """A stored entry (a row with ``idx``, ``recorded_at`` and the entry columns) as the API shows it."""
    return entry_json(index=int(row.idx), recorded_at=row.recorded_at,
                      **{name: getattr(row, name) for name in store.ENTRY_COLUMNS})


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    # Not opaque, unlike other lists' cursors: a position in an append-only log that an auditor may resume from
    # (the index of the last entry seen), as a case system resumes referral's feed. Its refusal is the one all
    # cursors get. ASCII digits only (str.isdigit() also takes other scripts' digits), and within BIGINT.
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or int(cursor) > MAX_INDEX:
        raise pagination.invalid_cursor()
    return int(cursor)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def json(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


class Entries:
    """The log's entries as auditors read them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def find(self, *, limit: int, cursor: str | None, case_id: str | None = None, agency: str | None = None,
                   actions: list[str] | None = None, since: datetime | None = None, until: datetime | None = None
                   ) -> Page:
        if since is not None and until is not None and since > until:
            raise InvalidParameter("since", "is after until")
        async with self.sessions() as session:
            rows = await store.find_entries(session, limit=limit + 1, after=parse_cursor(cursor), case_id=case_id,
                                            agency=agency, actions=actions, since=since, until=until)
        items = [entry_of(r) for r in rows[:limit]]
        return Page(items, str(items[-1]["index"]) if len(rows) > limit else None)

    async def case_access(self, case_id: str) -> dict[str, Any]:
        """Who saw (or tried to see) the case, when, why, and under which consent."""
        async with self.sessions() as session:
            rows = await store.case_entries(session, case_id)
        history = [entry_of(r) for r in rows]
        consent = consents_in_force(history)
        items = []
        for e in history:
            if not is_access(e["action"], e["purpose"]):
                continue
            basis = consent[e["index"]]
            items.append({
                "index": e["index"], "occurred_at": e["occurred_at"], "recorded_at": e["recorded_at"],
                "action": e["action"], "outcome": e["outcome"], "agency": e["agency"], "client_id": e["client_id"],
                "acting_user": e["acting_user"], "attested_by": e["details"].get(ATTESTED_BY),
                "purpose": e["purpose"],
                "data_categories": e["details"].get("data_categories") or e["details"].get("categories"),
                "consent": {"consent_id": basis.consent_id, "consent_version": basis.consent_version,
                            "basis": basis.basis},
            })
        return {"case_id": case_id, "items": in_the_order_they_happened(items), "next_cursor": None}

    async def case_consents(self, case_id: str) -> dict[str, Any]:
        """The consent versions, withdrawals and overrides of a case, pseudonymous as the log is."""
        async with self.sessions() as session:
            rows = await store.case_entries(session, case_id)
        items = [
            {name: e[name] for name in ENTRY_FIELDS if name not in ("case_id", "source_service")}
            for e in map(entry_of, rows) if e["action"].startswith(CONSENT_PREFIX)
        ]
        # A case has tens of entries, not thousands: one page, in the list shape every RefNet list has.
        return {"case_id": case_id, "items": items, "next_cursor": None}
