"""The referral broker's rules, free of I/O: the SOP pathways, the guards a new referral must pass, the
lifecycle (CONTRACT.md "Referral states"), deadlines and the de-identification of statistics.

Every rule lives here once; ``service.py`` gathers the facts (clearance from intake, the registry read
model, the case's other referrals) and asks these functions for the decision.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from shared.consent import provisions_permit

# --- vocabularies -------------------------------------------------------------------------------------------


class Pathway(StrEnum):
    protection = "protection"
    assistance = "assistance"
    service = "service"
    avrr = "avrr"
    resettlement = "resettlement"


class Priority(StrEnum):
    emergency = "emergency"
    urgent = "urgent"
    normal = "normal"


class Status(StrEnum):
    requested = "requested"
    received = "received"
    accepted = "accepted"
    rejected = "rejected"
    in_progress = "in_progress"
    on_hold = "on_hold"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Party(StrEnum):
    """Who moves a referral: the agency that sent it, the one that received it, or RefNet itself."""

    sender = "sender"
    recipient = "recipient"
    system = "system"


class DataCategory(StrEnum):
    identity = "identity"
    contact = "contact"
    demographics = "demographics"
    trafficking_experience = "trafficking_experience"
    protection_needs = "protection_needs"
    health = "health"
    documents = "documents"
    notes = "notes"


#: Service taxonomy codes (DOMAIN.md "Service taxonomy"; the registry owns the labels).
TAXONOMY: frozenset[str] = frozenset({
    "shelter", "safety_security", "food_nfi_cash", "wash", "health.medical", "health.srh", "mhpss",
    "legal.counselling", "legal.representation", "protection.rsd", "protection.resettlement", "avrr",
    "reintegration.livelihood", "reintegration.education", "family_tracing", "child_protection.bia_bid",
    "child_protection.guardianship", "law_enforcement_liaison", "interpretation", "case_management",
})

OPEN_STATES: frozenset[Status] = frozenset(
    {Status.requested, Status.received, Status.accepted, Status.in_progress, Status.on_hold}
)
TERMINAL_STATES: frozenset[Status] = frozenset(set(Status) - OPEN_STATES)

#: CONTRACT.md: reason codes for rejected.
REJECT_REASONS: frozenset[str] = frozenset({"no-capacity", "not-eligible", "outside-mandate", "duplicate", "other"})
#: Reason codes for failed (the recipient could not deliver the service it accepted).
FAIL_REASONS: frozenset[str] = frozenset(
    {"lost-contact", "person-declined", "no-capacity", "not-eligible", "service-unavailable", "other"}
)
#: Reason codes a sender may give when it cancels.
SENDER_CANCEL_REASONS: frozenset[str] = frozenset(
    {"no-longer-needed", "person-declined", "duplicate", "wrong-recipient", "referred-elsewhere", "other"}
)
#: Reason codes only RefNet itself gives, reacting to other services' events.
SYSTEM_CANCEL_REASONS: frozenset[str] = frozenset({"consent-withdrawn", "recipient-suspended", "case-erased"})
#: Optional reason codes for putting a service on hold.
HOLD_REASONS: frozenset[str] = frozenset(
    {"awaiting-person", "awaiting-documents", "awaiting-capacity", "safety-concern", "other"}
)

# --- the lifecycle ------------------------------------------------------------------------------------------

#: (from, to) -> the one party that may make that move. Sender and system cancellations are added below for
#: every open state. This is CONTRACT.md's diagram, and nothing else.
TRANSITIONS: dict[tuple[Status, Status], Party] = {
    (Status.requested, Status.received): Party.recipient,
    (Status.received, Status.accepted): Party.recipient,
    (Status.received, Status.rejected): Party.recipient,
    (Status.accepted, Status.in_progress): Party.recipient,
    (Status.in_progress, Status.completed): Party.recipient,
    (Status.in_progress, Status.on_hold): Party.recipient,
    (Status.on_hold, Status.in_progress): Party.recipient,
    (Status.in_progress, Status.failed): Party.recipient,
}

#: Which reason codes each target state requires (absent: none allowed but optional for on_hold).
REQUIRED_REASONS: dict[Status, frozenset[str]] = {
    Status.rejected: REJECT_REASONS,
    Status.failed: FAIL_REASONS,
}


def allowed_moves(current: Status, party: Party) -> list[Status]:
    """The states ``party`` may move a referral in ``current`` to, in a stable order."""
    moves = [to for (frm, to), who in TRANSITIONS.items() if frm == current and who == party]
    if current in OPEN_STATES and party in (Party.sender, Party.system):
        moves.append(Status.cancelled)
    return moves


def reason_codes_for(to: Status, party: Party) -> frozenset[str] | None:
    """The reason codes a move to ``to`` by ``party`` requires; None if it takes none (or only optional)."""
    if to is Status.cancelled:
        return SYSTEM_CANCEL_REASONS if party is Party.system else SENDER_CANCEL_REASONS
    return REQUIRED_REASONS.get(to)


class TransitionRefused(Exception):
    """Base of the lifecycle's refusals."""


