"""HSDS ``modified_after`` at the edges of time: a moment whose UTC form Python cannot hold is the caller's
mistake (422 naming the parameter), never a 500 or a crashed worker."""

from __future__ import annotations

import pytest

from tests.integration.registry.conftest import Client, Registry


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_time_outside_utcs_years_is_a_422_naming_modified_after(registry: Registry, moment: str) -> None:
    reader: Client = await registry.agency(["registry:read"])
    response = await registry.http.get("/hsds/services", params={"modified_after": moment},
                                       headers=await registry.headers(reader))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in response.json()["errors"]] == [["query", "modified_after"]]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                                    "0001-01-01T00:00:00-14:00", "2026-03-14T00:00:00+01:00"])
async def test_a_time_utc_can_hold_is_answered(registry: Registry, moment: str) -> None:
    reader: Client = await registry.agency(["registry:read"])
    response = await registry.http.get("/hsds/services", params={"modified_after": moment},
                                       headers=await registry.headers(reader))
    assert response.status_code == 200, response.text
