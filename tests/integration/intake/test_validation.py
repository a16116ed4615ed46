"""The screening record is strictly validated: each rule a case, each answer a 422 problem naming the field
and never echoing the value."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.integration.intake.conftest import Intake, agency, case_body, consent_body

TOMORROW = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
YESTERDAY_TS = (datetime.now(UTC) - timedelta(days=1)).isoformat()


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()

CASES: list[tuple[str, tuple[str, ...], Any]] = [
    # person
    ("missing given name", ("person", "given_name"), _DELETE),
    ("blank given name", ("person", "given_name"), "   "),
    ("control character in name", ("person", "family_name"), "Tes\x00fay"),
    ("unknown person field", ("person", "nickname"), "Ami"),
    ("birth date in the future", ("person", "birth_date"), TOMORROW),
    ("birth date not a date", ("person", "birth_date"), "02/04/1999"),
    ("birth date before 1900", ("person", "birth_date"), "1850-01-01"),
    ("age inconsistent with birth date", ("person", "estimated_age"), 60),
    ("negative age", ("person", "estimated_age"), -1),
    ("age over 120", ("person", "estimated_age"), 130),
    ("gender outside HTCDS", ("person", "gender"), "female"),
    ("citizenship not ISO 3166", ("person", "citizenship"), "XX"),
    ("citizenship lower case", ("person", "citizenship"), "er"),
    ("citizenship alpha-3", ("person", "citizenship"), "ERI"),
    ("language not a code", ("person", "languages"), ["Tigrinya"]),
    ("language repeated", ("person", "languages"), ["ti", "ti"]),
    ("phone not E.164", ("person", "phone"), "0912 000 000"),
    ("email malformed", ("person", "email"), "amina-at-example"),
    ("document kind unknown", ("person", "documents"), ["diary"]),
    # screening
    ("missing trafficking status", ("screening", "trafficking_status"), _DELETE),
    ("trafficking status unknown", ("screening", "trafficking_status"), "maybe"),
    ("identified_by unknown", ("screening", "identified_by"), "neighbour"),
    ("country of exploitation not ISO", ("screening", "country_of_exploitation"), "ZZ"),
    ("exploitation type unknown", ("screening", "exploitation_types"), ["smuggling"]),
    ("means of control unknown", ("screening", "means_of_control"), ["magic"]),
    ("recruiter relation unknown", ("screening", "recruiter_relation"), "boss"),
    ("migration status unknown", ("screening", "migration_status"), "tourist"),
    ("need not a taxonomy code", ("screening", "needs"), ["housing"]),
    ("risk level unknown", ("screening", "risk_level"), "extreme"),
    ("fear of return not boolean", ("screening", "fear_of_return"), "perhaps"),
    ("unknown screening field", ("screening", "religion"), "x"),
    # top level
    ("unknown top-level field", ("nationality",), "ER"),
    ("missing person", ("person",), _DELETE),
    # initial consent
    ("consent grantor unknown", ("initial_consent", "grantor"), "friend"),
    ("consent method unknown", ("initial_consent", "method"), "telepathy"),
    ("consent already expired", ("initial_consent", "valid_until"), YESTERDAY_TS),
    ("consent without timezone", ("initial_consent", "valid_until"), "2030-01-01T00:00:00"),
    ("consent purpose unknown", ("initial_consent", "provisions", 0, "purpose"), "marketing"),  # type: ignore[list-item]
    ("consent category unknown", ("initial_consent", "provisions", 0, "data_categories"), ["dna"]),  # type: ignore[list-item]
    ("consent decision unknown", ("initial_consent", "provisions", 0, "decision"), "maybe"),  # type: ignore[list-item]
    ("consent without provisions", ("initial_consent", "provisions"), []),
    ("consent checklist incomplete", ("initial_consent", "checklist", "withdrawal_explained"), False),
    ("consent checklist item missing", ("initial_consent", "checklist", "use_explained"), _DELETE),
    ("consent unknown field", ("initial_consent", "mood"), "ok"),
]


def _base() -> dict[str, Any]:
    body = case_body(consent=consent_body())
    body["person"]["birth_date"] = "1999-04-02"
    body["person"]["estimated_age"] = date.today().year - 1999 - 1
    return body


@pytest.mark.parametrize(("rule", "path", "value"), CASES, ids=[c[0] for c in CASES])
async def test_each_rule_is_a_422_naming_the_field(intake: Intake, rule: str, path: tuple[Any, ...],
                                                   value: Any) -> None:
    base = _base()
    body = _set(base, path, value)
    response = await intake.client.post("/cases", json=body,
                                        headers=intake.writer(agency()))
    assert response.status_code == 422, (rule, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    locs = [tuple(e["loc"]) for e in problem["errors"]]
    expected = tuple(str(p) for p in ("body", *path))
    assert any(loc[: len(expected)] == expected for loc in locs), (rule, locs)
    # The refused value, and the person's name, never come back.
    assert base["person"]["given_name"] not in response.text
    if isinstance(value, str) and len(value) > 3:
        assert value not in response.text


async def test_the_valid_base_body_is_accepted(intake: Intake) -> None:
    response = await intake.client.post("/cases", json=_base(),
                                        headers=intake.writer(agency()))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("patch", [{"status": "erased"}, {"bia_completed_at": TOMORROW}, {"fear_of_return": None},
                                   {"colour": "red"}, {"needs": ["nothing"]}])
async def test_patch_is_validated(intake: Intake, patch: dict[str, Any]) -> None:
    owner = agency()
    created = await intake.register(owner)
    response = await intake.client.patch(f"/cases/{created['id']}", json=patch,
                                         headers=intake.writer(owner))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == ["body", next(iter(patch))]


async def test_malformed_json_is_a_problem_not_a_500(intake: Intake) -> None:
    response = await intake.client.post("/cases", content=b"{not json", headers={
        **intake.writer(agency()), "content-type": "application/json"})
    assert response.status_code == 422
    over = await intake.client.post(f"/cases/{'x' * 300}/overrides", json={"recipient_agency": "a b"},
                                    headers=intake.headers(agency(), acting_user="u"))
    assert over.status_code == 422