@dataclass
class InvalidTransition(TransitionRefused):
    current: Status
    requested: str
    party: Party
    allowed: list[Status]

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed) or "none"
        return (f"A {self.party} cannot move a referral from '{self.current}' to '{self.requested}'; "
                f"allowed: {allowed}.")


@dataclass
class ReasonCodeInvalid(TransitionRefused):
    to: Status
    given: str | None
    allowed: list[str]

    def __str__(self) -> str:
        if self.given is None:
            return f"Moving to '{self.to}' requires a reason_code, one of: {', '.join(self.allowed)}."
        return f"reason_code is not valid for '{self.to}'; one of: {', '.join(self.allowed)}."


@dataclass(frozen=True)
class Move:
    """An accepted transition, as it goes into the history."""

    frm: Status
    to: Status
    party: Party
    reason_code: str | None


def decide_transition(current: Status, to: str, party: Party, reason_code: str | None = None) -> Move:
    """Check one move of the lifecycle: who may make it, and the reason code it needs.

    Raises ``InvalidTransition`` (the move does not exist for this party from this state) or
    ``ReasonCodeInvalid`` (missing or unknown reason code).
    """
    allowed = allowed_moves(current, party)
    try:
        target = Status(to)
    except ValueError:
        raise InvalidTransition(current, to, party, allowed) from None
    if target not in allowed:
        raise InvalidTransition(current, to, party, allowed)
    codes = reason_codes_for(target, party)
    if codes is not None:
        if reason_code not in codes:
            raise ReasonCodeInvalid(target, reason_code, sorted(codes))
    elif target is Status.on_hold:
        if reason_code is not None and reason_code not in HOLD_REASONS:
            raise ReasonCodeInvalid(target, reason_code, sorted(HOLD_REASONS))
    elif reason_code is not None:
        raise ReasonCodeInvalid(target, reason_code, [])
    return Move(current, target, party, reason_code)


# --- guards on a new referral -------------------------------------------------------------------------------

GuardName = Literal[
    "consent-missing", "child-bia-missing", "child-bid-missing", "non-refoulement", "recipient-suspended",
    "service-full",
]


@dataclass(frozen=True)
class CaseFacts:
    """What intake's clearance tells about the case, at the moment of the request (no personal data)."""

    is_minor: bool
    bia_completed: bool
    bid_completed: bool
    fear_of_return: bool
    status: str = "active"


@dataclass(frozen=True)
class Recipient:
    agency_id: str
    status: str  # active | suspended


@dataclass(frozen=True)
class ServiceOffer:
    service_id: str
    agency_id: str
    taxonomy: str
    capacity_status: str  # accepting | full | closed
    available: int


@dataclass(frozen=True)
class GuardFailure:
    guard: GuardName
    detail: str


