"""The one way a RefNet service is assembled: errors, logs, metrics, health, auth, relay and consumers.

A service's ``app.py`` calls ``build_app`` with its routers and a function that lists its consumers and
background tasks; everything else is the same in every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog
from aiokafka import AIOKafkaClient
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import kafka, tracing
from shared.auth import TokenValidator
from shared.consumer import EventConsumer
from shared.db import database_reachable, make_engine, make_sessionmaker
from shared.errors import PROBLEM_MEDIA_TYPE, Problem, add_problem_responses, install_problem_handlers
from shared.observability import (
    BROKER_UP,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    configure_logging,
    install_request_middleware,
    metrics_response,
)
from shared.outbox import OutboxRelay, OutboxSummary, outbox_summary
from shared.revocation import RevocationList, RevocationListener, RevocationStore
from shared.settings import ServiceSettings

log = structlog.get_logger("refnet.app")
DepsT = TypeVar("DepsT")


@dataclass
class Runtime:
    """What a running service holds: built in the lifespan, reachable as ``request.app.state.runtime``."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # The service's own dependencies, one typed object (its app.py's ``Deps``) built by ``build_app(provide=...)``.
    deps: object | None = None
    revocation_listener: RevocationListener | None = None
    # A service's own conditions for serving, beside its consumers' (e.g. referral's registry read model).
    ready_when: list[Callable[[], bool]] = field(default_factory=list)
    _broker_client: AIOKafkaClient | None = None
    _outbox: tuple[float, OutboxSummary] | None = None

    def need(self, kind: type[DepsT]) -> DepsT:
        """The service's dependencies as the type it declared (a wrong or missing one is a wiring bug)."""
        if not isinstance(self.deps, kind):
            raise RuntimeError(f"{self.settings.service_name} provides {type(self.deps).__name__}, not {kind.__name__}")
        return self.deps

    async def read_models_ready(self) -> bool:
        """Has every read model this replica serves from caught up with what the broker holds (once)? Also: its
        relay knows its part, so what this service said before a restart is back on the broker."""
        if not self.relay.settled:
            return False
        listener = self.revocation_listener
        if listener is not None and not await listener.check_caught_up():
            return False
        for consumer in self.consumers:
            if not await consumer.check_caught_up():
                return False
        return all(condition() for condition in self.ready_when)

    async def outbox(self) -> OutboxSummary:
        """The outbox's figures, counted at most every 5 s (probes come often; counting a large outbox is not free)."""
        now = time.monotonic()
        if self._outbox is None or now - self._outbox[0] > 5:
            self._outbox = (now, await outbox_summary(self.engine))
        return self._outbox[1]

    async def broker_reachable(self, timeout: float = 2.0) -> bool:
        try:
            if self._broker_client is None:
                client = AIOKafkaClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=2000,
                                        **kafka.client_options())
                await asyncio.wait_for(client.bootstrap(), timeout)
                self._broker_client = client
            await asyncio.wait_for(self._broker_client.fetch_all_metadata(), timeout)
            return True
        except Exception:
            if self._broker_client is not None:
                with contextlib.suppress(Exception):
                    await self._broker_client.close()
            self._broker_client = None
            return False

    async def close(self) -> None:
        if self._broker_client is not None:
            with contextlib.suppress(Exception):
                await self._broker_client.close()


# A service contributes consumers and background jobs once its runtime exists.
Wiring = Callable[[Runtime], Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]]


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, having read no more than the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read the body here, up to the limit, and hand it to the app whole. Stopping the app's own reading
        # midway does not work: the framework catches whatever interrupts it and answers 400 ("error parsing the
        # body"), so a streamed (chunked) oversized body was a 400, not a 413.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # e.g. waiting for http.disconnect
            delivered = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(413, "payload-too-large", f"Request bodies are limited to {self.max_bytes} bytes.")
        response = JSONResponse(problem.body(scope.get("path")), status_code=413, media_type=PROBLEM_MEDIA_TYPE)
        await response(scope, receive, send)


class Alive(BaseModel):
    status: Literal["ok"] = Field(description="Always `ok`: the process answers.", examples=["ok"])


