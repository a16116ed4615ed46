"""The network as its users see it: the stack `make run` starts, reached only through public REST APIs and topics.

Scenarios (tests/e2e/scenarios.py) are written against this class so that other suites (the reliability leak scan)
can run the same scenarios with their own marker names.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from joserfc import jwt
from joserfc.jwk import ECKey

from deploy.launcher.demo import eventually as eventually  # one poller for the demo and the tests
from deploy.launcher.infra import free_port
from tests.integration.test_launcher import launcher_env

REPO = Path(__file__).resolve().parents[2]

CHECKLIST = ("purpose_explained", "use_explained", "research_use_explained", "access_right_explained",
             "retention_explained", "withdrawal_explained")


@contextmanager
def running_stack(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Network]:
    """`refnet up` in a subprocess with its own ports and home; SIGINT (Ctrl-C) on exit, as a user would."""
    env = launcher_env(home) | {"REFNET_REFERRAL_WEBHOOK_POLL_SECONDS": "0.2"} | (extra_env or {})
    home.mkdir(parents=True, exist_ok=True)
    output = home.parent / f"launcher-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}.log"
    with open(output, "wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "deploy.launcher.cli", "up"], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (home / "state.json").exists():
            assert launcher.poll() is None, f"the stack did not start: {output.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the stack did not come up within 150 s"
            time.sleep(0.5)
        yield Network(home, env)
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)


@dataclass
class Network:
    home: Path
    env: dict[str, str]
    _tokens: dict[str, tuple[float, str]] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['REFNET_BROKER_PORT']}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'REFNET_{service.upper()}_PORT']}"

    def credentials(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.home / "credentials" / f"{name}.json").read_text()))

    def agency(self, name: str) -> str:
        return str(self.credentials(name)["agency_id"])

    def token(self, name: str) -> str:
        """A token for a demo agency, got the way an integrator's case system gets one (README): the client
        credentials grant, authenticated by an RFC 7523 assertion signed with the agency's private key. Cached
        for 5 minutes (tokens live 10)."""
        cached = self._tokens.get(name)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        credentials = self.credentials(name)
        now = int(time.time())
        claims = {"iss": credentials["client_id"], "sub": credentials["client_id"], "aud": credentials["token_url"],
                  "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
        assertion = jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(credentials["private_key_pem"]),
                               algorithms=["ES256"])
        answer = httpx.post(credentials["token_url"], timeout=30, data={
            "grant_type": "client_credentials", "scope": " ".join(credentials["scopes"]),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        assert answer.status_code == 200, answer.text
        token = str(answer.json()["access_token"])
        # Half the token's life, at most 5 minutes (a stack may run with short-lived tokens).
        self._tokens[name] = (time.monotonic() + min(300, int(answer.json()["expires_in"]) / 2), token)
        return token

    def headers(self, name: str, purpose: str = "case_management", user: str = "caseworker.1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}", "X-Purpose": purpose, "X-Acting-User": user}

    async def topic(self, topic: str, *, until: Callable[[list[Any]], bool] | None = None,
                    seconds: float = 20) -> list[Any]:
        """Every record on a topic from the beginning (aiokafka ConsumerRecord): read until `until` holds (or
        `seconds` pass), or, without `until`, up to the end the topic had when we started."""
        if until is None:
            return await self._to_end(topic)
        # A topic may appear only with its first event: look for it every half second, not every 5 minutes.
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    metadata_max_age_ms=500)
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                records += [r for rs in batch.values() for r in rs]
                if until(records):
                    break
        finally:
            await consumer.stop()
        return records

    async def _to_end(self, topic: str) -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        records: list[Any] = []
        try:
            await consumer.topics()  # fresh metadata
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not partitions:
                return []
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + 30
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                assert time.monotonic() < deadline, f"could not read {topic} to its end"
                batch = await consumer.getmany(*partitions, timeout_ms=500)
                records += [r for rs in batch.values() for r in rs]
        finally:
            await consumer.stop()
        return records

    async def topic_names(self) -> list[str]:
        """Every topic on the broker (the broker's own internal ones left out)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            return sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        finally:
            await admin.close()


def ce_type(record: Any) -> str:
    return str(dict(record.headers)["ce_type"].decode())


def ce_headers(record: Any) -> dict[str, str]:
    """A record's headers as text (CloudEvents attributes are the `ce_*` ones)."""
    return {name: value.decode() for name, value in record.headers}


class WebhookReceiver:
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

    def types(self) -> list[str]:
        return [str(json.loads(body).get("type")) for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
