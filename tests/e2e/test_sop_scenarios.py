"""The SOP scenarios (tests/e2e/scenarios.py) against the whole stack as `make run` starts it, with the
default people; each scenario asserts as it goes (see its docstring for what it shows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.e2e import scenarios
from tests.e2e.network import Network
from tests.e2e.scenarios import ALL_SCENARIOS, Outcome, People


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=[s.__name__ for s in ALL_SCENARIOS])
async def test_scenario(network: Network, scenario: Callable[[Network, People], Awaitable[Outcome]]) -> None:
    outcome = await scenario(network, People.default())
    assert outcome.scenario == scenario.__name__ and outcome.case_ids


@pytest.mark.parametrize("people", [People.default(), People.marked("ZQXMARKER")], ids=["default", "marked"])
def test_people_fill_every_personal_field_and_marked_ones_carry_the_marker(people: People) -> None:
    for person in people.persons():
        assert all(person.texts())
        if people.marker:
            marked = [t for t in person.texts() if people.marker in t]
            assert len(marked) == len(person.texts()) - 2  # all but the birth date and the phone number
    assert set(people.needles()) >= {t for p in people.persons() for t in p.texts()}


async def test_a_read_under_an_override_is_listed_with_the_override_as_its_basis(network: Network) -> None:
    outcome = await scenarios.risk_to_life_override(network, People.default())
    clinic = network.agency("clinic")
    async with httpx.AsyncClient(timeout=30) as http:
        got = await http.get(f"{network.url('audit')}/audit/cases/{outcome.case_ids[0]}/access",
                             headers=network.headers("oversight", purpose="audit"))
    reads = [a for a in got.json()["items"] if a["agency"] == clinic and a["outcome"] == "success"]
    assert reads and all(a["consent"]["basis"] == "override" for a in reads), reads
