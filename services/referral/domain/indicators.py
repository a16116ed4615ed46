"""An agency's own indicators (issue #21): per calendar month, its referrals sent and received, what became
of them, how fast it acknowledged and accepted, and the reason codes of rejections.

Not de-identified statistics (``statistics``): these are an agency's numbers about its own referrals, each of
which it may already read one by one (``GET /referrals``, with every move and reason code in its history).
No counterpart is named and no case, person or free text appears -- counts, rates, medians and reason codes
only -- so a count of 1 tells the agency nothing it cannot read already, and suppressing it would only make
its own figures wrong. No suppression, then.

Every figure counts events *in* the month (UTC): referrals created in it, moves made in it, waits ended in
it -- as the platform statistics do -- so a month's figures stop changing once it has ended, and the current
month is answered too (marked ``complete: false``).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from services.referral.domain.vocabulary import REJECT_REASONS, Status
from shared.times import utc_text

Side = Literal["sent", "received"]
SIDES: tuple[Side, ...] = ("sent", "received")
#: The moves counted on each side, by the state they reach (``rejected``: the recipient declined it).
COUNTED_MOVES: tuple[Status, ...] = (Status.accepted, Status.rejected, Status.cancelled, Status.completed)
#: The longest range one request may ask for: two years of months.
MAX_MONTHS = 24
#: The range asked for when none is: the twelve months up to the current one.
DEFAULT_MONTHS = 12

_MONTH = re.compile(r"([1-9][0-9]{3})-(0[1-9]|1[0-2])")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, UTC: ``[start, end)``."""

    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.plus(1).start

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def minus(self, other: Month) -> int:
        """How many months from ``other`` to this one."""
        return (self.year - other.year) * 12 + self.month - other.month


def month_of(moment: datetime) -> Month:
    utc = moment.astimezone(UTC)
    return Month(utc.year, utc.month)


@dataclass
class IndicatorsQueryInvalid(ValueError):
    """A month range that cannot be answered: ``parameter`` names the query parameter at fault."""

    parameter: str
    message: str

    def __str__(self) -> str:
        return self.message


def parse_month(parameter: str, value: str) -> Month:
    match = _MONTH.fullmatch(value)  # not match(): "$" would let a trailing newline through
    if match is None:
        raise IndicatorsQueryInvalid(parameter, f"{parameter} must be a calendar month, YYYY-MM (e.g. 2026-11).")
    return Month(int(match[1]), int(match[2]))


def month_range(first: str | None, last: str | None, now: datetime) -> list[Month]:
    """The months from ``first`` to ``last``, both included: ended months or the current one, at most
    ``MAX_MONTHS``. ``last`` defaults to the current month, ``first`` to ``DEFAULT_MONTHS`` months up to
    ``last``."""
    current = month_of(now)
    end = current if last is None else parse_month("to", last)
    if end > current:
        raise IndicatorsQueryInvalid("to", f"to must be the current month ({current.label}) or an earlier one.")
    start = end.plus(1 - DEFAULT_MONTHS) if first is None else parse_month("from", first)
    if start > end:
        raise IndicatorsQueryInvalid("from", "from must not be after to.")
    if end.minus(start) >= MAX_MONTHS:
        raise IndicatorsQueryInvalid("from", f"from and to may span {MAX_MONTHS} months at most.")
    return [start.plus(n) for n in range(end.minus(start) + 1)]


@dataclass(frozen=True)
class AgencyTally:
    """What the store counted for one agency over the months asked for (month labels as keys).

    ``created``: (side, month) -> referrals created. ``moves``: (side, month, state reached) -> moves made.
    ``acknowledged``: month -> acknowledgements it made. ``reasons``: (side, month, reason code) ->
    rejections. ``waits``: ("acknowledge" | "accept", month) -> hours from sending to each acknowledgement or
    acceptance of a referral it received, made in the month.
    """

    created: Mapping[tuple[Side, str], int]
    moves: Mapping[tuple[Side, str, str], int]
    acknowledged: Mapping[str, int]
    reasons: Mapping[tuple[Side, str, str], int]
    waits: Mapping[tuple[str, str], Sequence[float]]


def median_hours(waits: Iterable[float]) -> float | None:
    """The median wait, to a tenth of an hour; None when there is none (a month without, not a zero wait)."""
    values = list(waits)
    return round(statistics.median(values), 1) if values else None


def acceptance_rate(accepted: int, rejected: int) -> float | None:
    """Accepted / decided, to 4 places; None when nothing was decided. A referral accepted counts as accepted
    whatever came of it later (in progress, completed, failed, cancelled): it was accepted."""
    decided = accepted + rejected
    return round(accepted / decided, 4) if decided else None


def reason_counts(observed: Mapping[str, int]) -> dict[str, int]:
    """Every rejection reason code, zero or not (a stable shape to chart), and any other one observed."""
    return {code: observed.get(code, 0) for code in sorted(REJECT_REASONS | set(observed))}


def indicators_view(agency: str, months: Sequence[Month], tally: AgencyTally, now: datetime) -> dict[str, object]:
    """The answer: one entry per month asked for, oldest first, empty months with zeros."""
    rows = []
    for month in months:
        label = month.label
        sides: dict[str, dict[str, object]] = {}
        for side in SIDES:
            moves = {str(s): tally.moves.get((side, label, str(s)), 0) for s in COUNTED_MOVES}
            reasons = {code: n for (s, m, code), n in tally.reasons.items() if s == side and m == label}
            figures: dict[str, object] = {"referrals": tally.created.get((side, label), 0)}
            if side == "received":
                figures["acknowledged"] = tally.acknowledged.get(label, 0)
            figures |= moves
            figures["acceptance_rate"] = acceptance_rate(moves["accepted"], moves["rejected"])
            if side == "received":
                figures["median_hours_to_acknowledge"] = median_hours(tally.waits.get(("acknowledge", label), ()))
                figures["median_hours_to_accept"] = median_hours(tally.waits.get(("accept", label), ()))
            figures["rejection_reasons"] = reason_counts(reasons)
            sides[side] = figures
        rows.append({"month": label, "start": utc_text(month.start), "end": utc_text(month.end),
                     "complete": month.end <= now, **sides})
    return {"agency_id": agency, "from": months[0].label, "to": months[-1].label, "months": rows}
