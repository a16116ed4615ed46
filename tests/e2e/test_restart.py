"""Stopping the stack loses nothing: Ctrl-C and `make run` again, as a newcomer does, with events in flight.

The embedded broker forgets everything when it stops. What it had acknowledged but nobody had read yet -- the
registry's agencies, a referral intake had not heard of, an access record audit had not logged, a revoked
token -- comes back because each service's outbox publishes its retained events again at the next start
(shared/outbox.py), and each service is ready only once its read models have caught up (shared/app.py).
One stack home, two lives: events in flight at the first Ctrl-C; then everything back, `refnet demo`, and a fresh
referral replica with an empty database beside it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.launcher.infra import POSTGRES_BIN_PATH, free_port
from shared.client_auth import ASSERTION_TYPE, client_assertion
from tests.e2e.network import REPO, Network, eventually, running_stack
from tests.e2e.test_demo_and_case_system import referral_id, refnet_demo
from tests.reliability import flows
from tests.reliability.stack import register_agency, request_token

PROBES = {"registry": "/taxonomy", "intake": "/cases", "referral": "/referrals", "audit": "/audit/checkpoint"}
PROBE_SCOPES = ["registry:read", "cases:read", "referrals:read", "audit:read"]

pytestmark = pytest.mark.slow


def probe_all(net: Network, token: str) -> dict[str, int]:
    return {service: httpx.get(net.url(service) + path, headers={"Authorization": f"Bearer {token}"},
                               timeout=30).status_code for service, path in PROBES.items()}


class Referrer:
    """IOM's case system making referrals to UNHCR from several clients at once, until told to stop (or the
    stack goes away under it): what it was told it made is in ``made``."""

    def __init__(self, net: Network, clients: int = 6) -> None:
        self.net = net
        self.clients = clients
        self.made: list[tuple[str, str]] = []  # (case id, referral id)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        net.token("iom")  # got now: the clients must not block on it

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            async def client() -> None:
                while not self.stop.is_set():
                    try:
                        case = await flows.register_case(http, self.net, "iom", "unhcr")
                        referral = await flows.refer(http, self.net, "iom", case["id"], "unhcr")
                    except (httpx.HTTPError, AssertionError):
                        return  # the stack is stopping: what was answered is what counts
                    self.made.append((case["id"], referral["id"]))

            await asyncio.gather(*(client() for _ in range(self.clients)))


def test_nothing_is_lost_across_restarts_with_events_in_flight(tmp_path: Path) -> None:
    home = tmp_path / ".refnet"
    # --- first life: a revoked token, and referrals still being made when Ctrl-C comes ---------------------------
    with running_stack(home) as net:
        # Every life on the same ports, as `make run` again would be: the issuer (the registry's URL) stays the
        # same, so a token of the first life is refused later because it was revoked, not for its issuer.
        same_place = {k: v for k, v in net.env.items() if k.startswith("REFNET_") and k.endswith("_PORT")}
        probe = register_agency(net, f"Probe NGO {uuid.uuid4().hex[:6]}", PROBE_SCOPES)
        answer = request_token(net, probe.client_id, probe.private_pem, PROBE_SCOPES)
        assert answer.status_code == 200, answer.text
        revoked = str(answer.json()["access_token"])
        token_url = net.url("registry") + "/oauth/token"
        revoke = httpx.post(net.url("registry") + "/oauth/revoke", timeout=30, data={
            "token": revoked, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(probe.client_id, token_url, probe.private_pem)})
        assert revoke.status_code == 200, revoke.text
        assert set(asyncio.run(eventually(_probe(net, revoked), lambda a: set(a.values()) == {401},
                                          seconds=30)).values()) == {401}

        referrer = Referrer(net)
        referrer.thread.start()
        deadline = time.monotonic() + 120
        while len(referrer.made) < 24:
            assert time.monotonic() < deadline and referrer.thread.is_alive(), "referrals are not being made"
            time.sleep(0.2)
        # leaving the block is Ctrl-C to the launcher, with the clients still at work
    referrer.stop.set()
    referrer.thread.join(30)
    made = list(referrer.made)

    # --- second life: everything made is known, readable and audited; the revoked token stays refused -------------
    with running_stack(home, extra_env=same_place) as net:
        # The broker came back empty, and each service published again what it had said.
        def republished() -> dict[str, Any]:
            outboxes = {s: httpx.get(net.url(s) + "/readyz", timeout=30).json()["outbox"] for s in PROBES}
            return {s: o for s, o in outboxes.items()  # audit says nothing on the broker
                    if o["retained"] and o["last_republish"] is not None and o["unpublished"] == 0}

        async def look() -> dict[str, Any]:
            return republished()

        # /readyz counts the outbox at most every few seconds: the first count may predate the republish.
        said = asyncio.run(eventually(look, lambda found: set(found) == {"registry", "intake", "referral"},
                                      seconds=20))
        assert set(said) == {"registry", "intake", "referral"}, said
        # Ready means ready: from the moment `make run` says so, the revocation holds everywhere.
        assert _refusals(net, revoked) == dict.fromkeys(PROBES, "The token has been revoked.")
        asyncio.run(_everything_made_arrived(net, made))
        # What the newcomer does next: `refnet demo` passes, its reads leave no refusal; a fresh replica catches up.
        demo = refnet_demo(net.env, "--ack-timeout", "0")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        case_id = _case_of(net, referral_id(demo.stdout))
        accesses = httpx.get(net.url("audit") + f"/audit/cases/{case_id}/access", timeout=30,
                             headers=net.headers("oversight", purpose="audit")).json()["items"]
        refused = [a for a in accesses if a["outcome"] != "success" and a["agency"] == net.agency("unhcr")]
        # The demo's one read before the referral is refused on purpose (step 1); none after it may be.
        assert len(refused) == 1, refused
        _fresh_referral_replica_catches_up(net, made)


def _refusals(net: Network, token: str) -> dict[str, str]:
    """Why each service refuses the token (its 401 problem's detail)."""
    found = {}
    for service, path in PROBES.items():
        answer = httpx.get(net.url(service) + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 401, (service, answer.status_code)
        found[service] = answer.json().get("detail", "")
    return found


def _probe(net: Network, token: str) -> Any:
    async def probe() -> dict[str, int]:
        return probe_all(net, token)

    return probe


def _case_of(net: Network, referral: str) -> str:
    got = httpx.get(net.url("referral") + f"/referrals/{referral}", headers=net.headers("iom"), timeout=30)
    assert got.status_code == 200, got.text
    return str(got.json()["case_id"])


async def _everything_made_arrived(net: Network, made: list[tuple[str, str]]) -> None:
    """Within a minute: every referral is known to its recipient -- readable, in its queue and pull feed -- and
    every case's registration, consent and referral is in the audit log, which verifies."""
    unhcr = net.agency("unhcr")
    async with httpx.AsyncClient(timeout=30) as http:
        async def recipient_reads_all() -> list[int]:
            answers = [await http.get(net.url("intake") + f"/cases/{case}",
                                      headers=net.headers("unhcr", purpose="referral")) for case, _ in made]
            return [a.status_code for a in answers]

        reads = await eventually(recipient_reads_all, lambda codes: set(codes) == {200}, seconds=60)
        assert set(reads) == {200}, f"{reads.count(404)} of {len(made)} referred cases unreadable by the recipient"

        queue: set[str] = set()
        cursor: str | None = None
        while True:
            params = {"role": "received", "limit": "500"} | ({"cursor": cursor} if cursor else {})
            page = await http.get(net.url("referral") + "/referrals", headers=net.headers("unhcr"), params=params)
            assert page.status_code == 200, page.text
            queue |= {item["id"] for item in page.json()["items"]}
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
        assert {r for _, r in made} <= queue
        feed = await http.get(net.url("referral") + "/events", headers=net.headers("unhcr"),
                              params={"limit": "500"})
        assert feed.status_code == 200, feed.text
        assert {r for _, r in made} <= {item["data"]["referral_id"] for item in feed.json()["items"]}
        assert all(item["data"]["to_agency"] == unhcr for item in feed.json()["items"]
                   if item["data"]["from_agency"] != unhcr)

        auditor = net.headers("oversight", purpose="audit")

        async def audited() -> list[set[str]]:
            found = []
            for case, _ in made:
                entries = await http.get(net.url("audit") + "/audit/entries", headers=auditor,
                                         params={"case_id": case, "limit": "500"})
                assert entries.status_code == 200, entries.text
                found.append({e["action"] for e in entries.json()["items"]})
            return found

        wanted = {"case.create", "consent.grant", "referral.requested"}
        actions = await eventually(audited, lambda found: all(wanted <= a for a in found), seconds=60)
        missing = [sorted(wanted - a) for a in actions if not wanted <= a]
        assert not missing, f"{len(missing)} cases miss audit entries, e.g. {missing[:3]}"
        verified = await http.get(net.url("audit") + "/audit/verify", headers=auditor)
        assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text


def _fresh_referral_replica_catches_up(net: Network, made: list[tuple[str, str]]) -> None:
    """A second referral deployment with an empty database, beside the running stack: ready once it has read
    the registry's agencies and services, then it serves (a referral to a registry agency is accepted)."""
    database = f"refnet_referral_replica_{uuid.uuid4().hex[:6]}"
    server = net.env.get("REFNET_DATABASE_URL") or f"postgresql://postgres@127.0.0.1:{net.env['REFNET_PG_PORT']}"
    subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-qAt", f"{server}/postgres", "-c",
                    f'CREATE DATABASE "{database}"'], check=True)
    port = free_port()
    url = f"postgresql+asyncpg://{server.split('://', 1)[1]}/{database}"
    env = _service_env(net) | {"REFNET_REFERRAL_DATABASE_URL": url, "REFNET_REFERRAL_PORT": str(port),
                       "REFNET_REFERRAL_CONSUMER_GROUP_PREFIX": f"replica-{uuid.uuid4().hex[:6]}"}
    subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "migrate", "referral"], env=env, cwd=REPO,
                   check=True, capture_output=True)
    log = open(net.logs / "referral-replica.log", "ab")  # noqa: SIM115 -- the child keeps it
    replica = subprocess.Popen([sys.executable, "-m", "deploy.launcher.cli", "serve", "referral"], env=env,
                               cwd=REPO, stdout=log, stderr=log)
    log.close()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert replica.poll() is None, "the replica exited"
            assert time.monotonic() < deadline, "the fresh replica did not become ready"
            try:
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        # Ready means it knows the registry: a referral to UNHCR is accepted at once, no registry-loading.
        case = asyncio.run(_register(net))
        created = httpx.post(base + "/referrals", timeout=30, headers=net.headers("iom") | {
            "Idempotency-Key": uuid.uuid4().hex}, json={
            "case_id": case, "to_agency": net.agency("unhcr"), "pathway": "protection", "service_type": "shelter",
            "priority": "normal", "reason": "Needs a safe place", "shared_categories": flows.CATEGORIES})
        assert created.status_code == 201, created.text
    finally:
        replica.terminate()
        replica.wait(30)


async def _register(net: Network) -> str:
    async with httpx.AsyncClient(timeout=30) as http:
        return str((await flows.register_case(http, net, "iom", "unhcr"))["id"])


def _service_env(net: Network) -> dict[str, str]:
    """What the launcher gives referral (its keys and credentials included), read from the running process."""
    import psutil

    from deploy.launcher.stack import StackState

    state = StackState.load(net.home)
    assert state is not None
    environ = psutil.Process(state.pids["referral"]).environ()
    return dict(environ) | {"PATH": os.environ.get("PATH", "")}
