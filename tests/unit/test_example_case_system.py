"""The reference case system (examples/case_system/) as an integrator copies it: RefNet's client and what its
requirements name, and its local rules -- webhook verification, deduplication, configuration -- hold.

Its work against the network (delivery, reading the case, acknowledging) is tested end to end in
tests/e2e/test_demo_and_case_system.py.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import base64
import io
import json
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey
from standardwebhooks import Webhook

import refnet_client
from examples.case_system import case_system as example
from refnet_client import Credentials, Endpoints, RefNetError

EXAMPLE = Path(example.__file__)
CLIENT = Path(refnet_client.__file__).parent
#: What requirements.txt names: refnet_client's own needs and the example's.
REQUIREMENTS = {"httpx", "authlib", "joserfc", "cryptography", "pydantic", "aiokafka", "standardwebhooks"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import ties the file to its place in RefNet's tree"
            names.add(str(node.module).split(".")[0])
    return names


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m != "__future__"}


def test_the_example_imports_of_refnet_only_its_client_and_what_its_requirements_name() -> None:
    modules = imported_modules(EXAMPLE)
    assert not modules & {"shared", "services", "deploy", "tests", "examples"}
    assert third_party(modules) == {"refnet_client", "httpx", "aiokafka", "standardwebhooks"}
    client_needs = set().union(*(imported_modules(path) for path in CLIENT.glob("*.py")))
    requirements = (EXAMPLE.parent / "requirements.txt").read_text().splitlines()
    named = {line.split(">=")[0].strip() for line in requirements if line.strip() and not line.startswith("#")}
    assert named == REQUIREMENTS == third_party(modules | client_needs) - {"refnet_client"}


def config(**overrides: object) -> example.Config:
    values: dict[str, object] = {
        "credentials": Credentials(
            client_id="cli_unhcr", agency_id="agy_unhcr", token_url="http://127.0.0.1:9/oauth/token",
            private_key_pem=ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()),
        "endpoints": Endpoints(intake="http://127.0.0.1:9", referral="http://127.0.0.1:9"), "bootstrap": "127.0.0.1:9",
        "group": "g", "start_from": "earliest", "acting_user": "case-system", "inbox": ":memory:",
        "listen": "127.0.0.1:0", "public_url": None, "case_wait_seconds": 1.0,
    }
    values.update(overrides)
    return example.Config(**values)  # type: ignore[arg-type]


# --- the client as the example configures it -------------------------------------------------------------


async def test_the_client_asks_for_the_examples_scopes_and_names_its_acting_user() -> None:
    settings = config(acting_user="case-system")
    requests: list[httpx.Request] = []

    def refnet(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 300})
        return httpx.Response(404, json={"type": "urn:refnet:problem:not-found", "title": "Not Found",
                                         "status": 404, "detail": "No such case."})

    async with example.connect(settings, httpx.MockTransport(refnet)) as client:
        with pytest.raises(RefNetError) as refused:
            await client.read_case("case-1", purpose="referral")
    assert refused.value.status == 404
    token, read = requests
    assert b"scope=cases%3Aread+referrals%3Aread+referrals%3Awrite+events%3Aread" in token.content
    assert (read.headers["X-Acting-User"], read.headers["X-Purpose"]) == ("case-system", "referral")


async def test_transient_failures_are_retried_and_answers_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    outcomes: list[Exception | str] = [httpx.ConnectError("down"), RefNetError(503, "unavailable"),
                                       RefNetError(429, "too-many-requests"), "answered"]

    async def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await example.Transient()("read_case", call) == "answered"
    outcomes[:] = [RefNetError(409, "invalid-transition")]
    with pytest.raises(RefNetError):
        await example.Transient()("acknowledge", call)


async def _no_wait(_: float) -> None:
    return None


# --- configuration ----------------------------------------------------------------------------------


def test_configuration_takes_flags_then_environment_then_the_stack_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "unhcr.json"
    credentials.write_text(json.dumps({"agency_id": "agy_unhcr", "client_id": "cli_unhcr", "private_key_pem": "k",
                                       "token_url": "http://127.0.0.1:18101/oauth/token"}))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"broker": "127.0.0.1:19192", "services": {
        "intake": "http://127.0.0.1:18102", "referral": {"url": "http://127.0.0.1:18103/", "state": "ready"}}}))
    for name in ("REFNET_INTAKE_URL", "REFNET_REFERRAL_URL", "REFNET_KAFKA_BOOTSTRAP", "CASE_SYSTEM_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)

    from_state = example.load_config(example.parse_args(
        ["kafka", "--credentials", str(credentials), "--stack-state", str(state)]))
    assert (from_state.endpoints.intake, from_state.endpoints.referral, from_state.bootstrap) == (
        "http://127.0.0.1:18102", "http://127.0.0.1:18103", "127.0.0.1:19192")
    assert from_state.group == "case-system-agy_unhcr"

    monkeypatch.setenv("REFNET_INTAKE_URL", "http://intake.example")
    args = example.parse_args(["kafka", "--credentials", str(credentials), "--stack-state", str(state),
                               "--referral-url", "http://referral.example"])
    assert isinstance(args, argparse.Namespace)
    mixed = example.load_config(args)
    assert (mixed.endpoints.intake, mixed.endpoints.referral) == ("http://intake.example", "http://referral.example")

    monkeypatch.setenv("CASE_SYSTEM_CREDENTIALS", str(credentials))
    monkeypatch.delenv("REFNET_INTAKE_URL")
    defaults = example.load_config(example.parse_args(["webhook"]))
    assert (defaults.endpoints.intake, defaults.endpoints.referral, defaults.bootstrap) == (
        "http://127.0.0.1:8002", "http://127.0.0.1:8003", "127.0.0.1:9092")


# --- webhook verification ---------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = json.dumps({"specversion": "1.0", "id": "evt-1", "source": "/refnet/referral",
                   "type": example.REFERRAL_REQUESTED, "data": {"referral_id": "r1"}}).encode()


def signed(body: bytes = BODY, *, secret: str = SECRET, at: datetime | None = None,
           message_id: str = "evt-1") -> dict[str, str]:
    moment = at or datetime.now(UTC)
    return {"Content-Length": str(len(body)), "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, moment, body.decode())}


@pytest.fixture
async def receiver() -> AsyncIterator[example.WebhookReceiver]:
    receiver = example.WebhookReceiver("127.0.0.1:0")
    receiver.secret = SECRET
    yield receiver
    receiver.server.server_close()


async def test_a_verified_delivery_is_queued_and_answered_at_once(receiver: example.WebhookReceiver) -> None:
    status = receiver.accept(receiver.path, signed(), io.BytesIO(BODY), asyncio.get_running_loop())
    assert status == 204
    message_id, event = await asyncio.wait_for(receiver.queue.get(), 1)
    assert (message_id, event["type"], event["data"]) == ("evt-1", example.REFERRAL_REQUESTED, {"referral_id": "r1"})


@pytest.mark.parametrize("forgery", ["other secret", "body changed", "no signature", "malformed signature",
                                     "too old", "other id"])
async def test_a_delivery_that_does_not_verify_is_refused_and_never_handled(
        receiver: example.WebhookReceiver, forgery: str) -> None:
    body = BODY
    headers = signed()
    if forgery == "other secret":
        headers = signed(secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    elif forgery == "body changed":
        body = BODY.replace(b"r1", b"r2")
    elif forgery == "no signature":
        del headers["webhook-signature"]
    elif forgery == "malformed signature":
        headers["webhook-signature"] = "v1-not-base64!"
    elif forgery == "too old":  # a captured delivery replayed later
        headers = signed(at=datetime.now(UTC) - timedelta(minutes=10))
    elif forgery == "other id":
        headers["webhook-id"] = "evt-2"
    status = receiver.accept(receiver.path, headers, io.BytesIO(body), asyncio.get_running_loop())
    assert status == 401
    await asyncio.sleep(0)
    assert receiver.queue.empty()


async def test_the_receiver_answers_only_on_its_path_and_refuses_oversized_bodies(
        receiver: example.WebhookReceiver) -> None:
    loop = asyncio.get_running_loop()
    assert receiver.accept("/elsewhere", signed(), io.BytesIO(BODY), loop) == 404
    assert receiver.accept(receiver.path, {"Content-Length": str(2**21)}, io.BytesIO(b""), loop) == 413
    assert receiver.accept(receiver.path, {}, io.BytesIO(b""), loop) == 411


# --- deduplication ----------------------------------------------------------------------------------


async def test_an_event_delivered_twice_is_handled_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = config()
    async with example.connect(settings) as refnet:
        case_system = example.CaseSystem(refnet, settings, example.HandledEvents(":memory:"))
        with caplog.at_level(logging.INFO, logger="case_system"):
            for _ in range(2):
                await case_system.on_event("/refnet/referral", "evt-9", "org.refnet.referral.accepted.v1",
                                           {"referral_id": "r9"})
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[0] for line in lines] == ["event_noted", "duplicate_skipped"]


def test_handled_event_ids_survive_a_restart(tmp_path: Path) -> None:
    inbox = str(tmp_path / "inbox.sqlite3")
    example.HandledEvents(inbox).remember("/refnet/referral", "evt-1")
    again = example.HandledEvents(inbox)
    assert again.seen("/refnet/referral", "evt-1")
    assert not again.seen("/refnet/other", "evt-1")  # ids are unique per source (CloudEvents)
