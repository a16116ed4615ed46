"""OpenTelemetry traces: one referral followed from its request through the outbox, Kafka and every consumer.

Off unless asked for: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
or when ``REFNET_TRACING=true``; ``REFNET_TRACING=false`` or ``OTEL_SDK_DISABLED=true`` turns it off whatever else
is set. Off, nothing is installed: no tracer provider, no middleware, no wrapped HTTP client; the hooks in
``shared.outbox`` and ``shared.consumer`` cost one context-variable read.

On, each service has a tracer provider of its own (``service.name`` = ``refnet-<service>``; a test process runs
several services, so it is not the process-wide OpenTelemetry global) exporting over OTLP/HTTP with the standard
``OTEL_EXPORTER_OTLP_*`` variables (``OTEL_TRACES_EXPORTER=none`` exports nothing: tests add their own). Traced:

- every HTTP request (FastAPI instrumentation): the span is named by method and route *template*, never the URL;
- every outbound httpx call (httpx instrumentation) as a client span carrying ``traceparent``;
- the relay's publishing of each event, a child of the span that wrote it: ``add_events`` keeps the writer's
  ``traceparent`` with the outbox row, and the relay sends its own as the record's ``traceparent`` header;
- each consumer's handling of a record, a child of that header's context.

Nothing personal reaches an exporter: every span goes through :class:`_Redacting`, which keeps only the attributes
listed in ``_KEPT`` (methods, route templates, status codes, messaging ids and topics) and of an exception only
its type. URLs, query strings, addresses, header values and bodies are never kept, whatever an instrumentation or
an ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` variable adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.topics import DELIVERY_PREFIX

TRACEPARENT = "traceparent"
_SCOPE = "refnet"
# W3C trace context only: no ``baggage``, which would carry whatever a caller put in it on to every service and
# to partners' webhook receivers.
_PROPAGATOR = TraceContextTextMapPropagator()
# The tracer provider of the service whose code is running: set for a request by _Current and for a service's
# background tasks (relay, consumers, jobs) by ``enter`` in its lifespan; None when tracing is off.
_current: ContextVar[TracerProvider | None] = ContextVar("refnet_tracer_provider", default=None)
_active: set[TracerProvider] = set()
# Probes are asked every few seconds by every kubelet and Prometheus: not worth a trace each.
_NOT_TRACED = "/healthz,/readyz,/metrics"

# The only attributes an exported span may carry. None of them can hold a URL, a query, an address, a header or
# a body: a value the instrumentations add later, or an operator asks for, is dropped unless named here.
_KEPT = frozenset({
    "http.route", "http.request.method", "http.method", "http.response.status_code", "http.status_code",
    "error.type", "exception.type",
    "messaging.system", "messaging.operation.type", "messaging.operation.name", "messaging.destination.name",
    "messaging.destination.template", "messaging.destination.partition.id", "messaging.consumer.group.name",
    "messaging.message.id", "messaging.kafka.offset", "cloudevents.event_id", "cloudevents.event_type",
    "refnet.outcome",
})


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    explicit = env.get("REFNET_TRACING", "").strip().lower()
    if explicit in ("true", "1", "yes", "on"):
        return True
    if explicit in ("false", "0", "no", "off"):
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _kept(attributes: Attributes) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if k in _KEPT}


def _without_state(context: SpanContext | None) -> SpanContext | None:
    # A caller's ``tracestate`` is whatever it chose to send: not exported.
    if context is None:
        return None
    return SpanContext(context.trace_id, context.span_id, context.is_remote, context.trace_flags, TraceState())


class _Redacting(SpanProcessor):
    """Hands the exporter a copy of each span with only what may leave: ``_KEPT`` attributes, exception types
    (not their messages, which may quote values, nor stack traces), a status without its description's detail."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_end(self, span: ReadableSpan) -> None:
        context = _without_state(span.context)
        if context is None:
            return
        status = span.status
        if status.description:  # "ValueError: <the message>" -> "ValueError"
            status = Status(status.status_code, status.description.split(":", 1)[0])
        events = [Event(e.name, _kept(e.attributes), e.timestamp) for e in span.events]
        links = [Link(_without_state(link.context) or link.context, _kept(link.attributes)) for link in span.links]
        self.inner.on_end(ReadableSpan(
            name=span.name, context=context, parent=_without_state(span.parent), resource=span.resource,
            attributes=_kept(span.attributes), events=events, links=links, kind=span.kind, status=status,
            start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def add_exporter(provider: TracerProvider, exporter: SpanExporter, *, batch: bool = True) -> None:
    """Export ``provider``'s spans to ``exporter``, redacted (the only way spans leave)."""
    inner = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(_Redacting(inner))


def provider_of(app: FastAPI) -> TracerProvider | None:
    provider: TracerProvider | None = getattr(app.state, "tracer_provider", None)
    return provider


class _Current:
    """ASGI middleware: the request's code (its outbound calls, the events it writes) traces as this service."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _current.set(self.provider)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


class _CurrentServiceTracer(trace.Tracer):
    """The httpx instrumentation is process-wide: its spans go to the provider of the service calling."""

    def _tracer(self) -> trace.Tracer:
        provider = _current.get()
        return provider.get_tracer(_SCOPE) if provider is not None else trace.NoOpTracer()

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer().start_as_current_span(*args, **kwargs)


class _CurrentServiceProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _CurrentServiceTracer()


def instrument(app: FastAPI, service: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Trace ``app`` as ``refnet-<service>`` if tracing is on (see the module's doc); -> its provider, or None."""
    env = os.environ if environ is None else environ
    if not enabled(env):
        return None
    # Imported here: they cost a start-up that does not trace a noticeable fraction of a second.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": f"refnet-{service}"}))
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        add_exporter(provider, OTLPSpanExporter())
    app.state.tracer_provider = provider
    propagate.set_global_textmap(_PROPAGATOR)  # what the instrumentations read and send: traceparent, no baggage
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=_NOT_TRACED,
                                       exclude_spans=["receive", "send"])
    app.add_middleware(_Current, provider=provider)
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=_CurrentServiceProvider())
    _active.add(provider)
    return provider


