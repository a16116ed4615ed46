"""`make bench`: how fast RefNet is, as ratios to the raw infrastructure measured in the same run.

    python -m bench                 # everything; writes bench/results/<date>.json and docs/benchmarks.md
    python -m bench --quick         # short runs, for development (writes bench/results/<date>-quick.json only)
    python -m bench --only tokens,audit

Starts the whole stack as `make run` does (in a scratch home, on free ports), runs each benchmark against
the real services, and stops everything at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from bench import audit, directory, memory, referrals, report, retention, tokens
from bench.common import RssSampler, Section, Settings
from bench.stack import REPO, BenchStack

BENCHMARKS = ("tokens", "referrals", "delivery", "directory", "audit", "retention", "memory")
console = Console()

# The token endpoint throttles each client to 120 requests a minute (a safeguard against a misbehaving
# case system); issuance throughput is measured with the throttle lifted, and only that setting changed.
STACK_ENV = {"REFNET_REGISTRY_TOKEN_REQUESTS_PER_MINUTE": "100000000", "REFNET_REGISTRY_TOKEN_BURST": "1000000"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs and small data sets (development)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="where the JSON goes")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the Markdown report (written by full runs only)")
    parser.add_argument("--load-note", default=os.environ.get("REFNET_BENCH_LOAD_NOTE", ""),
                        help="what else ran on the machine meanwhile, for the report (it is always measured too; "
                             "default: $REFNET_BENCH_LOAD_NOTE)")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    settings = Settings(quick=args.quick)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    began = time.monotonic()
    machine = report.machine()
    load = report.LoadWatch()
    load.start()
    console.print(f"[bold]RefNet benchmarks[/bold] ({'quick' if settings.quick else 'full'}): "
                  f"{machine['cores']} cores, {machine['memory_gb']} GB")
    stack = BenchStack(extra_env=STACK_ENV)
    sections: list[Section] = []
    startup = 0.0
    try:
        t0 = time.monotonic()
        stack.start()
        startup = time.monotonic() - t0
        console.print(f"· stack up in {startup:.0f} s ({stack.home})")
        machine.update(await report.versions(stack))
        pids = stack.pids()
        sampler = RssSampler({name: pids[name] for name in ("registry", "intake", "referral", "audit",
                                                            "postgres", "broker") if name in pids})
        sampler.start()
        await asyncio.sleep(3)  # let start-up work (seed events, first checkpoints) settle
        idle = sampler.snapshot()

        async def step(name: str, run: Callable[[Section], Awaitable[None]]) -> None:
            section = Section(name)
            sections.append(section)
            console.print(f"· {name} ...")
            t = time.monotonic()
            try:
                await run(section)
            except Exception as exc:
                section.error = f"{type(exc).__name__}: {exc}"
                console.print(f"[red]  {name} failed: {section.error}[/red]")
                console.print(traceback.format_exc())
            section.seconds = time.monotonic() - t
            for row in section.rows:
                verdict = "" if row.met is None else ("[green]met[/green]" if row.met else "[red]missed[/red]")
                console.print(f"  {row.figure}: {row.refnet} | raw {row.raw} | {row.ratio} {verdict}")
            console.print(f"  ({section.seconds:.0f} s)")

        if "tokens" in only:
            await step("tokens", lambda s: tokens.run(stack, settings, s))
        if only & {"referrals", "delivery"}:
            await step("referrals", lambda s: referrals.run(stack, settings, sampler, s, only))
        if "directory" in only:
            await step("directory", lambda s: directory.run(stack, settings, sampler, s))
        if "audit" in only:
            await step("audit", lambda s: audit.run(stack, settings, sampler, s))
        if "retention" in only:
            await step("retention", lambda s: retention.run(stack, settings, s))
        audit_growth = next((s.data.get("growth") for s in sections if s.name == "audit"), None)
        await step("memory", lambda s: memory.run(stack, settings, sampler, s, idle, growth="memory" in only,
                                                   audit_growth=audit_growth))
        await sampler.stop()
    finally:
        stack.stop()
        await load.stop()
    elapsed = time.monotonic() - began
    result = report.build(machine, sections, settings, elapsed=elapsed, startup=startup, load=load.summary(),
                          load_note=args.load_note)
    path = report.write_json(result, args.results, quick=settings.quick)
    Console(width=max(console.width, 180)).print(report.rich_table(result))
    console.print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    if not settings.quick and only == set(BENCHMARKS):
        report.write_markdown(result, args.doc)
        console.print(f"report: {args.doc.relative_to(REPO) if args.doc.is_relative_to(REPO) else args.doc}")
    console.print(f"[bold]total elapsed: {elapsed / 60:.1f} min[/bold]")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