class Readiness(BaseModel):
    """What `/readyz` reports (the same shape with 200 and 503)."""

    status: Literal["ready", "not_ready"] = Field(description="`ready` when the database answers and the read "
                                                  "models have caught up once.", examples=["ready"])
    database: bool = Field(description="The service's database answered.", examples=[True])
    broker: bool = Field(description="The broker answered (reported, not a condition once caught up).",
                         examples=[True])
    read_models: bool = Field(description="The relay and every consumer have caught up with the broker once.",
                              examples=[True])
    outbox: dict[str, Any] | None = Field(
        default=None, description="The outbox: `retained` published rows kept, `unpublished` rows waiting, and "
        "the `last_republish` after a broker lost its log (absent when the database did not answer).",
        examples=[{"retained": 120, "unpublished": 0, "last_republish": None}])


def health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> Alive:
        return Alive(status="ok")

    @router.get("/readyz", summary="Database reachable and read models caught up (the broker is reported)",
                responses={200: {"model": Readiness, "description": "ready"},
                           503: {"model": Readiness, "description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        # The broker is not a condition once the read models have caught up: a broker outage is what the outbox
        # rides out, and taking every pod of every service out of the load balancer for it would turn a blip
        # into an outage. Its state is in the body and in refnet_broker_up (alerted on instead).
        runtime: Runtime = request.app.state.runtime
        database, broker = await asyncio.gather(
            database_reachable(runtime.engine), runtime.broker_reachable()
        )
        BROKER_UP.labels(runtime.settings.service_name).set(1 if broker else 0)
        read_models = False
        body: dict[str, Any] = {}
        if database:
            try:
                # Latched once caught up; before that it needs the broker, which is the start-up condition.
                read_models = await runtime.read_models_ready()
                body["outbox"] = (await runtime.outbox()).as_json()
            except Exception as exc:  # an outage between the checks above and these: not ready, say nothing more
                log.info("readiness_check_failed", error=type(exc).__name__)
                read_models = False
        ok = database and read_models
        body = {"status": "ready" if ok else "not_ready", "database": database, "broker": broker,
                "read_models": read_models, **body}
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        try:  # the outbox from the database on every replica, so "no relay leader" still has a growing series
            summary = await runtime.outbox()
            OUTBOX_BACKLOG.labels(runtime.settings.service_name).set(summary.unpublished)
            OUTBOX_OLDEST_AGE.labels(runtime.settings.service_name).set(summary.oldest_unpublished_seconds)
        except Exception as exc:  # database away: the other metrics still answer
            log.info("outbox_metrics_failed", error=type(exc).__name__)
        return metrics_response()

    return router


def build_app(
    *,
    settings: ServiceSettings,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    wiring: Wiring | None = None,
    provide: Callable[[Runtime], AbstractAsyncContextManager[object]] | None = None,
) -> FastAPI:
    """``provide`` builds the service's typed dependencies around its life: what it yields becomes
    ``runtime.deps`` (before the consumers and jobs of ``wiring`` start), and its exit closes them (after they
    stopped)."""
    configure_logging(settings.log_level, settings.log_json)
    kafka.configure(kafka.KafkaSecurity.from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        traced_as = tracing.enter(app)  # before any task starts: what they do traces as this service (if on)
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                             max_overflow=settings.database_pool_overflow)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            relay=OutboxRelay(
                service=settings.service_name,
                engine=engine,
                database_url=settings.database_url,
                bootstrap=settings.kafka_bootstrap,
                enable_idempotence=settings.kafka_enable_idempotence,
                batch_size=settings.relay_batch_size,
                poll_seconds=settings.relay_poll_seconds,
                partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
                retention=settings.outbox_retention,
                reconcile_seconds=settings.relay_reconcile_seconds,
                delivery_partitions=settings.delivery_topic_partitions,
                delivery_retention_ms=settings.delivery_topic_retention_ms,
            ),
        )
        app.state.runtime = runtime
        revocations = RevocationList()
        app.state.token_validator = TokenValidator.from_settings(settings, revocations=revocations)
        resources = contextlib.AsyncExitStack()
        if provide is not None:
            runtime.deps = await resources.enter_async_context(provide(runtime))
        runtime.tasks.append(asyncio.create_task(runtime.relay.run(), name="outbox-relay"))
        if settings.revocation_topic:
            listener = RevocationListener(settings.kafka_bootstrap, [settings.revocation_topic], revocations,
                                          RevocationStore(runtime.sessions))
            runtime.revocation_listener = listener
            runtime.tasks.append(asyncio.create_task(listener.run(), name="revocation-listener"))
        for item in wiring(runtime) if wiring else ():
            if isinstance(item, EventConsumer):
                runtime.consumers.append(item)
                runtime.tasks.append(asyncio.create_task(item.run(), name=f"consumer-{item.name}"))
            else:
                runtime.tasks.append(asyncio.create_task(item(), name=getattr(item, "__name__", "job")))
        log.info("service_started", service=settings.service_name)
        try:
            yield
        finally:
            for task in runtime.tasks:
                task.cancel()
            # Bounded: a Kafka client stuck on an unreachable broker must not hold the process hostage.
            if runtime.tasks:
                _, pending = await asyncio.wait(runtime.tasks, timeout=15)
                for task in pending:
                    log.warning("background_task_did_not_stop", task=task.get_name())
            await resources.aclose()
            await runtime.close()
            await app.state.token_validator.aclose()
            await engine.dispose()
            await tracing.shutdown(app, traced_as)

    # The documentation pages with their scripts served by the service itself: field offices and production
    # networks are often offline, and a CDN's Swagger UI is a blank page there (fastapi-offline ships them).
    app = FastAPIOffline(title=title, description=description, version="0.1.0", lifespan=lifespan,
                         dependencies=[Depends(refuse_unknown_query_parameters)])
    install_problem_handlers(app)
    install_request_middleware(app, settings.service_name)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    tracing.instrument(app, settings.service_name)  # nothing unless tracing is on (shared/tracing.py)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The document says what the service answers, errors included (RFC 9457 problems): generated once.
        if app.openapi_schema is None:
            app.openapi_schema = add_problem_responses(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_SAFE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,39}")


def _declared_query_parameters(app: FastAPI, path: str, method: str) -> frozenset[str] | None:
    """The query parameters the service's OpenAPI document declares for an operation (None: not in it)."""
    table: dict[tuple[str, str], frozenset[str]] | None = getattr(app.state, "declared_query", None)
    if table is None:
        table = {}
        for template, operations in app.openapi().get("paths", {}).items():
            for verb, operation in operations.items():
                if isinstance(operation, dict):
                    table[(template, verb.upper())] = frozenset(
                        p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")
        app.state.declared_query = table
    return table.get((path, method))


async def refuse_unknown_query_parameters(request: Request) -> None:
    """A query parameter the operation does not take is a 400, not silently ignored: a misspelt filter
    (``taxonomy=`` for ``taxonomy_term_id=``) would otherwise answer everything as if it had filtered."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return
    declared = _declared_query_parameters(request.app, path, request.method)
    if declared is None:  # not an operation of the document (documentation pages): nothing to hold it to
        return
    unknown = sorted(set(request.query_params.keys()) - declared)
    if unknown:
        # Named only when a name looks like one: whatever else a caller typed is not echoed back.
        named = [name if _SAFE_NAME.fullmatch(name) else "(not a parameter name)" for name in unknown]
        # The answer any query parameter with a wrong value gets: 422 naming it (shared.errors' validation problem).
        raise Problem(422, "validation-error",
                      f"This operation takes no query parameter {', '.join(dict.fromkeys(named))}; "
                      f"it takes: {', '.join(sorted(declared)) or 'none'}.",
                      errors=[{"loc": ["query", name], "msg": "not a parameter of this operation"}
                              for name in dict.fromkeys(named)])


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def deps_of(request: Request, kind: type[DepsT]) -> DepsT:
    """A route's typed access to its service's dependencies: ``Annotated[Deps, Depends(deps)]`` in api.py."""
    return runtime_of(request).need(kind)
