"""`refnet demo` and the reference case system (examples/case_system/), against the stack `make run` starts.

Both run as a newcomer runs them: as subprocesses, the case system exactly as its README says, with UNHCR's
credentials. The assertions read what they print and what the network holds afterwards.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from tests.e2e.network import REPO, Network
from tests.integration.test_launcher import launcher_env

DEMO_STEPS = (
    "The stack is running",
    "IOM gets an access token",
    "UNHCR gets an access token",
    "IOM registers an adult case (a fictional person)",
    "IOM records her consent to a referral to UNHCR",
    "UNHCR cannot see the case before a referral",
    "IOM refers the case to UNHCR on the protection pathway",
    "UNHCR's case system is told: event on refnet.delivery.agy_unhcr",
    "UNHCR acknowledges the referral (received)",
    "UNHCR reads the minimised case: only the shared categories",
    "UNHCR accepts the referral",
    "UNHCR starts work (in_progress)",
    "UNHCR completes the referral",
    "IOM's queue of sent referrals shows every step",
    "OVERSIGHT gets an access token",
    "The auditor lists who read the case, why, under which consent",
    "The auditor proves UNHCR's read is in the signed, append-only log",
)
#: What `refnet demo` puts in its fictional case: none of it may reach the case system's log.
PERSONAL = ("Fictional", "Demo-Person", "1996-05-17", "+15555550123", "fictional.person@example.org")


def refnet_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "demo", *args], cwd=REPO,
                          env=env | {"COLUMNS": "200"}, capture_output=True, text=True, timeout=240)


def referral_id(output: str) -> str:
    found = re.search(r"referral id: (\w+)", output)
    assert found, output
    return found.group(1)


class CaseSystem:
    """examples/case_system/case_system.py in a subprocess, its log in a file."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, seconds: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"the case system never logged {pattern!r}:\n{self.text()}")


@contextmanager
def case_system(network: Network, mode: str, log: Path, *extra: str) -> Iterator[CaseSystem]:
    """Started as examples/case_system/README.md says, with UNHCR's credentials; Ctrl-C at the end."""
    command = [sys.executable, "examples/case_system/case_system.py", mode,
               "--credentials", str(network.home / "credentials" / "unhcr.json"),
               "--stack-state", str(network.home / "state.json"), *extra]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=network.env, stdout=out, stderr=subprocess.STDOUT)
    running = CaseSystem(log)
    try:
        deadline = time.monotonic() + 60
        while "listening" not in running.text():
            assert process.poll() is None, f"the case system exited:\n{running.text()}"
            assert time.monotonic() < deadline, f"the case system did not start:\n{running.text()}"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, running.text()
    assert "stopped" in running.text()


async def recipient_history(network: Network, referral: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=15) as http:
        got = await http.get(f"{network.url('referral')}/referrals/{referral}", headers=network.headers("unhcr"))
    assert got.status_code == 200, got.text
    return list(got.json()["history"])


def assert_acknowledged_by_the_case_system(network: Network, demo: subprocess.CompletedProcess[str],
                                           running: CaseSystem, history: list[dict[str, object]]) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "by UNHCR's case system (acting user case-system)" in demo.stdout
    referral = referral_id(demo.stdout)
    received = [h for h in history if h["to"] == "received"]
    assert len(received) == 1
    assert (received[0]["by"], received[0]["agency"], received[0]["acting_user"]) == (
        "recipient", network.agency("unhcr"), "case-system")
    # The case system's own account, step by step, naming ids only.
    running.wait_for(rf"referral_requested referral_id={referral} case_id=case-\w+ from_agency=agy_iom")
    fields = running.wait_for(rf"case_read referral_id={referral} .* fields=(\S+)").group(1).split(",")
    assert "person.given_name" in fields and "screening.needs" in fields  # identity, protection_needs shared
    assert not {"person.phone", "person.documents", "screening.notes", "screening.exploitation_types"} & set(fields)
    running.wait_for(rf"acknowledged referral_id={referral} status=received")
    assert not [word for word in PERSONAL if word in running.text()]


# --- refnet demo on its own -------------------------------------------------------------------------


async def test_refnet_demo_runs_the_main_pathway_and_names_each_step(network: Network) -> None:
    demo = refnet_demo(network.env, "--ack-timeout", "1")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    for step in DEMO_STEPS:
        assert any(line.startswith(f"✓ {step}") for line in lines), f"no ✓ for {step!r}:\n{demo.stdout}"
    assert "✗" not in demo.stdout
    assert "no case system answered, so the demo acknowledged as UNHCR" in demo.stdout
    assert "The main pathway worked." in demo.stdout

    history = await recipient_history(network, referral_id(demo.stdout))
    assert [h["to"] for h in history] == ["requested", "received", "accepted", "in_progress", "completed"]
    assert {h["acting_user"] for h in history[1:]} == {"demo.unhcr.caseworker"}


