"""The benchmark's own arithmetic (bench/): percentiles, latency summaries, the open-loop generator, the report."""

from __future__ import annotations

import asyncio

from bench.common import Latency, Row, Section, Settings, open_loop, percentile
from bench.report import build, markdown_table


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_latency_summary_in_milliseconds() -> None:
    latency = Latency.of([0.001, 0.002, 0.003], seconds=1.5)
    assert (latency.count, latency.p50_ms, latency.max_ms) == (3, 2.0, 3.0)
    assert latency.per_second == 2.0


async def test_open_loop_keeps_its_schedule_and_sheds_what_it_cannot_start() -> None:
    async def slow(_: int) -> float:
        await asyncio.sleep(0.5)
        return 0.0

    started, shed, failed, elapsed = await open_loop(slow, rate=100, seconds=0.2, max_in_flight=5)
    assert (started, shed, failed) == (5, 15, 0)
    assert elapsed < 1.5


def test_report_table_says_met_and_missed() -> None:
    section = Section("x", rows=[Row("1 a", "fig", "10/s", "20/s", "50%", "goal", False),
                                 Row("1 a", "fig2", "1", met=True)])
    load = {"other_processes_mean_cores": 0.0}
    table = markdown_table(build({"cores": 2}, [section], Settings(), elapsed=1, startup=1, load=load,
                                 load_note=""))
    assert "**missed**" in table and "| met |" in table
