"""De-identified statistics (docs/domain.md rule 9): periods, cells, k-anonymity suppression and the published view."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.referral.domain.vocabulary import Pathway
from shared.times import utc_text

# --- statistics ---------------------------------------------------------------------------------------------
#
# docs/domain.md rule 9. Published for closed calendar months and quarters only, every count under 11 (zero
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
    return utc_text(value)


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
