"""One referral followed in traces: ``POST /referrals`` on referral, its relay's publishing, intake's consumer
applying the event -- one trace, on the real broker and databases. And nothing personal in any span: not the
body's free text, not a query string, not a header value, even with header capture asked for."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.intake.app import create_app as create_intake
from services.intake.crypto import MasterKey, write_key_file
from services.intake.settings import IntakeSettings
from shared import tracing
from shared.migrations import upgrade
from tests.conftest import Infra
from tests.integration.referral.conftest import body, running_referral
from tests.support.issuer import LocalIssuer, local_issuer_fixture

issuer = local_issuer_fixture(scope="module")

MARKER = "Amira-Haddad-0551234567"  # stands for a name and a telephone number a caseworker typed


@pytest.fixture
def tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing as an operator turns it on, exporting nowhere (the test adds its own exporters); header capture
    asked for on every header, which the redaction must defeat."""
    monkeypatch.setenv("REFNET_TRACING", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")


def exporter_of(app: FastAPI) -> InMemorySpanExporter:
    provider = tracing.provider_of(app)
    assert provider is not None, "tracing is on: the app has a tracer provider"
    exporter = InMemorySpanExporter()
    tracing.add_exporter(provider, exporter, batch=False)
    return exporter


@asynccontextmanager
async def running_intake(infra: Infra, database_url: str, local: LocalIssuer) -> AsyncIterator[FastAPI]:
    await asyncio.to_thread(upgrade, "intake", database_url)
    key_file = Path(tempfile.mkdtemp(prefix="intake-keys-")) / "master.b64"
    write_key_file(key_file, MasterKey.generate())
    app = create_intake(IntakeSettings(
        database_url=database_url, kafka_bootstrap=infra.bootstrap, log_json=True, issuer=local.issuer,
        jwks_url=local.jwks_url, master_key_file=str(key_file), relay_poll_seconds=0.2,
        consumer_group=f"intake-traces-{uuid.uuid4().hex[:8]}"))
    async with app.router.lifespan_context(app):
        yield app


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/refnet?token={MARKER}", received
    finally:
        server.shutdown()
        server.server_close()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def one(spans: Sequence[ReadableSpan], predicate: Callable[[ReadableSpan], bool], what: str) -> ReadableSpan:
    found = [s for s in spans if predicate(s)]
    assert found, f"no span {what}: {[s.name for s in spans]}"
    return found[0]


async def test_one_referral_is_one_trace_from_request_to_consumers_and_nothing_personal_is_recorded(
        tracing_on: None, infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer,
        webhook_receiver: tuple[str, list[dict[str, str]]]) -> None:
    hook_url, hooks_received = webhook_receiver
    async with running_intake(infra, new_database("intake_traces"), issuer) as intake, \
            running_referral(new_database("referral_traces"), infra.bootstrap, issuer,
                             webhook_poll_seconds=0.05) as referral:
        at_referral, at_intake = exporter_of(referral.app), exporter_of(intake)
        sender, recipient = await referral.agency(), await referral.agency()
        subscribed = await referral.client.post("/subscriptions", json={"url": hook_url},
                                                headers=referral.headers(recipient))
        assert subscribed.status_code == 201, subscribed.text
        case_id, _ = referral.intake.add_case(sender)
        created = await referral.refer(sender, body(case_id, recipient, reason=f"Needs a safe place: {MARKER}"),
                                       **{"X-Caseworker-Note": MARKER})
        assert created.status_code == 201, created.text
        refused = await referral.refer(sender, body(case_id, recipient, reason=MARKER, nickname=MARKER))
        assert refused.status_code == 422, refused.text
        referral_id = created.json()["id"]
        # A read with personal data in its query string (refused: the operation takes no such parameter, but the
        # request is traced all the same).
        read = await referral.client.get(f"/referrals/{referral_id}?q={MARKER}", headers=referral.headers(sender))
        assert read.status_code == 422, read.text

        request = one(at_referral.get_finished_spans(), lambda s: s.name == "POST /referrals", "POST /referrals")
        trace_id = request.context.trace_id

        def intake_applied() -> list[ReadableSpan]:
            return [s for s in at_intake.get_finished_spans() if s.kind is SpanKind.CONSUMER
                    and s.context.trace_id == trace_id]

        await wait_for(lambda: bool(intake_applied()), "intake's consumer span in the request's trace")
        await wait_for(lambda: bool(hooks_received), "the webhook delivery")
        await wait_for(lambda: any(s.kind is SpanKind.CLIENT for s in at_referral.get_finished_spans()),
                       "the webhook delivery's client span")

    # referral's relay published the event as a child of the request; intake's consumer handled it as a child
    # of that publishing.
    at_ref = at_referral.get_finished_spans()
    published = one(at_ref, lambda s: s.kind is SpanKind.PRODUCER and s.context.trace_id == trace_id
                    and s.attributes is not None
                    and s.attributes.get("cloudevents.event_type") == "org.refnet.referral.requested.v1",
                    "publishing referral.requested in the request's trace")
    assert published.parent is not None
    applied = [s for s in intake_applied() if s.parent is not None and s.parent.span_id == published.context.span_id]
    assert applied, "intake's consumer span is a child of the relay's publishing span"
    assert applied[0].name == "process refnet.referral.events"
    assert applied[0].resource.attributes["service.name"] == "refnet-intake"
    assert request.resource.attributes["service.name"] == "refnet-referral"

    # Span names are route templates, never a concrete URL with its ids.
    assert "GET /referrals/{referral_id}" in {s.name for s in at_ref}
    assert not [s.name for s in at_ref if referral_id in s.name]
    # The webhook delivery is a client span, and its receiver was given the trace to continue.
    assert hooks_received[0].get("traceparent", "").startswith("00-")
    client = one(at_ref, lambda s: s.kind is SpanKind.CLIENT, "for the webhook delivery")
    assert client.attributes is not None and client.attributes.get("http.request.method", "POST") == "POST"

    # Nothing personal, no URL, no header value anywhere in what would be exported.
    exported = "\n".join(s.to_json() for s in [*at_ref, *at_intake.get_finished_spans()])
    token = httpx.Headers(referral.headers(sender))["authorization"].split(" ", 1)[1]
    for secret in (MARKER, token[:40], "127.0.0.1", "Bearer", "Needs a safe place", referral_id, case_id):
        assert secret not in exported, f"{secret!r} reached a span"
