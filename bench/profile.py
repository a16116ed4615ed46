"""Where a service spends its time under one benchmark's load: py-spy on the running service process.

    python -m bench.profile tokens      # registry under POST /oauth/token
    python -m bench.profile referrals   # referral (and --service intake) under POST /referrals
    python -m bench.profile search      # registry under directory searches over 100,000 services
    python -m bench.profile verify      # audit under GET /audit/verify of a 200,000-entry log

Prints the frames with the most samples, by own time and by inclusive time, and keeps the raw collapsed
stacks (py-spy's ``--format raw``, loadable in speedscope) under bench/results/profiles/.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import time
from pathlib import Path

import httpx

from bench import audit, directory, referrals
from bench.__main__ import STACK_ENV
from bench.common import Settings
from bench.stack import REPO, BenchStack
from shared.client_auth import ASSERTION_TYPE, client_assertion

SCENARIOS = {"tokens": "registry", "referrals": "referral", "search": "registry", "verify": "audit"}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy (the bench extra: make venv has it)")
    return found


def summarize(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def load(scenario: str, stack: BenchStack, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60) as http:
        if scenario == "tokens":
            c = stack.credentials("iom")
            while time.monotonic() < deadline:
                forms = [{"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                          "client_assertion": client_assertion(c["client_id"], c["token_url"], c["private_key_pem"])}
                         for _ in range(8)]
                await asyncio.gather(*(http.post(c["token_url"], data=f) for f in forms))
        elif scenario == "referrals":
            referrer = referrals.Referrer(stack, http, await referrals.make_cases(stack, http, 32))
            await referrals.wait_until_referrable(referrer)
            while time.monotonic() < deadline:
                await asyncio.gather(*(referrer.create(n) for n in range(32)))
        elif scenario == "search":
            while time.monotonic() < deadline:
                await directory.search_latency(stack, http, Settings(quick=True), seed=int(time.monotonic()))
        elif scenario == "verify":
            while time.monotonic() < deadline:
                await audit.verify_over_http(stack, http)


async def prepare(scenario: str, stack: BenchStack) -> None:
    if scenario == "search":
        await directory.add_services(stack, 1, 100_000)
    elif scenario == "verify":
        await audit.BenchLog(stack.pg_dsn("refnet_audit")).grow_to(200_000)


async def main(args: argparse.Namespace) -> None:
    services = (args.service or SCENARIOS[args.scenario]).split(",")
    stack = BenchStack(extra_env=STACK_ENV)
    out_dir = REPO / "bench" / "results" / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    raws = {service: out_dir / f"{args.scenario}-{service}.txt" for service in services}
    try:
        stack.start()
        await prepare(args.scenario, stack)
        spies = [await asyncio.create_subprocess_exec(
            py_spy(), "record", "--pid", str(stack.pids()[service]), "--duration", str(int(args.seconds)), "--rate",
            "250", "--format", "raw", "--output", str(raw), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL) for service, raw in raws.items()]
        await load(args.scenario, stack, args.seconds + 2)
        for spy in spies:
            await asyncio.wait_for(spy.wait(), 60)
    finally:
        stack.stop()
    for service, raw in raws.items():
        print(f"== {service}: " + summarize(raw, args.top))
        print(f"\ncollapsed stacks: {raw.relative_to(REPO)}\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--service", help="which service(s) to sample, comma-separated: registry, intake, referral, "
                        "audit (default: the scenario's own)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
