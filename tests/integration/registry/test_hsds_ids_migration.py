"""registry_0008 gives the agencies and services already in the directory their HSDS ids (more than one batch
of them), and the HSDS routes find those services by them afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from alembic import command
from sqlalchemy import text

from services.registry.hsds_ids import hsds_id
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.migrations import alembic_config, upgrade
from tests.integration.registry.conftest import make_settings, serve

SERVICES = 1205  # more than one batch of the backfill (1000)


async def _insert_directory(url: str) -> None:
    """An agency and its services, written as the previous release's schema has them (no hsds_id)."""
    engine = make_engine(url, pool_size=1)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            await session.execute(text(
                "INSERT INTO agencies (id, client_id, name, kind, country, status, scopes) "
                "VALUES ('agy_before', 'cli_before', 'Agency from before', 'ngo', 'IT', 'active', ARRAY['x'])"))
            await session.execute(text(
                "INSERT INTO services (id, agency_id, taxonomy, names, descriptions, countries, admin_areas, "
                "languages, accepts_children, eligibility, contact, capacity_available, capacity_total, "
                "capacity_status, status) "
                "SELECT 'svc_before_' || g, 'agy_before', 'shelter', '{\"en\": \"Shelter\"}', '{}', ARRAY['IT'], "
                "ARRAY[]::text[], ARRAY['en'], false, '{}', '{}', 1, 2, 'accepting', 'active' "
                "FROM generate_series(1, :n) AS g"), {"n": SERVICES})
    finally:
        await engine.dispose()


async def _hsds_ids(url: str, table: str) -> dict[str, str | None]:
    engine = make_engine(url, pool_size=1)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            rows = await session.execute(text(f"SELECT id, hsds_id FROM {table}"))  # noqa: S608 -- a literal
            return {row.id: str(row.hsds_id) if row.hsds_id else None for row in rows}
    finally:
        await engine.dispose()


async def test_the_migration_backfills_hsds_ids_that_the_hsds_routes_then_find(
    new_database: Callable[[str], str],
) -> None:
    url = new_database("registry_0008")
    await asyncio.to_thread(upgrade, "registry", url, "registry_0007")
    await _insert_directory(url)
    await asyncio.to_thread(upgrade, "registry", url)

    services = await _hsds_ids(url, "services")
    assert len(services) == SERVICES
    assert services == {sid: str(hsds_id("service", sid)) for sid in services}
    assert (await _hsds_ids(url, "agencies")) == {"agy_before": str(hsds_id("organization", "agy_before"))}

    async for registry in serve(make_settings(url)):
        reader = {"Authorization": f"Bearer {await registry.token(await registry.agency(['registry:read']))}"}
        found = await registry.http.get(f"/hsds/services/{services['svc_before_1001']}", headers=reader)
        assert found.status_code == 200, found.text
        assert found.json()["id"] == services["svc_before_1001"]
        page = await registry.http.get("/hsds/services", headers=reader, params={
            "organization_id": str(hsds_id("organization", "agy_before")), "per_page": 1})
        assert page.status_code == 200 and page.json()["total_items"] == SERVICES
        # The agency added now (the fixture's) has its HSDS id from the insert.
        added = {agency: value for agency, value in (await _hsds_ids(url, "agencies")).items()
                 if agency != "agy_before"}
        assert added and all(value == str(hsds_id("organization", agency)) for agency, value in added.items())

    # The downgrade takes the columns away; upgrading again fills them again.
    await asyncio.to_thread(command.downgrade, alembic_config("registry", url), "registry_0007")
    await asyncio.to_thread(upgrade, "registry", url)
    assert (await _hsds_ids(url, "services"))["svc_before_7"] == str(hsds_id("service", "svc_before_7"))