async def test_refnet_demo_no_complete_leaves_the_delivered_referral_to_unhcr(network: Network) -> None:
    demo = refnet_demo(network.env, "--no-complete")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "✓ UNHCR's case system is told" in demo.stdout and "stopped before UNHCR acts" in demo.stdout
    assert "UNHCR acknowledges" not in demo.stdout
    history = await recipient_history(network, referral_id(demo.stdout))
    assert [h["to"] for h in history] == ["requested"]


def test_refnet_demo_without_a_stack_says_so_and_fails(tmp_path: Path) -> None:
    demo = refnet_demo(launcher_env(tmp_path / ".refnet"))
    assert demo.returncode == 1
    assert "RefNet is not running here" in demo.stdout and "make run" in demo.stdout


def test_refnet_demo_stops_at_the_first_failing_step(tmp_path: Path) -> None:
    """A stack that left its state file behind but is gone: the first step says which services are down."""
    env = launcher_env(tmp_path / ".refnet")
    (tmp_path / ".refnet").mkdir()
    (tmp_path / ".refnet" / "state.json").write_text(json.dumps({
        "launcher_pid": 0, "database_server": "-", "broker": "127.0.0.1:1", "pids": {},
        "services": {name: f"http://127.0.0.1:{env[f'REFNET_{name.upper()}_PORT']}"
                     for name in ("registry", "intake", "referral", "audit")}}))
    demo = refnet_demo(env)
    assert demo.returncode == 1
    assert "✗ The stack is running: registry is down" in demo.stdout
    assert "The demo failed (stopped at: The stack is running)" in demo.stdout
    assert "✓" not in demo.stdout


# --- the example case system ------------------------------------------------------------------------


async def test_the_example_case_system_on_kafka_acknowledges_the_demos_referral(network: Network,
                                                                                 tmp_path: Path) -> None:
    with case_system(network, "kafka", tmp_path / "case_system.log") as running:
        running.wait_for(r"listening mode=kafka agency=agy_unhcr topic=refnet.delivery.agy_unhcr")
        demo = refnet_demo(network.env, "--ack-timeout", "60")
        history = await recipient_history(network, referral_id(demo.stdout))
        assert_acknowledged_by_the_case_system(network, demo, running, history)


async def test_the_example_case_system_on_webhooks_verifies_and_acknowledges(network: Network,
                                                                             tmp_path: Path) -> None:
    with case_system(network, "webhook", tmp_path / "case_system.log", "--listen", "127.0.0.1:0") as running:
        listening = running.wait_for(r"listening mode=webhook agency=agy_unhcr url=(\S+) subscription_id=(\w+)")
        url, subscription = listening.group(1), listening.group(2)

        # Anyone can reach the endpoint; only RefNet, holding the subscription's secret, gets through.
        now = str(int(time.time()))
        body = json.dumps({"type": "org.refnet.referral.requested.v1", "id": "forged", "source": "/refnet/referral",
                           "data": {"referral_id": "forged", "case_id": "case-forged",
                                    "to_agency": network.agency("unhcr")}})
        forged_secret = "whsec_" + "A" * 43 + "="
        async with httpx.AsyncClient(timeout=10) as http:
            for headers in ({"webhook-id": "forged", "webhook-timestamp": now,
                             "webhook-signature": Webhook(forged_secret).sign(
                                 "forged", datetime.fromtimestamp(int(now), UTC), body)},
                            {"webhook-id": "forged", "webhook-timestamp": now, "webhook-signature": "v1,AAAA"},
                            {}):
                refused = await http.post(url, content=body, headers=headers)
                assert refused.status_code == 401, headers
        assert running.text().count("webhook_refused reason=signature-not-verified") == 3
        assert "forged" not in running.text()

        demo = refnet_demo(network.env, "--ack-timeout", "60")
        history = await recipient_history(network, referral_id(demo.stdout))
        assert_acknowledged_by_the_case_system(network, demo, running, history)

        # RefNet's side: its signed delivery was answered 2xx at the first attempt.
        async with httpx.AsyncClient(timeout=10) as http:
            log = await http.get(f"{network.url('referral')}/subscriptions/{subscription}/deliveries",
                                 headers=network.headers("unhcr"))
        assert log.status_code == 200, log.text
        assert [(d["event_type"], d["outcome"], d["status_code"], d["attempt"]) for d in log.json()["items"]] == [
            ("org.refnet.referral.requested.v1", "delivered", 204, 1)]

    # Stopped, it unsubscribed.
    async with httpx.AsyncClient(timeout=10) as http:
        gone = await http.get(f"{network.url('referral')}/subscriptions/{subscription}",
                              headers=network.headers("unhcr"))
    assert gone.status_code == 404
