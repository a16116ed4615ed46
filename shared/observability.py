"""Logs, request ids and metrics, the same in every service.

Logs are structlog JSON lines. They carry ids, routes and outcomes -- never request bodies, query strings
or header values, which may hold personal data.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from types import TracebackType
from typing import Any

import structlog
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("refnet_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram(
    "refnet_http_request_seconds", "HTTP request latency", ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Counted from the database on every replica when scraped (not only on the relay leader): with no leader the
# backlog still has a series that grows, and an alert can fire.
OUTBOX_BACKLOG = Gauge("refnet_outbox_backlog", "Events written but not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge("refnet_outbox_oldest_age_seconds", "Age of the oldest unpublished event", ["service"])
BROKER_UP = Gauge("refnet_broker_up", "1 if the broker answered this replica's last readiness check", ["service"])
REFERRALS_OVERDUE = Gauge("refnet_referrals_overdue",
                          "Referrals past their deadline and still requested (set by the deadline scheduler leader)",
                          ["pathway", "priority"])
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
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("ascii")  # ASGI header names are lower-case bytes


def _renderer(json_logs: bool) -> Any:
    return structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _renderer(json_logs),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (PrintLogger writes the line and its newline apart), so a line from the stdlib
        # handler below, written from another thread, cannot land inside one of ours.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


_PROCESS_HANDLER = "refnet"


def configure_process_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Everything a service process writes is a structlog line, not only what RefNet logs itself.

    For a process that runs one service (``refnet serve``), not for the app factory: the root handler and the
    hooks belong to the process. Libraries (uvicorn, aiokafka, asyncio, SQLAlchemy) log through the stdlib at
    WARNING and above (as they did through the stdlib's last-resort handler before); warnings, uncaught
    exceptions in any thread and exceptions Python can only report ("Exception ignored in ...") become
    error lines with their traceback. What the interpreter itself prints while it tears down is out of reach.
    """
    configure_logging(level, json_logs)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(json_logs),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_PROCESS_HANDLER)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _PROCESS_HANDLER] + [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    logging.captureWarnings(True)  # as "py.warnings" WARNING records
    log = structlog.get_logger("refnet.process")

    def uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        log.error("uncaught_exception", exc_info=(kind, value, tb))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        log.error("uncaught_exception", thread=getattr(args.thread, "name", None),
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def unraisable(info: Any) -> None:
        # The object's type, not its repr: a repr may carry field values.
        log.error("unraisable_exception", where=info.err_msg or "Exception ignored in",
                  object_type=type(info.object).__qualname__,
                  exc_info=(info.exc_type, info.exc_value, info.exc_traceback))

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
    sys.unraisablehook = unraisable


def _route_template(scope: Scope) -> str:
    # The template (/cases/{case_id}), never the concrete path: ids stay out of metric labels and logs.
    # Starlette records the matched route in the scope while routing, so this is read after the call.
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestObserver:
    """Request id, metrics and one log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request
    through an extra task and memory streams, which cost about a millisecond of CPU per request in the
    referral benchmark -- on every request of every service."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.log = structlog.get_logger("refnet.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming.isascii() and 0 < len(incoming) <= 64 else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # what ``request.state.request_id`` reads
        header = (_REQUEST_ID_KEY, request_id.encode("ascii"))
        status = 500  # if the app raises before answering, ServerErrorMiddleware answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id, service=self.service)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            REQUESTS.labels(self.service, method, route, str(status)).inc()
            LATENCY.labels(self.service, method, route).observe(elapsed)
            if route not in _QUIET_ROUTES:
                self.log.info("request", method=method, route=route, status=status, ms=round(elapsed * 1000, 1),
                              request_id=request_id)


def install_request_middleware(app: FastAPI, service: str) -> None:
    app.add_middleware(RequestObserver, service=service)


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
