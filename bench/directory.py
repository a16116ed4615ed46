"""Benchmark 5: directory search over 10,000 and 100,000 services, with taxonomy and distance filters.

The services are added in bulk to the registry's own database (publishing 100,000 services one POST at a
time would measure the write path, not the search); every search goes through ``GET /services`` on the
running registry. The raw baseline is the round trip of a trivial authenticated request on the same service.
"""

from __future__ import annotations

import random

import httpx

from bench.common import Latency, Row, RssSampler, Section, Settings, closed_loop, ratio
from bench.stack import BenchStack
from shared import reference

SIZES = (10_000, 100_000)
# Where the services are: a box over the regions RefNet's agencies work in (Sahel, Mediterranean, Balkans).
LAT, LON = (5.0, 50.0), (-10.0, 40.0)
PROVIDERS = ("agy_shelter", "agy_legalaid", "agy_clinic", "agy_iom", "agy_unhcr")
PREFIXES = ("shelter", "health", "legal", "protection", "mhpss", "child_protection", "reintegration")


async def add_services(stack: BenchStack, first: int, last: int) -> None:
    """Services ``first..last`` (inclusive) of bench providers, each with one location, in two statements."""
    taxonomy = list(reference.TAXONOMY)
    conn = await stack.pg("refnet_registry")
    try:
        async with conn.transaction():
            await conn.execute(
                """
                INSERT INTO services (id, agency_id, taxonomy, names, descriptions, countries, admin_areas, languages,
                    accepts_children, eligibility, hours, contact, capacity_available, capacity_total,
                    capacity_status, status, created_at, updated_at)
                SELECT 'svc_bench_' || g, ($3::text[])[1 + g % cardinality($3::text[])],
                       ($4::text[])[1 + (g * 7) % cardinality($4::text[])],
                       jsonb_build_object('en', 'Bench service ' || g, 'fr', 'Service ' || g),
                       jsonb_build_object('en', 'A service added by the benchmark'),
                       ARRAY['IT'], ARRAY[]::text[], ARRAY['en', 'fr'], g % 3 = 0, '{}'::jsonb, NULL,
                       '{}'::jsonb, g % 6, 5, CASE WHEN g % 4 = 0 THEN 'full' ELSE 'accepting' END, 'active',
                       now(), now()
                FROM generate_series($1::int, $2::int) AS g
                """, first, last, list(PROVIDERS), taxonomy)
            await conn.execute(
                """
                INSERT INTO locations (id, service_id, position, name, address, city, country, latitude, longitude)
                SELECT 'loc_bench_' || g, 'svc_bench_' || g, 0, NULL, NULL, NULL, 'IT',
                       $3::float8 + random() * ($4::float8 - $3::float8),
                       $5::float8 + random() * ($6::float8 - $5::float8)
                FROM generate_series($1::int, $2::int) AS g
                """, first, last, *LAT, *LON)
        await conn.execute("ANALYZE services")
        await conn.execute("ANALYZE locations")
    finally:
        await conn.close()


async def search_latency(stack: BenchStack, http: httpx.AsyncClient, settings: Settings, seed: int) -> Latency:
    rng = random.Random(seed)
    url = stack.url("registry") + "/services"
    token = stack.token("iom")
    headers = {"Authorization": f"Bearer {token}"}

    async def search(_: int) -> bool:
        params = {"taxonomy": rng.choice(PREFIXES), "accepting": "true",
                  "near": f"{rng.uniform(*LAT):.3f},{rng.uniform(*LON):.3f}", "radius_km": "300"}
        response = await http.get(url, params=params, headers=headers)
        return response.status_code == 200

    return await closed_loop(search, concurrency=1, seconds=settings.seconds(10, 3), warmup=settings.seconds(1, 0.5))


async def trivial(stack: BenchStack, http: httpx.AsyncClient, settings: Settings) -> Latency:
    url = stack.url("registry") + "/taxonomy"
    headers = {"Authorization": f"Bearer {stack.token('iom')}"}

    async def get(_: int) -> bool:
        return (await http.get(url, headers=headers)).status_code == 200

    return await closed_loop(get, concurrency=1, seconds=settings.seconds(4, 1.5), warmup=0.5)


async def run(stack: BenchStack, settings: Settings, sampler: RssSampler, section: Section) -> None:
    sizes = (2_000, 20_000) if settings.quick else SIZES
    have = 0
    async with httpx.AsyncClient(timeout=30) as http:
        for size in sizes:
            await add_services(stack, have + 1, size)
            have = size
            with sampler.phase(f"directory search, {size:,} services"):
                latency = await search_latency(stack, http, settings, seed=size)
            raw = await trivial(stack, http, settings)
            section.data[str(size)] = {"search": latency.json(), "raw_trivial_request": raw.json()}
            goal = size == 100_000
            section.rows.append(Row(
                "5 directory search", f"taxonomy + distance, {size:,} services",
                f"p50 {latency.p50_ms:.1f} / p95 {latency.p95_ms:.1f} / p99 {latency.p99_ms:.1f} ms",
                f"GET /taxonomy p50 {raw.p50_ms:.1f} / p99 {raw.p99_ms:.1f} ms",
                f"p99 {ratio(latency.p99_ms, raw.p99_ms):.1f}x",
                "p99 <= 25 ms at 100,000" if goal else "", (latency.p99_ms <= 25) if goal else None,
                f"{latency.errors} errors" if latency.errors else ""))