def enter(app: FastAPI) -> Token[TracerProvider | None] | None:
    """In a service's lifespan, before its background tasks start: they trace as this service."""
    provider = provider_of(app)
    return _current.set(provider) if provider is not None else None


async def shutdown(app: FastAPI, token: Token[TracerProvider | None] | None = None) -> None:
    """At the end of the lifespan: export what is left (for 5 s at most: an unreachable collector must not hold
    up the shutdown), and unwrap httpx once no service traces."""
    provider = provider_of(app)
    if token is not None:
        with contextlib.suppress(ValueError):  # the lifespan ended in another context than it began
            _current.reset(token)
    if provider is None:
        return
    _active.discard(provider)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.to_thread(provider.shutdown), 5)
    if not _active:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()


def _tracer() -> trace.Tracer | None:
    provider = _current.get()
    return None if provider is None else provider.get_tracer(_SCOPE)


def carrier() -> dict[str, str]:
    """The ``traceparent`` of the span writing an event (kept with the outbox row); {} when not tracing."""
    if _current.get() is None:
        return {}
    found: dict[str, str] = {}
    _PROPAGATOR.inject(found)
    return {TRACEPARENT: found[TRACEPARENT]} if TRACEPARENT in found else {}


def _topic_name(topic: str) -> str:
    # One span name per kind of topic, not per agency (names stay few; the topic itself is an attribute).
    return DELIVERY_PREFIX + "{agency}" if topic.startswith(DELIVERY_PREFIX) else topic


def _event_attributes(topic: str, event_id: str, event_type: str) -> dict[str, Any]:
    return {"messaging.system": "kafka", "messaging.destination.name": topic,
            "messaging.destination.template": _topic_name(topic), "messaging.message.id": event_id,
            "cloudevents.event_id": event_id, "cloudevents.event_type": event_type}


class Publishing:
    """The relay's spans for one batch: ``start`` one per event (-> the header to send with it); all end when
    the batch is acknowledged, as failed if it was not."""

    def __init__(self) -> None:
        self.tracer = _tracer()
        self.spans: list[trace.Span] = []

    def start(self, topic: str, event_id: str, event_type: str, written_by: str | None) -> list[tuple[str, bytes]]:
        if self.tracer is None:
            return []
        parent = _PROPAGATOR.extract({TRACEPARENT: written_by}) if written_by else otel_context.Context()
        span = self.tracer.start_span(f"send {_topic_name(topic)}", context=parent, kind=SpanKind.PRODUCER,
                                      attributes={**_event_attributes(topic, event_id, event_type),
                                                  "messaging.operation.type": "send"})
        self.spans.append(span)
        header: dict[str, str] = {}
        _PROPAGATOR.inject(header, context=trace.set_span_in_context(span))
        return [(TRACEPARENT, header[TRACEPARENT].encode())] if TRACEPARENT in header else []

    def __enter__(self) -> Publishing:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for span in self.spans:
            if kind is not None:
                span.set_status(Status(StatusCode.ERROR, kind.__name__))
                span.set_attribute("error.type", kind.__name__)
            span.end()


def _header(headers: Sequence[tuple[str, bytes | None]], name: str) -> str | None:
    for key, value in headers:
        if key == name and value:
            return value.decode("ascii", errors="replace")
    return None


@contextlib.contextmanager
def consuming(consumer: str, topic: str, partition: int, offset: int,
              headers: Sequence[tuple[str, bytes | None]]) -> Iterator[None]:
    """A consumer's handling of one record, as a child of the context its ``traceparent`` header carries."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    sent_by = _header(headers, TRACEPARENT)
    parent = _PROPAGATOR.extract({TRACEPARENT: sent_by}) if sent_by else otel_context.Context()
    attributes = {**_event_attributes(topic, _header(headers, "ce_id") or "", _header(headers, "ce_type") or ""),
                  "messaging.operation.type": "process", "messaging.consumer.group.name": consumer,
                  "messaging.destination.partition.id": str(partition), "messaging.kafka.offset": offset}
    with tracer.start_as_current_span(f"process {_topic_name(topic)}", context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes):
        yield


def outcome(what: str, *, failed: bool = False) -> None:
    """Note on the current span what became of the event (e.g. dead-lettered); nothing when not tracing."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("refnet.outcome", what)
        if failed:
            span.set_status(Status(StatusCode.ERROR, what))
