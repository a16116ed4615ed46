"""docs/domain.md rule 9 alone: fixed closed periods, every count under 11 suppressed, and nothing suppressed that
an attacker holding every month and quarter could work out (tests/support/disclosure.py audits that)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from services.referral import domain
from services.referral.domain import (
    SUPPRESSED,
    MonthCounts,
    Pathway,
    PeriodInvalid,
    cells_of,
    check_closed,
    parse_period,
    protect_quarter,
    statistics_view,
    suppress,
)
from tests.support.disclosure import audit, figures

AGENCIES = ("agy-a", "agy-b", "agy-c", "agy-d")
QUARTER = ("2025-10", "2025-11", "2025-12")


# --- periods ------------------------------------------------------------------------------------------------


def test_a_month_and_a_quarter_are_fixed_utc_calendar_periods() -> None:
    month = parse_period("2026-11")
    assert (month.start, month.end, month.months) == (
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), ("2026-11",))
    quarter = parse_period("2026-Q4")
    assert (quarter.start, quarter.end, quarter.months) == (
        datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), ("2026-10", "2026-11", "2026-12"))
    assert parse_period("2026-Q1").months == ("2026-01", "2026-02", "2026-03")


@pytest.mark.parametrize("label", ["2026-13", "2026-00", "2026-Q0", "2026-Q5", "2026-q3", "2026-1", "26-11",
                                   "2026-11-01", "0000-01", "2026", "", "2026-11 ", "2026-11\n", "2026-11T00:00:00Z",
                                   "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                   "\u0662\u0660\u0662\u0666-\u0661\u0661"])  # Arabic-Indic digits
def test_anything_but_a_month_or_a_quarter_is_refused(label: str) -> None:
    with pytest.raises(PeriodInvalid):
        parse_period(label)


def test_only_periods_that_ended_a_day_ago_are_published() -> None:
    november = parse_period("2026-11")
    with pytest.raises(PeriodInvalid, match="has not ended"):
        check_closed(november, datetime(2026, 11, 15, tzinfo=UTC))
    with pytest.raises(PeriodInvalid, match="2026-12-02T00:00:00Z"):
        check_closed(november, datetime(2026, 12, 1, 23, 59, tzinfo=UTC))
    check_closed(november, datetime(2026, 12, 2, tzinfo=UTC))
    for label in ("9999-12", "9999-Q4"):  # would end in year 10000
        with pytest.raises(PeriodInvalid, match="has not ended"):
            check_closed(parse_period(label), datetime(2026, 12, 2, tzinfo=UTC))


# --- suppression --------------------------------------------------------------------------------------------


def test_a_small_cell_takes_the_smallest_other_part_of_its_total_with_it() -> None:
    cells = {("t",): 60, ("a",): 5, ("b",): 12, ("c",): 43, ("d",): 0}
    hidden = suppress(cells, [domain.Sum(("t",), (("a",), ("b",), ("c",), ("d",)))])
    assert hidden == {("a",), ("b",), ("d",)}  # 60 - 12 - 43 would give a away; the zero is a count too


def test_small_cells_adding_up_to_eleven_protect_each_other() -> None:
    cells = {("t",): 40, ("a",): 6, ("b",): 5, ("c",): 29}
    assert suppress(cells, [domain.Sum(("t",), (("a",), ("b",), ("c",)))]) == {("a",), ("b",)}


def test_a_small_total_hides_everything_under_it() -> None:
    cells = {("t",): 9, ("a",): 9, ("b",): 0}
    assert suppress(cells, [domain.Sum(("t",), (("a",), ("b",)))]) == {("t",), ("a",), ("b",)}


def random_month(rng: random.Random, size: int) -> MonthCounts:
    created: dict[tuple[str, str, str, bool], int] = {}
    pathways = [str(Pathway.service), str(Pathway.protection), str(Pathway.avrr)]
    for _ in range(rng.randint(0, size)):
        key = (rng.choice(pathways), rng.choice(AGENCIES), rng.choice(AGENCIES), rng.random() < 0.9)
        created[key] = created.get(key, 0) + 1
    return MonthCounts(
        created=created,
        decided={(p, flag): rng.randint(0, 16) for p in pathways[:2] for flag in (True, False)},
        acknowledged={(p, flag): rng.randint(0, 24) for p in pathways[:2] for flag in (True, False)},
        overdue={pathways[0]: rng.randint(0, 14)},
    )


def publish(months: list[MonthCounts]) -> tuple[list[dict[str, Any]], dict[tuple[str, ...], int]]:
    """Every document an oversight agency may ask for over one quarter, and the true values behind them."""
    documents, protected, truth = [], [], {}
    for label, counts in zip(QUARTER, months, strict=True):
        cells, sums = cells_of(counts, AGENCIES)
        hidden = suppress(cells, sums)
        protected.append((cells, hidden))
        documents.append(statistics_view(parse_period(label), cells, hidden, {}))
        truth |= figures(statistics_view(parse_period(label), cells, set(), {}))
    values, hidden = protect_quarter(protected)
    documents.append(statistics_view(parse_period("2025-Q4"), values, hidden, {}))
    truth |= figures(statistics_view(parse_period("2025-Q4"), values, set(), {}))
    return documents, truth


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_suppressed_cell_can_be_worked_out_from_every_month_and_the_quarter(seed: int) -> None:
    rng = random.Random(seed)
    documents, truth = publish([random_month(rng, size) for size in (70, 25, 45)])
    published = {cell: value for d in documents for cell, value in figures(d).items()}
    assert all(value == SUPPRESSED or (value == truth[cell] and value >= 11) for cell, value in published.items())
    findings = audit(documents)
    assert any(truth[f.cell] < 11 for f in findings)  # there was something to protect
    assert [f.cell for f in findings if f.recovered] == []


def test_the_audit_catches_what_suppression_without_complements_would_give_away() -> None:
    """The audit's own check: primary suppression only, or a quarter protected on its own, is caught --
    a total minus its published cells, and a quarter minus its months."""
    rng = random.Random(7)
    months = [random_month(rng, size) for size in (70, 25, 45)]
    primary_only = []
    for label, counts in zip(QUARTER, months, strict=True):
        cells, _ = cells_of(counts, AGENCIES)
        primary_only.append(statistics_view(parse_period(label), cells, {c for c, n in cells.items() if n < 11}, {}))
    assert any(f.recovered for f in audit(primary_only))

    protected = [(cells, suppress(cells, sums)) for cells, sums in (cells_of(c, AGENCIES) for c in months)]
    documents = [statistics_view(parse_period(label), cells, hidden, {})
                 for label, (cells, hidden) in zip(QUARTER, protected, strict=True)]
    values, _ = protect_quarter(protected)
    _, sums = cells_of(months[0], AGENCIES)
    on_its_own = statistics_view(parse_period("2025-Q4"), values, suppress(values, sums), {})
    assert any(f.recovered for f in audit([*documents, on_its_own]))


def test_rates_and_medians_only_over_published_counts() -> None:
    counts = MonthCounts(created={}, decided={("service", True): 30, ("service", False): 12,
                                              ("protection", True): 14, ("protection", False): 3},
                         acknowledged={("service", True): 20, ("service", False): 2}, overdue={})
    cells, sums = cells_of(counts, AGENCIES)
    view = statistics_view(parse_period("2025-10"), cells, suppress(cells, sums),
                           {("service", "accept"): 30.4, ("service", "acknowledge"): 2.6,
                            ("protection", "accept"): 12.0})
    service, protection = view["by_pathway"]["service"], view["by_pathway"]["protection"]  # type: ignore[index]
    assert (service["accepted"], service["decisions"], service["acceptance_rate"]) == (30, 42, 0.7143)
    assert service["median_hours_to_accept"] == 30.0  # to the hour
    # 20 on time of 22: the 2 late would show, so the pair goes, and the share and median with them.
    assert service["acknowledged"] == 22 and service["acknowledged_within_deadline"] == SUPPRESSED
    assert service["share_acknowledged_within_deadline"] == SUPPRESSED
    assert service["median_hours_to_acknowledge"] == 3.0
    assert protection["accepted"] == SUPPRESSED and protection["acceptance_rate"] == SUPPRESSED
    assert protection["median_hours_to_accept"] == SUPPRESSED
    assert view["referrals"]["by_sending_agency"] == dict.fromkeys(AGENCIES, SUPPRESSED)  # type: ignore[index]