@dataclass(frozen=True)
class NewReferral:
    pathway: Pathway
    consent_permitted: bool
    facts: CaseFacts
    recipient: Recipient
    service: ServiceOffer | None
    open_pathways_of_case: tuple[Pathway, ...]  # pathways of the case's referrals in an open state


def check_guards(new: NewReferral) -> GuardFailure | None:
    """The first SOP rule a new referral breaks, or None. Order: consent first (rule 1), then the
    child safeguards (rule 4), non-refoulement (rule 5), then the recipient's own situation."""
    if not new.consent_permitted:
        return GuardFailure("consent-missing", "The case has no active consent permitting this referral to this "
                                               "recipient for every shared data category.")
    if new.facts.is_minor and not new.facts.bia_completed:
        return GuardFailure("child-bia-missing", "A child's referral needs a recorded best-interests assessment.")
    if new.facts.is_minor and new.pathway in (Pathway.avrr, Pathway.resettlement) and not new.facts.bid_completed:
        return GuardFailure("child-bid-missing",
                            f"An {new.pathway} referral for a child needs a completed best-interests determination.")
    if new.pathway is Pathway.avrr:
        if new.facts.fear_of_return:
            return GuardFailure("non-refoulement", "No avrr referral while the case records fear of return.")
        if Pathway.protection in new.open_pathways_of_case:
            return GuardFailure("non-refoulement",
                                "No avrr referral while a protection referral for the case is open or accepted.")
    if new.recipient.status != "active":
        return GuardFailure("recipient-suspended", "The recipient agency is suspended.")
    if new.service is not None and (new.service.capacity_status != "accepting" or new.service.available <= 0):
        return GuardFailure("service-full", "The service is not accepting referrals now.")
    return None


# --- consent in force (DOMAIN.md rules 1 and 2) ---------------------------------------------------------


