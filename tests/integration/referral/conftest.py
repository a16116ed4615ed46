"""The referral service on a real PostgreSQL (and the session's broker), a fake intake behind the clearance
contract, a local token issuer, a clock the test turns."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.referral import consumers
from services.referral.app import create_app
from services.referral.clearance import HttpClearanceClient
from services.referral.deps import Deps
from services.referral.service import Referrals
from services.referral.settings import ReferralSettings
from shared.crypto import MasterKey, write_key_file
from shared.db import unit_of_work
from shared.envelope import Event
from shared.migrations import upgrade
from shared.outbound import Resolver
from tests.conftest import Infra
from tests.support.fake_intake import SERVICE_TOKEN, FakeIntake
from tests.support.issuer import LocalIssuer, local_issuer_fixture

issuer = local_issuer_fixture(scope="package")

ALL_SCOPES = "referrals:read referrals:write events:read"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    intake: FakeIntake
    clock: Clock
    issuer: LocalIssuer
    database_url: str

    @property
    def deps(self) -> Deps:
        return self.app.state.runtime.need(Deps)  # type: ignore[no-any-return]

    @property
    def referrals(self) -> Referrals:
        return self.deps.referrals

    def headers(self, agency: str, scope: str = ALL_SCOPES, **options: Any) -> dict[str, str]:
        return self.issuer.auth_headers(f"client-{agency}", agency, scope, **options)

    async def apply(self, short_type: str, data: dict[str, Any]) -> None:
        """Apply one event through the consumer's handler, as the consumer would (one transaction)."""
        handlers = {**consumers.registry_handlers(self.referrals), **consumers.intake_handlers(self.referrals)}
        event = Event(id=uuid.uuid4().hex, source="/refnet/test", type="org.refnet." + short_type, subject=None,
                      partition_key=data.get("case_id") or data.get("agency_id", ""), time=self.clock(), data=data)
        async with unit_of_work(self.referrals.sessions) as session:
            await handlers[short_type](session, event)

    async def agency(self, agency_id: str | None = None, status: str = "active") -> str:
        agency_id = agency_id or "agency-" + uuid.uuid4().hex[:10]
        await self.apply(f"agency.{'suspended' if status == 'suspended' else 'registered'}.v1", {
            "agency_id": agency_id, "name": "An agency", "kind": "ngo", "country": "SD", "status": status,
            "scopes": ["referrals:read", "referrals:write"]})
        return agency_id

    async def service(self, agency_id: str, *, taxonomy: str = "shelter", available: int = 5,
                      status: str = "accepting", **extra: Any) -> str:
        service_id = "svc-" + uuid.uuid4().hex[:10]
        await self.apply("service.published.v1", {
            "service_id": service_id, "agency_id": agency_id, "taxonomy": taxonomy, "status": "active",
            "countries": extra.get("countries", ["SD"]), "languages": extra.get("languages", ["ar"]),
            "accepts_children": extra.get("accepts_children", True),
            "capacity": {"available": available, "total": 10, "status": status},
            "location": extra.get("location")})
        return service_id

    async def refer(self, sender: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post("/referrals", json=body, headers={**self.headers(sender), **headers})

    async def move(self, agency: str, referral_id: str, to: str, reason_code: str | None = None,
                   note: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"to": to}
        if reason_code is not None:
            body["reason_code"] = reason_code
        if note is not None:
            body["note"] = note
        return await self.client.post(f"/referrals/{referral_id}/transitions", json=body,
                                      headers=self.headers(agency))


@asynccontextmanager
async def running_referral(database_url: str, bootstrap: str, local: LocalIssuer, *,
                           intake: FakeIntake | None = None, clock: Clock | None = None,
                           webhook_transport: httpx.AsyncBaseTransport | None = None,
                           resolver: Resolver | None = None, **settings: Any) -> AsyncIterator[Service]:
    await asyncio.to_thread(upgrade, "referral", database_url)
    intake = intake or FakeIntake()
    clock = clock or Clock()
    values: dict[str, Any] = {
        "database_url": database_url, "kafka_bootstrap": bootstrap, "log_json": False, "log_level": "WARNING",
        "issuer": local.issuer, "jwks_url": local.jwks_url, "service_token": SERVICE_TOKEN,
        "consumer_group_prefix": "referral-" + uuid.uuid4().hex[:8], "deadline_interval_seconds": 3600.0,
        "feed_max_wait_seconds": 5.0, "relay_poll_seconds": 0.2, "registry_empty_grace_seconds": 0.0,
        # The tests' receivers are on this machine over plain http, as on the development stack.
        "outbound_allow_http": True, "outbound_allow_private": True,
    }
    if "master_key_file" not in settings:
        key_file = Path(tempfile.mkdtemp(prefix="referral-key-")) / "referral_master_key.b64"
        write_key_file(key_file, MasterKey.generate())
        values["master_key_file"] = str(key_file)
    values.update(settings)
    clearance = HttpClearanceClient("http://intake.test", SERVICE_TOKEN, transport=httpx.MockTransport(intake.handle))
    app = create_app(ReferralSettings(**values), clearance=clearance, clock=clock,
                     webhook_transport=webhook_transport, resolver=resolver)
    try:
        async with app.router.lifespan_context(app):
            # As a replica in production, answer once the read model of the registry holds what the registry had
            # published (the shared test broker may carry other tests' registry events): until then an unknown
            # recipient would be 503, not the 422 some tests expect.
            catchup = app.state.runtime.need(Deps).registry_catchup
            deadline = asyncio.get_running_loop().time() + 60
            while not catchup.loaded:
                assert asyncio.get_running_loop().time() < deadline, "the registry read model did not load in 60 s"
                await asyncio.sleep(0.1)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://referral.test") as client:
                yield Service(app, client, intake, clock, local, database_url)
    finally:
        await clearance.aclose()


@pytest.fixture(scope="module")
async def svc(infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> AsyncIterator[Service]:
    """One referral service for a whole test module (tests use their own agencies and cases)."""
    async with running_referral(new_database("referral"), infra.bootstrap, issuer) as service:
        yield service


def body(case_id: str, to_agency: str | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"case_id": case_id, "pathway": "service", "service_type": "shelter",
                            "priority": "urgent", "reason": "Needs a safe place tonight",
                            "shared_categories": ["identity", "demographics"]}
    if to_agency is not None:
        base["to_agency"] = to_agency
    base.update(fields)
    return base
