"""Logs, request ids and metrics, the same in every service.

Logs are structlog JSON lines. They carry ids, routes and outcomes -- never request bodies, query strings
or header values, which may hold personal data.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("refnet_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram(
    "refnet_http_request_seconds", "HTTP request latency", ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_BACKLOG = Gauge("refnet_outbox_backlog", "Events written but not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge("refnet_outbox_oldest_age_seconds", "Age of the oldest unpublished event", ["service"])
LEADER = Gauge("refnet_leader", "1 on the replica holding the task's advisory lock", ["service", "task"])
EVENTS_PUBLISHED = Counter("refnet_events_published_total", "Events published by the relay",
                           ["service", "topic"])
EVENTS_CONSUMED = Counter("refnet_events_consumed_total", "Events handled by consumers",
                          ["service", "consumer", "outcome"])
CONSUMER_LAG = Gauge("refnet_consumer_lag", "Messages behind the end of the partition",
                     ["service", "consumer", "topic", "partition"])
DLQ_MESSAGES = Counter("refnet_dlq_messages_total", "Messages sent to a dead-letter topic",
                       ["service", "consumer", "topic"])

REQUEST_ID_HEADER = "X-Request-ID"


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    processors.append(structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _route_template(request: Request) -> str:
    # The template (/cases/{case_id}), never the concrete path: ids stay out of metric labels and logs.
    # Starlette records the matched route in the scope while routing, so this is read after the call.
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def install_request_middleware(app: FastAPI, service: str) -> None:
    log = structlog.get_logger("refnet.http")

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if incoming.isascii() and 0 < len(incoming) <= 64 else uuid.uuid4().hex
        request.state.request_id = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id, service=service)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        elapsed = time.perf_counter() - started
        route = _route_template(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        REQUESTS.labels(service, request.method, route, str(response.status_code)).inc()
        LATENCY.labels(service, request.method, route).observe(elapsed)
        if route not in ("/healthz", "/readyz", "/metrics"):
            log.info("request", method=request.method, route=route, status=response.status_code,
                     ms=round(elapsed * 1000, 1), request_id=request_id)
        return response


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
