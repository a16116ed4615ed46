"""The rules of an agency's own indicators (domain.indicators): months and ranges, medians, rates, empty months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.referral.domain.indicators import (
    MAX_MONTHS,
    AgencyTally,
    IndicatorsQueryInvalid,
    Month,
    acceptance_rate,
    indicators_view,
    median_hours,
    month_of,
    month_range,
    parse_month,
    reason_counts,
)

NOW = datetime(2026, 5, 14, 10, tzinfo=UTC)
EMPTY = AgencyTally(created={}, moves={}, acknowledged={}, reasons={}, waits={})


def labels(months: list[Month]) -> list[str]:
    return [m.label for m in months]


def test_months_are_utc_calendar_months_across_year_ends() -> None:
    december = parse_month("from", "2025-12")
    assert december.start == datetime(2025, 12, 1, tzinfo=UTC)
    assert december.end == datetime(2026, 1, 1, tzinfo=UTC)
    assert december.plus(1).label == "2026-01" and december.plus(-12).label == "2024-12"
    assert Month(2026, 3).minus(december) == 3
    # 23:30 on 31 January at UTC-2 is already February in UTC.
    assert month_of(datetime(2026, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))).label == "2026-02"


def test_a_range_defaults_to_the_twelve_months_up_to_the_current_one() -> None:
    assert labels(month_range(None, None, NOW)) == [f"2025-{m:02d}" for m in range(6, 13)] + [
        f"2026-{m:02d}" for m in range(1, 6)]
    assert labels(month_range(None, "2026-02", NOW))[0] == "2025-03"
    assert labels(month_range("2026-04", None, NOW)) == ["2026-04", "2026-05"]
    assert labels(month_range("2026-05", "2026-05", NOW)) == ["2026-05"]  # the current month alone
    assert len(month_range("2024-06", "2026-05", NOW)) == MAX_MONTHS


@pytest.mark.parametrize(("first", "last", "parameter"), [
    ("2026-13", None, "from"), ("26-01", None, "from"), ("2026-1", None, "from"), ("2026-01\n", None, "from"),
    ("2026-Q1", None, "from"), ("0999-01", None, "from"), (None, "2026-00", "to"), (None, "may", "to"),
    (None, "2026-06", "to"),  # a month that has not begun
    (None, "9999-12", "to"),
    ("2026-03", "2026-02", "from"),  # from after to
    ("2024-05", "2026-05", "from"),  # 25 months
])
def test_a_range_that_cannot_be_answered_names_its_parameter(first: str | None, last: str | None,
                                                               parameter: str) -> None:
    with pytest.raises(IndicatorsQueryInvalid) as refused:
        month_range(first, last, NOW)
    assert refused.value.parameter == parameter
    assert str(refused.value).startswith(parameter)


def test_medians_are_to_a_tenth_of_an_hour_and_none_without_waits() -> None:
    assert median_hours([]) is None
    assert median_hours([5.0]) == 5.0
    assert median_hours([1.0, 2.0, 10.0]) == 2.0
    assert median_hours([1.0, 2.0, 3.0, 10.0]) == 2.5  # even count: the mean of the middle two
    assert median_hours([20.123, 20.16, 70.0]) == 20.2


def test_the_acceptance_rate_is_accepted_over_decided() -> None:
    assert acceptance_rate(0, 0) is None  # nothing decided: no rate, not 0
    assert acceptance_rate(3, 0) == 1.0
    assert acceptance_rate(0, 2) == 0.0
    assert acceptance_rate(2, 1) == 0.6667


def test_reason_counts_list_every_rejection_code() -> None:
    assert reason_counts({"no-capacity": 2}) == {"duplicate": 0, "no-capacity": 2, "not-eligible": 0, "other": 0,
                                                 "outside-mandate": 0}


def test_an_empty_month_has_zeros_and_no_rates_or_medians() -> None:
    view = indicators_view("agy_1", month_range("2026-04", "2026-05", NOW), EMPTY, NOW)
    assert view["agency_id"] == "agy_1" and (view["from"], view["to"]) == ("2026-04", "2026-05")
    april, may = view["months"]
    assert (april["month"], april["complete"], may["complete"]) == ("2026-04", True, False)
    assert (april["start"], april["end"]) == ("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
    assert april["sent"] == {"referrals": 0, "accepted": 0, "rejected": 0, "cancelled": 0, "completed": 0,
                             "acceptance_rate": None, "rejection_reasons": reason_counts({})}
    assert april["received"] == {"referrals": 0, "acknowledged": 0, "accepted": 0, "rejected": 0, "cancelled": 0,
                                 "completed": 0, "acceptance_rate": None, "median_hours_to_acknowledge": None,
                                 "median_hours_to_accept": None, "rejection_reasons": reason_counts({})}


def test_each_figure_lands_in_its_month_and_side() -> None:
    tally = AgencyTally(
        created={("sent", "2026-04"): 3, ("received", "2026-05"): 2},
        moves={("sent", "2026-04", "accepted"): 1, ("sent", "2026-04", "rejected"): 1,
               ("received", "2026-05", "accepted"): 2, ("received", "2026-05", "completed"): 1,
               ("received", "2026-05", "cancelled"): 1},
        acknowledged={"2026-05": 2},
        reasons={("sent", "2026-04", "no-capacity"): 1},
        waits={("acknowledge", "2026-05"): [4.0, 6.0], ("accept", "2026-05"): [30.0, 50.0, 10.0]})
    april, may = indicators_view("agy_1", month_range("2026-04", "2026-05", NOW), tally, NOW)["months"]
    assert april["sent"]["referrals"] == 3 and april["sent"]["acceptance_rate"] == 0.5
    assert april["sent"]["rejection_reasons"]["no-capacity"] == 1
    assert april["received"]["referrals"] == 0 and april["received"]["median_hours_to_accept"] is None
    received = may["received"]
    assert (received["referrals"], received["acknowledged"], received["accepted"], received["completed"],
            received["cancelled"]) == (2, 2, 2, 1, 1)
    assert received["acceptance_rate"] == 1.0
    assert (received["median_hours_to_acknowledge"], received["median_hours_to_accept"]) == (5.0, 30.0)
    assert may["sent"]["referrals"] == 0 and sum(may["sent"]["rejection_reasons"].values()) == 0
