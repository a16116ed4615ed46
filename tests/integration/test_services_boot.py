"""Each service boots as it runs in production: migrations on its own database, then the app with its
relay and consumers; health, readiness, metrics and errors behave the same everywhere."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from deploy.launcher.infra import Broker
from shared.leader import lock_key
from shared.migrations import upgrade
from tests.conftest import Infra
from tests.integration.registry.conftest import new_kek_file

SERVICES = ["registry", "intake", "referral", "audit"]


@asynccontextmanager
async def serving(service: str, database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    await asyncio.to_thread(upgrade, service, database_url)
    module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_cls = getattr(settings_module, f"{service.capitalize()}Settings")
    # The registry does not start without its key-encryption key (its signing keys are stored wrapped).
    keys = {"kek_file": str(new_kek_file())} if service == "registry" else {}
    app: FastAPI = module.create_app(settings_cls(database_url=database_url, kafka_bootstrap=bootstrap,
                                                  log_json=False, **keys))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def until_ready(client: httpx.AsyncClient, seconds: float = 60) -> httpx.Response:
    """Ready once its consumers have joined and caught up with the broker: seconds after start, not at once."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        ready = await client.get("/readyz")
        if ready.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return ready
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("service", SERVICES)
async def test_service_boots_ready_and_answers_problems(
    service: str, infra: Infra, new_database: Callable[[str], str]
) -> None:
    async with serving(service, new_database(service), infra.bootstrap) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await until_ready(client)
        assert ready.status_code == 200, ready.text
        assert {k: v for k, v in ready.json().items() if k != "outbox"} == {
            "status": "ready", "database": True, "broker": True, "read_models": True}
        assert set(ready.json()["outbox"]) == {"retained", "unpublished", "last_republish"}

        missing = await client.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"].endswith("not-found")

        big = await client.post("/anything", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413
        assert big.json()["type"].endswith("payload-too-large")

        metrics = await client.get("/metrics")
        assert "refnet_http_requests_total" in metrics.text
        # Labelled by route template, also for routes of included routers.
        assert f'route="/readyz",service="{service}"' in metrics.text
        assert missing.headers["x-request-id"]


async def test_a_broker_outage_after_start_up_keeps_the_replica_ready_and_shows_in_the_metric(
    private_broker: Broker, new_database: Callable[[str], str]
) -> None:
    """Readiness is the database and caught-up read models; the broker is reported, not required, once caught
    up: a broker blip must not take every pod out of the load balancer (the outbox rides it out)."""
    async with serving("registry", new_database("registry"), private_broker.bootstrap) as client:
        assert (await until_ready(client)).status_code == 200
        assert 'refnet_broker_up{service="registry"} 1.0' in (await client.get("/metrics")).text
        private_broker.kill()
        down = await client.get("/readyz")
        assert down.status_code == 200, down.text
        assert down.json()["broker"] is False and down.json()["database"] is True
        assert 'refnet_broker_up{service="registry"} 0.0' in (await client.get("/metrics")).text
        private_broker.start()
        for _ in range(40):
            if (await client.get("/readyz")).json()["broker"] is True:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("/readyz did not see the broker come back")
        assert 'refnet_broker_up{service="registry"} 1.0' in (await client.get("/metrics")).text


async def test_outbox_gauges_come_from_the_database_on_a_replica_that_does_not_lead(
    infra: Infra, new_database: Callable[[str], str]
) -> None:
    """With no relay leader here the backlog still has a series, counted from the database, that grows."""
    database_url = new_database("registry")
    await asyncio.to_thread(upgrade, "registry", database_url)
    other_leader = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        # Another "replica" holds the relay's lock, so this one never leads (nor publishes the row below).
        assert await other_leader.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("refnet-outbox:registry"))
        await other_leader.execute(
            "INSERT INTO outbox (id, topic, aggregatetype, aggregateid, type, payload, created_at) "
            "VALUES (gen_random_uuid(), 'refnet.nowhere', 'T', 'x', 't', '{}'::jsonb, now() - interval '10 minutes')")
        async with serving("registry", database_url, infra.bootstrap) as client:
            metrics = (await client.get("/metrics")).text
    finally:
        await other_leader.close()
    backlog = [line for line in metrics.splitlines() if line.startswith('refnet_outbox_backlog{service="registry"}')]
    assert backlog and float(backlog[0].split()[-1]) == 1, backlog
    age = [line for line in metrics.splitlines()
           if line.startswith('refnet_outbox_oldest_age_seconds{service="registry"}')]
    assert age and float(age[0].split()[-1]) >= 590, age
