"""What every benchmark shares: latency summaries, load generators, RSS sampling, the row of a result table.

Every figure is reported beside a raw baseline measured in the same run on the same machine, so a ratio
survives a noisy or slower machine where an absolute number would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil


@dataclass(frozen=True)
class Settings:
    """How long to run: ``quick`` for a development check, the default for the published figures."""

    quick: bool = False

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# --- latency summaries --------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of an already sorted sequence."""
    if not ordered:
        return math.nan
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """Latencies in milliseconds and the throughput of the run that produced them."""

    count: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int = 0

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.nan

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "per_second": round(self.per_second, 1)}

    @classmethod
    def of(cls, samples_s: Sequence[float], seconds: float, errors: int = 0) -> Latency:
        ordered = sorted(samples_s)
        ms = [s * 1000.0 for s in ordered]
        return cls(
            count=len(ms), seconds=seconds, p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95),
            p99_ms=percentile(ms, 99), max_ms=ms[-1] if ms else math.nan,
            mean_ms=sum(ms) / len(ms) if ms else math.nan, errors=errors,
        )

    def brief(self) -> str:
        return (f"{self.per_second:,.0f}/s; p50 {self.p50_ms:.2f} / p95 {self.p95_ms:.2f} / "
                f"p99 {self.p99_ms:.2f} ms")


# --- load generators ----------------------------------------------------------------------------------------

Operation = Callable[[int], Awaitable[bool]]
"""One request of worker ``n``: True if it succeeded. Its latency is measured around the call."""


async def closed_loop(operation: Operation, *, concurrency: int, seconds: float, warmup: float) -> Latency:
    """``concurrency`` workers, each issuing its next request as soon as the last one answered.

    Requests that start during ``warmup`` are run but not counted; the measured window is ``seconds`` long.
    """
    samples: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            ok = await operation(n)
            ended = time.perf_counter()
            if began >= measure_from:
                if ok:
                    samples.append(ended - began)
                else:
                    errors += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    # Requests started inside the window may end after it; count the window they started in.
    return Latency.of(samples, seconds, errors)


async def open_loop(operation: Callable[[int], Awaitable[float | None]], *, rate: float, seconds: float,
                    max_in_flight: int = 256, drain_seconds: float = 30.0) -> tuple[int, int, int, float]:
    """Start ``rate`` requests per second on a fixed schedule, whatever the answers take (no coordinated
    omission): request ``i`` starts at ``i / rate``. A request due while ``max_in_flight`` are still waiting
    is shed (counted, not sent), so an overloaded system shows as shed load, not as a run that never ends.

    Returns (started, shed, failed, elapsed seconds); ``operation`` answers None for a failure.
    """
    total = int(rate * seconds)
    in_flight = 0
    shed = failed = 0
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal failed, in_flight
        try:
            if await operation(i) is None:
                failed += 1
        finally:
            in_flight -= 1

    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            shed += 1
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(one(i)))
    _, late = await asyncio.wait(tasks, timeout=drain_seconds) if tasks else (set(), set())
    for task in late:
        task.cancel()
    failed += len(late)
    return len(tasks), shed, failed, time.perf_counter() - start


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of a synchronous function, best of three runs of ``repeat`` calls."""
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - began) / repeat)
    return best


# --- memory -------------------------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each named process has used so far. For PostgreSQL that is the postmaster,
    its live backends, and the backends that have ended (the postmaster reaped them: its children's times)."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            total = float(times.user + times.system)
            if name == "postgres":
                total += float(times.children_user + times.children_system)
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child_times = child.cpu_times()
                        total += float(child_times.user + child_times.system)
            used[name] = total
        except psutil.Error:
            used[name] = math.nan
    return used


def rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return math.nan


@dataclass
class RssSampler:
    """Polls the RSS of named processes in the background and keeps the peak of each, per phase."""

    pids: dict[str, int]
    interval: float = 0.2
    peaks: dict[str, dict[str, float]] = field(default_factory=dict)
    _phase: str | None = None
    _task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, float]:
        return {name: round(rss_mb(pid), 1) for name, pid in self.pids.items()}

    async def _run(self) -> None:
        while True:
            if self._phase is not None:
                peaks = self.peaks.setdefault(self._phase, {})
                for name, value in self.snapshot().items():
                    if not math.isnan(value):
                        peaks[name] = max(peaks.get(name, 0.0), value)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous, self._phase = self._phase, name
        self.peaks.setdefault(name, {}).update(self.snapshot())
        try:
            yield
        finally:
            self._phase = previous


# --- results ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: a RefNet figure beside its raw baseline, and the goal it is held to."""

    benchmark: str
    figure: str
    refnet: str
    raw: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None  # None: no goal for this line
    note: str = ""


@dataclass
class Section:
    """A benchmark's outcome: table rows plus every number measured, for the JSON file."""

    name: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.nan


def cpu_count() -> int:
    return os.cpu_count() or 1