@dataclass(frozen=True)
class KnownConsent:
    """The latest consent version of a case that intake's events told us of. Versions are append-only: a
    new grant replaces the one before, a withdrawal ends it and leaves none in force."""

    version: int
    kind: Literal["grant", "withdrawal"]
    provisions: tuple[Mapping[str, Any], ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def consent_covers(consent: KnownConsent | None, *, recipient: str, categories: Iterable[str],
                   at: datetime) -> bool:
    """Whether the case's consent in force at ``at`` permits a referral to ``recipient`` of ``categories``
    (intake's rule: only the latest version counts, and only while it is valid)."""
    if consent is None or consent.kind != "grant":
        return False
    if (consent.valid_from is not None and consent.valid_from > at) or (
            consent.valid_until is not None and consent.valid_until <= at):
        return False
    return provisions_permit(consent.provisions, purpose="referral", recipient=recipient, categories=categories)


@dataclass(frozen=True)
class OpenReferral:
    referral_id: str
    to_agency: str
    shared_categories: tuple[str, ...]
    consent_id: str | None  # None: made under a risk-to-life override, not under consent


def no_longer_consented(consent: KnownConsent | None, referrals: Sequence[OpenReferral], at: datetime) -> list[str]:
    """The open referrals made under consent that the consent now in force no longer covers -- whichever
    version they were made under. Those made under an override stand or fall with the override."""
    return [r.referral_id for r in referrals if r.consent_id is not None
            and not consent_covers(consent, recipient=r.to_agency, categories=r.shared_categories, at=at)]


#: The data category a referral's free text (its reason, its transitions' notes) is shared under. Free text
#: can say anything about the person -- where she hides, what was done to her, her health -- so no narrower
#: category covers it: the recipient reads it only if the sender shared ``notes`` and the consent permits
#: that recipient ``notes`` (clearance checks every shared category), as intake shows a case's notes.
FREE_TEXT_CATEGORY = DataCategory.notes


def free_text_shown(*, viewer: Party, author: Party | None, status: Status, shared_categories: Iterable[str],
                    consented: bool) -> bool:
    """May ``viewer`` read a free text of a referral written by ``author``? The sender registered the case
    (its own data, until erasure); a party reads back what it wrote itself; the recipient reads the rest
    only while the referral is open, the free-text category shared and a consent in force covering it."""
    if viewer is Party.sender or (author is not None and author is viewer):
        return True
    return status in OPEN_STATES and FREE_TEXT_CATEGORY in set(shared_categories) and consented


def consent_still_current(cleared_version: int | None, known_version: int | None) -> bool:
    """intake cleared a referral under consent ``cleared_version`` (None: under an override); a later version
    we already heard of -- a withdrawal, or a grant that may not cover it -- means the clearance is stale."""
    return cleared_version is None or known_version is None or known_version <= cleared_version


# --- deadlines ----------------------------------------------------------------------------------------------

ACKNOWLEDGE_WITHIN: Mapping[Priority, timedelta] = {
    Priority.emergency: timedelta(hours=24),
    Priority.urgent: timedelta(hours=72),
    Priority.normal: timedelta(days=14),
}


def due_at(priority: Priority, created_at: datetime,
           within: Mapping[Priority, timedelta] = ACKNOWLEDGE_WITHIN) -> datetime:
    """When the recipient must have acknowledged (moved the referral past ``requested``); ``within``: the
    deadlines the country's SOPs agreed, if not the referral form's."""
    return created_at + within[priority]


def is_overdue(status: Status, due: datetime, now: datetime) -> bool:
    """Overdue is a flag, not a state: the deadline passed while the referral was still ``requested``."""
    return status is Status.requested and now >= due


# --- statistics ---------------------------------------------------------------------------------------------
#
# DOMAIN.md rule 9. Published for closed calendar months and quarters only, every count under 11 (zero
# included: "none" is a count too) suppressed, with complementary suppression. Decision: suppression, not
# noise (OpenDP). Rule 9 prescribes k = 11 suppression; oversight bodies reconcile these counts with their
# own case files, which noisy counts would not match; and a differentially private release over periods
# that are asked for again and again needs a privacy budget that the small numbers here would spend at once.
#
# The cells are laid out so that protection can be proved, not just hoped for:
#   - a month: referrals created in it, partitioned four ways (by pathway, by sending agency, by receiving
#     agency, with or without consent) under one total; per pathway, decisions (accepted + rejected) and
#     acknowledgements (within + after the deadline) each under their own total; overdue flags alone. Every
#     cell is in at most one sum as a part, and a total is suppressed only when it is itself under 11 (then
#     all its parts are too). So, given the published totals, the sums are independent of one another, and
#     the complementary rule below -- in each sum, no suppressed part or at least two whose true sum is at
#     least 11 -- leaves every suppressed cell free to be 0 or 11 or more, whatever else is published.
#   - a quarter: the sum of its three months, a cell published only where all three months publish it, so a
#     quarter tells nothing the months do not (no "quarter minus two months"), and months are disjoint.
# Indicators are events within the period (created, acknowledged, decided, flagged overdue in it), so a
# closed period's figures never change afterwards: asking again later differences nothing.

K_ANONYMITY = 11
#: What every suppressed figure shows: one marker for all, so a reader cannot tell a small cell from the
#: larger one suppressed to protect it.
SUPPRESSED = "suppressed"
#: A period is published once it has ended and this long has passed (a request still committing then lands).
PERIOD_SETTLES = timedelta(days=1)

Figure = int | float | str | None


@dataclass(frozen=True)
class Period:
    """A fixed reporting period: a calendar month (``2026-11``) or quarter (``2026-Q3``), UTC."""

    label: str
    start: datetime
    end: datetime
    months: tuple[str, ...]  # the month labels it covers, in order


class PeriodInvalid(ValueError):
    """Not a period label, or a period not published (yet)."""


_PERIOD = re.compile(r"([1-9][0-9]{3})-(?:(0[1-9]|1[0-2])|Q([1-4]))")


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def parse_period(value: str) -> Period:
    """``YYYY-MM`` or ``YYYY-Qn``; anything else is ``PeriodInvalid``."""
    match = _PERIOD.fullmatch(value)  # not match(): "$" would let a trailing newline through
    if match is None:
        raise PeriodInvalid("period must be a calendar month (YYYY-MM) or quarter (YYYY-Qn), e.g. 2026-11 or 2026-Q3.")
    year = int(match[1])
    first = int(match[2]) if match[2] else 3 * int(match[3]) - 2
    count = 1 if match[2] else 3
    last = first + count  # the month after the period, possibly 13
    if last == 13 and year == 9999:  # it would end in year 10000, which datetime lacks: far from ended
        raise PeriodInvalid(f"period {value} has not ended.")
    end = _month_start(year + 1, 1) if last == 13 else _month_start(year, last)
    return Period(label=value, start=_month_start(year, first), end=end,
                  months=tuple(f"{year:04d}-{m:02d}" for m in range(first, first + count)))


def check_closed(period: Period, now: datetime, settles: timedelta = PERIOD_SETTLES) -> None:
    """Only periods that have ended (and settled) are published: an open one would change as it fills."""
    if period.end + settles > now:
        raise PeriodInvalid(f"period {period.label} has not ended; it is published from "
                            f"{_iso(period.end + settles)}.")


@dataclass(frozen=True)
class MonthCounts:
    """One month's true counts, before suppression (never published as such).

    ``created``: referrals created in the month, by (pathway, sending agency, receiving agency, has consent).
    ``decided``: acceptances and rejections made in the month, by (pathway, accepted?).
    ``acknowledged``: acknowledgements made in the month, by (pathway, within the deadline?).
    ``overdue``: referrals flagged overdue in the month, by pathway.
    """

    created: Mapping[tuple[str, str, str, bool], int]
    decided: Mapping[tuple[str, bool], int]
    acknowledged: Mapping[tuple[str, bool], int]
    overdue: Mapping[str, int]


Cell = tuple[str, ...]


@dataclass(frozen=True)
class Sum:
    """A published total and the published cells that add up to it."""

    total: Cell
    parts: tuple[Cell, ...]


def cells_of(counts: MonthCounts, agencies: Iterable[str]) -> tuple[dict[Cell, int], list[Sum]]:
    """Every cell a month publishes, with its true value, and the sums among them. Every agency and every
    pathway has its cells, zero or not: leaving a cell out would publish its zero."""
    everyone = sorted(set(agencies) | {a for (_, s, r, _) in counts.created for a in (s, r)})
    cells: dict[Cell, int] = {("referrals",): sum(counts.created.values())}

    def add(cell: Cell, value: int) -> None:
        cells[cell] = cells.get(cell, 0) + value

    for key in [("by_pathway", str(p)) for p in Pathway] + [("with_consent",), ("without_consent",)]:
        add(("referrals", *key), 0)
    for agency in everyone:
        add(("referrals", "by_sending_agency", agency), 0)
        add(("referrals", "by_receiving_agency", agency), 0)
    for (pathway, sender, recipient, consented), n in counts.created.items():
        add(("referrals", "by_pathway", pathway), n)
        add(("referrals", "by_sending_agency", sender), n)
        add(("referrals", "by_receiving_agency", recipient), n)
        add(("referrals", "with_consent" if consented else "without_consent"), n)
    total = ("referrals",)
    sums = [Sum(total, tuple(c for c in cells if c[1:2] == (group,)))
            for group in ("by_pathway", "by_sending_agency", "by_receiving_agency")]
    sums.append(Sum(total, (("referrals", "with_consent"), ("referrals", "without_consent"))))
    for p in Pathway:
        pathway = str(p)
        decisions = {flag: counts.decided.get((pathway, flag), 0) for flag in (True, False)}
        acks = {flag: counts.acknowledged.get((pathway, flag), 0) for flag in (True, False)}
        cells[(pathway, "decisions")] = decisions[True] + decisions[False]
        cells[(pathway, "accepted")] = decisions[True]
        cells[(pathway, "rejected")] = decisions[False]
        cells[(pathway, "acknowledged")] = acks[True] + acks[False]
        cells[(pathway, "acknowledged_within_deadline")] = acks[True]
        cells[(pathway, "acknowledged_late")] = acks[False]
        cells[(pathway, "overdue")] = counts.overdue.get(pathway, 0)
        sums.append(Sum((pathway, "decisions"), ((pathway, "accepted"), (pathway, "rejected"))))
        sums.append(Sum((pathway, "acknowledged"),
                        ((pathway, "acknowledged_within_deadline"), (pathway, "acknowledged_late"))))
    return cells, sums


def suppress(cells: Mapping[Cell, int], sums: Iterable[Sum], k: int = K_ANONYMITY) -> set[Cell]:
    """The cells to suppress: every one under ``k`` (primary), and in each sum whose total is published,
    more of its parts until the suppressed ones are none, or at least two that add up to ``k`` or more
    (complementary). Then each suppressed part may be anything from 0 to ``k`` or more for all a reader can
    tell: the others in its sum absorb the difference. Expects each cell to be a part of one sum at most."""
    hidden = {cell for cell, n in cells.items() if n < k}
    for total in sums:
        if total.total in hidden:
            continue  # a total under k: every part is under k too, all suppressed already
        parts = [c for c in total.parts if c in hidden]
        if not parts:
            continue
        # The smallest published parts first: the least lost (one part of k or more always suffices).
        for cell in sorted((c for c in total.parts if c not in hidden), key=lambda c: (cells[c], c)):
            if len(parts) >= 2 and sum(cells[c] for c in parts) >= k:
                break
            hidden.add(cell)
            parts.append(cell)
    return hidden


def whole_hours(median: float | None) -> float | None:
    """A median wait to the whole hour (a finer one would be one person's exact wait)."""
    return None if median is None else float(round(median))


def rate(numerator: Figure, denominator: Figure) -> Figure:
    """A share of two published counts (it then tells nothing they do not); suppressed if either is."""
    if not isinstance(numerator, int) or not isinstance(denominator, int):
        return SUPPRESSED
    return round(numerator / denominator, 4) if denominator else None


def statistics_view(period: Period, values: Mapping[Cell, int], hidden: set[Cell],
                    medians: Mapping[tuple[str, str], float | None]) -> dict[str, object]:
    """The published document: each cell its value or ``SUPPRESSED``; rates and medians only over
    published counts. ``medians``: (pathway, "acknowledge" | "accept") -> hours, over the whole period."""
    def shown(cell: Cell) -> Figure:
        return SUPPRESSED if cell in hidden else values[cell]

    total, consented = shown(("referrals",)), shown(("referrals", "with_consent"))
    referrals: dict[str, object] = {"total": total}
    for group in ("by_pathway", "by_sending_agency", "by_receiving_agency"):
        referrals[group] = {c[2]: shown(c) for c in sorted(values) if c[:2] == ("referrals", group)}
    referrals["with_consent"] = consented
    referrals["without_consent"] = shown(("referrals", "without_consent"))  # risk-to-life overrides
    referrals["share_with_consent"] = rate(consented, total)
    pathways: dict[str, object] = {}
    for p in Pathway:
        pathway = str(p)
        row: dict[str, Figure] = {name: shown((pathway, name)) for name in (
            "decisions", "accepted", "rejected", "acknowledged", "acknowledged_within_deadline",
            "acknowledged_late", "overdue")}
        row["acceptance_rate"] = rate(row["accepted"], row["decisions"])
        row["share_acknowledged_within_deadline"] = rate(row["acknowledged_within_deadline"], row["acknowledged"])
        # A median over published counts only: of 11 or more waits, to the hour.
        row["median_hours_to_acknowledge"] = (
            whole_hours(medians.get((pathway, "acknowledge"))) if isinstance(row["acknowledged"], int) else SUPPRESSED)
        row["median_hours_to_accept"] = (
            whole_hours(medians.get((pathway, "accept"))) if isinstance(row["accepted"], int) else SUPPRESSED)
        pathways[pathway] = row
    return {
        "period": {"label": period.label, "start": _iso(period.start), "end": _iso(period.end)},
        "k_anonymity": K_ANONYMITY,
        "referrals": referrals,
        "by_pathway": pathways,
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def protect_quarter(months: Sequence[tuple[Mapping[Cell, int], set[Cell]]]) -> tuple[dict[Cell, int], set[Cell]]:
    """A quarter from its three protected months: each cell the sum of the months', published only where
    every month publishes it -- a sum of published figures, so it adds nothing to what the months show."""
    values: dict[Cell, int] = {}
    for month_values, _ in months:
        for cell, n in month_values.items():
            values[cell] = values.get(cell, 0) + n
    hidden = {cell for cell in values
              if any(cell not in month_values or cell in month_hidden for month_values, month_hidden in months)}
    return values, hidden


# --- suggestions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A registry service as the read model knows it, for ranking."""

    service_id: str
    agency_id: str
    agency_active: bool
    taxonomy: str
    capacity_status: str
    available: int
    total: int
    languages: frozenset[str]
    countries: frozenset[str]
    accepts_children: bool
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Need:
    """What the referring agency says it looks for (it knows its case; nothing here is sent anywhere)."""

    service_type: str
    languages: frozenset[str] = frozenset()
    is_child: bool | None = None
    country: str | None = None
    near: tuple[float, float] | None = None


@dataclass(frozen=True)
class Suggestion:
    offer: Offer
    score: int
    reasons: tuple[str, ...]
    distance_km: float | None


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _taxonomy_family(code: str) -> str:
    return code.split(".", 1)[0]


def rank_services(offers: Iterable[Offer], need: Need) -> list[Suggestion]:
    """Services fit for the need, best first: taxonomy match, then room to accept, languages in common,
    children accepted, country served; ties go to the nearest (when a location is given), then by id.

    Left out: services of suspended agencies, of another taxonomy family, and services that do not
    accept children when the person is a child. Full or closed services stay in, ranked last, so the
    sender sees them and why (a referral to them would be refused as service-full).
    """
    suggestions: list[Suggestion] = []
    for offer in offers:
        if not offer.agency_active:
            continue
        if need.is_child and not offer.accepts_children:
            continue
        reasons: list[str] = []
        score = 0
        if offer.taxonomy == need.service_type:
            score += 4
            reasons.append("taxonomy-exact")
        elif _taxonomy_family(offer.taxonomy) == _taxonomy_family(need.service_type):
            score += 1
            reasons.append("taxonomy-related")
        else:
            continue
        if offer.capacity_status == "accepting" and offer.available > 0:
            score += 3
            reasons.append("accepting")
        else:
            score -= 10
            reasons.append("full")
        common = len(need.languages & offer.languages)
        if common:
            score += min(common, 2)
            reasons.append("language")
        if need.is_child and offer.accepts_children:
            score += 1
            reasons.append("accepts-children")
        if need.country is not None:
            if need.country in offer.countries:
                score += 1
                reasons.append("country")
            else:
                score -= 1
        distance = None
        if need.near is not None and offer.lat is not None and offer.lon is not None:
            distance = round(distance_km(need.near, (offer.lat, offer.lon)), 1)
        suggestions.append(Suggestion(offer, score, tuple(reasons), distance))
    suggestions.sort(key=lambda s: (-s.score, s.distance_km if s.distance_km is not None else math.inf,
                                    s.offer.service_id))
    return suggestions
