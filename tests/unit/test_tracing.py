"""Traces: off unless asked for, and then nothing installed at all; on, spans carry nothing personal and the
outbox and consumer hooks keep one trace across Kafka."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.app import build_app
from shared.settings import ServiceSettings

ON = {"REFNET_TRACING": "true", "OTEL_TRACES_EXPORTER": "none"}
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "REFNET_TRACING",
                  "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER")


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "REFNET_TRACING": "false"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"REFNET_TRACING": "true"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
])
def test_on_only_when_an_endpoint_or_the_setting_says_so(environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled(environ) is on


@pytest.fixture
def no_tracing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def probe_app() -> FastAPI:
    router = APIRouter()

    @router.post("/probe/{item_id}")
    async def probe(item_id: str) -> dict[str, object]:
        span = trace.get_current_span()
        return {"recording": span.is_recording(), "valid": span.get_span_context().is_valid,
                "carrier": tracing.carrier()}

    return build_app(settings=ServiceSettings(log_json=False), title="probe", description="probe", routers=[router])


async def test_off_nothing_is_installed_and_nothing_recorded(no_tracing_variables: None) -> None:
    app = probe_app()
    assert tracing.provider_of(app) is None
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert not [m for m in app.user_middleware if m.cls is tracing._Current]
    # The process-wide OpenTelemetry state is untouched: no tracer provider, httpx not wrapped.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe.test") as client:
        answer = await client.post("/probe/x", json={"name": "Amira"},
                                   headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert answer.json() == {"recording": False, "valid": False, "carrier": {}}
    # The outbox and consumer hooks do nothing.
    assert tracing.carrier() == {}
    with tracing.Publishing() as spans:
        assert spans.start("refnet.referral.events", "e1", "org.refnet.referral.requested.v1", None) == []
    with tracing.consuming("c", "refnet.referral.events", 0, 0, [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16
                                                                     + b"-01")]):
        assert not trace.get_current_span().is_recording()


@contextlib.contextmanager
def as_service(app: FastAPI) -> Iterator[None]:
    """As in the service's lifespan and requests: its code traces as the service."""
    token = tracing.enter(app)
    try:
        yield
    finally:
        if token is not None:
            tracing._current.reset(token)


@pytest.fixture
async def traced() -> AsyncIterator[tuple[FastAPI, InMemorySpanExporter]]:
    app = FastAPI()
    provider = tracing.instrument(app, "unit", ON)
    assert provider is not None
    exporter = InMemorySpanExporter()
    tracing.add_exporter(provider, exporter, batch=False)
    try:
        yield app, exporter
    finally:
        await tracing.shutdown(app)
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry, "httpx unwrapped once nobody traces"


def test_on_a_span_keeps_no_url_address_header_or_exception_message(traced: tuple[FastAPI, InMemorySpanExporter]
                                                                     ) -> None:
    app, exporter = traced
    provider = tracing.provider_of(app)
    assert provider is not None
    tracer = provider.get_tracer("unit")
    with pytest.raises(ValueError), tracer.start_as_current_span("POST /cases", attributes={
            "http.route": "/cases", "http.request.method": "POST", "url.full": "https://x.test/cases?name=Amira",
            "url.query": "name=Amira", "http.target": "/cases?name=Amira", "client.address": "203.0.113.9",
            "user_agent.original": "Amira's phone", "http.request.header.x_note": ("Amira",)}):
        raise ValueError("duplicate key (name)=(Amira)")
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {"http.route": "/cases", "http.request.method": "POST"}
    assert [dict(e.attributes or {}) for e in span.events] == [{"exception.type": "ValueError"}]
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "ValueError"
    assert "Amira" not in span.to_json()
    assert span.resource.attributes["service.name"] == "refnet-unit"


def test_an_event_carries_its_writers_trace_through_the_relay_to_the_consumer(
        traced: tuple[FastAPI, InMemorySpanExporter]) -> None:
    app, exporter = traced
    provider = tracing.provider_of(app)
    assert provider is not None
    with as_service(app), provider.get_tracer("unit").start_as_current_span("POST /referrals") as request:
        stored = tracing.carrier()  # what add_events keeps with the outbox row
    assert stored["traceparent"].split("-")[1] == format(request.get_span_context().trace_id, "032x")
    with as_service(app):  # the relay's and the consumer's tasks, started in the lifespan
        with tracing.Publishing() as spans:
            headers = spans.start("refnet.delivery.agency-1", "e1", "org.refnet.referral.requested.v1",
                                  stored["traceparent"])
        with tracing.consuming("intake-referrals", "refnet.delivery.agency-1", 2, 7, headers):
            assert trace.get_current_span().is_recording()
    by_kind = {s.kind: s for s in exporter.get_finished_spans()}
    sent, handled = by_kind[SpanKind.PRODUCER], by_kind[SpanKind.CONSUMER]
    assert sent.name == "send refnet.delivery.{agency}" and handled.name == "process refnet.delivery.{agency}"
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    assert handled.parent is not None and handled.parent.span_id == sent.context.span_id
    assert {s.context.trace_id for s in (sent, handled)} == {request.get_span_context().trace_id}


def test_a_failed_publish_ends_its_spans_as_failed(traced: tuple[FastAPI, InMemorySpanExporter]) -> None:
    app, exporter = traced
    with as_service(app), pytest.raises(ConnectionError), tracing.Publishing() as spans:
        spans.start("refnet.referral.events", "e1", "org.refnet.referral.requested.v1", None)
        raise ConnectionError("broker away")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.parent is None


async def test_on_a_callers_baggage_is_not_taken_and_its_trace_is_joined(
        traced: tuple[FastAPI, InMemorySpanExporter]) -> None:
    app, exporter = traced

    @app.get("/probe")
    async def probe() -> dict[str, object]:
        return {"baggage": dict(baggage.get_all()), "carrier": tracing.carrier()}

    caller = "0af7651916cd43dd8448eb211c80319c"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe.test") as client:
        answer = await client.get("/probe?name=Amira", headers={
            "traceparent": f"00-{caller}-b7ad6b7169203331-01", "baggage": "name=Amira", "tracestate": "x=Amira"})
    assert answer.json()["baggage"] == {}
    assert answer.json()["carrier"]["traceparent"].split("-")[1] == caller
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /probe" and format(span.context.trace_id, "032x") == caller
    assert "Amira" not in span.to_json()
