"""Edge values in the auditor API's parameters get a problem or a correct answer, never a 500 (finding 12)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.errors import PROBLEM_MEDIA_TYPE
from shared.topics import INTAKE_EVENTS
from tests.integration.audit.conftest import AuditHarness
from tests.reliability.fuzzing import edge_cases, edge_failure


async def test_the_reported_values(audit: AuditHarness) -> None:
    await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": "case-1", "agency": "iom"})
    await audit.wait_for_size(1)
    beyond = await audit.get("/audit/entries", cursor="9999999999999999999")
    assert beyond.status_code == 422 and beyond.json()["errors"][0]["loc"] == ["query", "cursor"]
    # Year 0 and year 10000 in UTC: before and after every entry, so everything is in range.
    assert len((await audit.get("/audit/entries", since="0001-01-01T00:00:00+14:00")).json()["items"]) == 1
    assert len((await audit.get("/audit/entries", until="9999-12-31T23:59:59-14:00")).json()["items"]) == 1
    # ... and the other way round nothing is.
    assert (await audit.get("/audit/entries", since="9999-12-31T23:59:59-14:00")).json()["items"] == []
    assert (await audit.get("/audit/entries", until="0001-01-01T00:00:00+14:00")).json()["items"] == []
    now = datetime.now(UTC).isoformat()
    assert len((await audit.get("/audit/entries", since="0001-01-01T00:00:00+14:00", until=now)
                ).json()["items"]) == 1


async def test_every_edge_value_in_every_parameter(audit: AuditHarness) -> None:
    document = (await audit.client.get("/openapi.json")).json()
    failures = []
    cases = edge_cases(document)
    assert len(cases) > 100
    for case in cases:
        answer = await audit.client.request(case.method, case.path, params=case.params, headers=audit.headers)
        if (failure := edge_failure(case, answer.status_code, answer.headers.get("content-type", ""))):
            failures.append(failure)
    assert not failures, "\n".join(failures)


async def test_a_time_without_its_offset_is_refused(audit: AuditHarness) -> None:
    """``since``/``until`` without an offset are not guessed to be UTC (referral refuses them too): a problem
    naming the parameter, whatever the log holds."""
    await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": "case-1", "agency": "iom"})
    await audit.wait_for_size(1)
    for name, value in (("since", "2026-01-01T00:00:00"), ("until", "2999-01-01T00:00:00.5"),
                        ("since", "2026-01-01")):
        response = await audit.get("/audit/entries", **{name: value})
        assert response.status_code == 422, (name, value, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert [err["loc"] for err in response.json()["errors"]] == [["query", name]], response.json()
    assert (await audit.get("/audit/entries", since="2026-01-01T00:00:00+02:00")).status_code == 200
