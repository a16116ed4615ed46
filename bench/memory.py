"""Benchmark 6: each service's resident memory idle, under load, and as the data grows 10k -> 100k -> 1M.

Growth steps add intake cases in bulk to intake's own database (sealed personal data as opaque bytes of the
usual size, no data key: such a case reads as one whose personal data is gone), then exercise intake, referral
and registry on the grown data through their APIs. The audit log's growth steps are benchmark 3's (its
service is measured after verifying each size). The goal is <= 200 MB per service, and growth that is flat
or logarithmic in the data, not linear.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import httpx

from bench.common import Row, RssSampler, Section, Settings
from bench.stack import BenchStack

SERVICES = ("registry", "intake", "referral", "audit")
GROWTH = (10_000, 100_000, 1_000_000)
LIMIT_MB = 200.0


async def add_cases(stack: BenchStack, first: int, last: int) -> None:
    conn = await stack.pg("refnet_intake")
    try:
        await conn.execute(
            """
            INSERT INTO cases (id, owner_agency, status, is_minor, age_band, gender, citizenship, trafficking_status,
                facts, bia_completed_at, bid_completed_at, sealed, created_by_client, created_at, updated_at)
            SELECT 'case_bulk' || lpad(g::text, 7, '0'), 'agy_iom', 'active', false, '27-29',
                   CASE WHEN g % 2 = 0 THEN 'feminine' ELSE 'masculine' END, 'ER',
                   CASE WHEN g % 3 = 0 THEN 'confirmed' ELSE 'possible' END,
                   jsonb_build_object('fear_of_return', g % 2 = 0,
                       'needs', jsonb_build_array(CASE WHEN g % 5 = 0 THEN 'shelter' ELSE 'protection.rsd' END),
                       'trafficking_status', 'possible'),
                   NULL, NULL, convert_to(repeat(md5(g::text), 10), 'UTF8'), 'cli_iom', now(), now()
            FROM generate_series($1::int, $2::int) AS g
            """, first, last)
        await conn.execute("ANALYZE cases")
    finally:
        await conn.close()


async def exercise(stack: BenchStack, http: httpx.AsyncClient, cases: int, pages: int) -> None:
    """What users do on the grown data: page through case lists, read cases, list referrals, search."""
    rng = random.Random(cases)
    iom = stack.headers("iom")
    cursor: str | None = None
    for _ in range(pages):
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = await http.get(stack.url("intake") + "/cases", params=params, headers=iom)
        page.raise_for_status()
        cursor = page.json().get("next_cursor")
        if cursor is None:
            break
    filtered = await http.get(stack.url("intake") + "/cases", params={"limit": 500, "needs": "shelter"},
                              headers=iom)
    filtered.raise_for_status()
    sem = asyncio.Semaphore(8)

    async def read(n: int) -> None:
        async with sem:
            response = await http.get(f"{stack.url('intake')}/cases/case_bulk{n:07d}", headers=iom)
            response.raise_for_status()

    await asyncio.gather(*(read(rng.randint(1, cases)) for _ in range(300)))
    for _ in range(5):
        (await http.get(stack.url("referral") + "/referrals", params={"limit": 500}, headers=iom)).raise_for_status()
        (await http.get(stack.url("registry") + "/services", headers=iom,
                        params={"taxonomy": "shelter", "near": "41.9,12.5", "radius_km": "500"})).raise_for_status()


def _flat(values: list[float]) -> bool:
    """Flat or logarithmic: 100x the data costs at most a quarter more memory (plus 10 MB of noise)."""
    first, last = values[0], values[-1]
    return last <= first * 1.25 + 10


async def run(stack: BenchStack, settings: Settings, sampler: RssSampler, section: Section,
              idle: dict[str, float], *, growth: bool, audit_growth: dict[str, Any] | None = None) -> None:
    steps: dict[str, dict[str, float]] = {}
    if growth:
        sizes = (2_000, 10_000, 50_000) if settings.quick else GROWTH
        have = 0
        async with httpx.AsyncClient(timeout=120) as http:
            for size in sizes:
                await add_cases(stack, have + 1, size)
                have = size
                with sampler.phase(f"exercise on {size:,} intake cases"):
                    await exercise(stack, http, size, pages=20)
                after = sampler.snapshot()
                peak = sampler.peaks[f"exercise on {size:,} intake cases"]
                steps[f"{size:,} intake cases"] = {s: max(after[s], peak.get(s, 0.0)) for s in SERVICES}
    rss: dict[str, dict[str, float]] = {"idle after start-up": {s: idle[s] for s in SERVICES if s in idle}}
    for phase, peaks in sampler.peaks.items():  # every load of the run, the growth steps above included
        rss[f"peak: {phase}"] = {s: peaks[s] for s in SERVICES if s in peaks}
    section.data["rss_mb"] = rss
    section.data["growth_steps"] = steps

    for service in SERVICES:
        idle_mb = idle.get(service, math.nan)
        peak_mb = max((values.get(service, 0.0) for values in rss.values()), default=math.nan)
        section.rows.append(Row(
            "6 memory", f"{service}: RSS idle / peak over the whole run", f"{idle_mb:.0f} MB / {peak_mb:.0f} MB",
            goal="<= 200 MB each", met=peak_mb <= LIMIT_MB))
    if steps:
        labels = list(steps)
        for service in ("intake", "referral", "registry"):
            values = [steps[label][service] for label in labels]
            section.rows.append(Row(
                "6 memory", f"{service}: RSS as intake cases grow {' -> '.join(label.split()[0] for label in labels)}",
                " -> ".join(f"{v:.0f}" for v in values) + " MB", goal="flat or logarithmic", met=_flat(values)))
    if audit_growth:
        sizes_seen = list(audit_growth)
        values = [audit_growth[s]["rss_mb_peak"]["audit"] for s in sizes_seen]
        section.rows.append(Row(
            "6 memory", f"audit: peak RSS while verifying {' -> '.join(f'{int(s):,}' for s in sizes_seen)} entries",
            " -> ".join(f"{v:.0f}" for v in values) + " MB", goal="flat or logarithmic", met=_flat(values)))
