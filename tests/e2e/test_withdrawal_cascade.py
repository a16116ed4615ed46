"""Consent withdrawn at intake cancels the referral, and the recipient's case system hears it on every channel.

Against the whole stack as `make run` starts it (launcher, embedded PostgreSQL and broker, the four services,
the demo seed), through public APIs and topics only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from standardwebhooks import Webhook

from deploy.launcher.infra import free_port
from tests.integration.test_launcher import launcher_env

REPO = Path(__file__).resolve().parents[2]


class Stack:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'REFNET_{service.upper()}_PORT']}"

    def token(self, name: str) -> str:
        out = subprocess.run([sys.executable, "-m", "deploy.launcher.cli", "token", "--as", name], cwd=REPO,
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def agency(self, name: str) -> str:
        return str(json.loads((self.home / "credentials" / f"{name}.json").read_text())["agency_id"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack") / ".refnet"
    env = launcher_env(home) | {"REFNET_REFERRAL_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                                "REFNET_REFERRAL_WEBHOOK_POLL_SECONDS": "0.2"}
    launcher = subprocess.Popen([sys.executable, "-m", "deploy.launcher.cli", "up"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (home / "state.json").exists():
            assert launcher.poll() is None, "the stack did not start"
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.5)
        yield Stack(home, env)
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)


class Receiver:
    """A case system's webhook endpoint on loopback, recording what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/refnet"


async def test_withdrawn_consent_cancels_the_referral_on_every_channel(stack: Stack) -> None:
    iom, unhcr = stack.token("iom"), stack.token("unhcr")
    unhcr_id = stack.agency("unhcr")
    receiver = Receiver()
    async with httpx.AsyncClient(timeout=15) as http:
        def auth(token: str, purpose: str = "case_management") -> dict[str, str]:
            return {"Authorization": f"Bearer {token}", "X-Purpose": purpose, "X-Acting-User": "caseworker.1"}

        sub = await http.post(f"{stack.url('referral')}/subscriptions", headers=auth(unhcr),
                              json={"url": receiver.url})
        assert sub.status_code == 201, sub.text
        secret = sub.json()["secret"]

        case = await http.post(f"{stack.url('intake')}/cases", headers=auth(iom), json={
            "person": {"given_name": "Test", "family_name": "Person", "birth_date": "1990-01-01",
                       "gender": "masculine", "citizenship": "NG", "languages": ["en"], "phone": None,
                       "email": None, "documents": ["none"]},
            "screening": {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "IT",
                          "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage"],
                          "recruiter_relation": "other", "migration_status": "asylum_seeker",
                          "fear_of_return": True, "needs": ["protection.rsd"], "risk_level": "medium"},
            "initial_consent": {
                "grantor": "self", "method": "written", "language": "en", "interpreter_used": False,
                "provisions": [{"purpose": "referral", "recipient_agency": unhcr_id,
                                "data_categories": ["demographics", "protection_needs"], "decision": "permit"}],
                "valid_until": "2030-01-01T00:00:00Z",
                "checklist": dict.fromkeys(("purpose_explained", "use_explained", "research_use_explained",
                                            "access_right_explained", "retention_explained",
                                            "withdrawal_explained"), True)}})
        assert case.status_code == 201, case.text
        case_id = case.json()["id"]
        consents = await http.get(f"{stack.url('intake')}/cases/{case_id}/consents", headers=auth(iom))
        consent_id = consents.json()["items"][0]["id"]

        # Right after start-up the broker's read model of the registry may still be filling (eventually
        # consistent, seconds): the recipient is "not known" until then. The same Idempotency-Key makes the
        # retry safe.
        for _ in range(40):
            referral = await http.post(
                f"{stack.url('referral')}/referrals", headers=auth(iom) | {"Idempotency-Key": f"e2e-{case_id}"},
                json={"case_id": case_id, "to_agency": unhcr_id, "pathway": "protection",
                      "service_type": "protection.rsd", "priority": "urgent", "reason": "Fears return",
                      "shared_categories": ["demographics", "protection_needs"]})
            if referral.status_code != 422:
                break
            time.sleep(0.5)
        assert referral.status_code == 201, referral.text
        referral_id = referral.json()["id"]

        # The recipient can read the minimised case once intake has heard of the referral ...
        for _ in range(40):
            read = await http.get(f"{stack.url('intake')}/cases/{case_id}", headers=auth(unhcr, "referral"))
            if read.status_code == 200:
                break
            time.sleep(0.5)
        assert read.status_code == 200, read.text

        withdrawn = await http.post(f"{stack.url('intake')}/cases/{case_id}/consents/{consent_id}/withdraw",
                                    headers=auth(iom), json={})
        assert withdrawn.status_code == 201, withdrawn.text
        # ... and not one read later.
        after = await http.get(f"{stack.url('intake')}/cases/{case_id}", headers=auth(unhcr, "referral"))
        assert after.status_code == 404

        for _ in range(60):
            state = (await http.get(f"{stack.url('referral')}/referrals/{referral_id}", headers=auth(iom))).json()
            if state["status"] == "cancelled":
                break
            time.sleep(0.5)
        assert (state["status"], state["history"][-1]["reason_code"]) == ("cancelled", "consent-withdrawn")

    # The delivery topic carries the cancellation, keyed by referral id.
    topic = f"refnet.delivery.{unhcr_id}"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=f"127.0.0.1:{stack.env['REFNET_BROKER_PORT']}",
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        types: list[str] = []
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=500)
            types += [dict(r.headers)["ce_type"].decode() for rs in batch.values() for r in rs
                      if r.key == referral_id.encode()]
            if "org.refnet.referral.cancelled.v1" in types:
                break
    finally:
        await consumer.stop()
    assert types[0] == "org.refnet.referral.requested.v1" and types[-1] == "org.refnet.referral.cancelled.v1"

    # The webhook too, signed with the subscription's secret.
    for _ in range(40):
        bodies = [json.loads(body) for _, body in receiver.received]
        if any(b.get("type") == "org.refnet.referral.cancelled.v1" for b in bodies):
            break
        time.sleep(0.5)
    receiver.server.shutdown()
    cancelled = [(h, body) for h, body in receiver.received
                 if json.loads(body).get("type") == "org.refnet.referral.cancelled.v1"]
    assert cancelled, [json.loads(b).get("type") for _, b in receiver.received]
    headers, body = cancelled[0]
    Webhook(secret).verify(body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
    assert json.loads(body)["data"]["reason_code"] == "consent-withdrawn"
