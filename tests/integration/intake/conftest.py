"""intake under test: migrated on a fresh database, served with its lifespan (relay and consumers), tokens
from a LocalIssuer, a master key in a temporary file."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from services.intake.app import create_app
from services.intake.consumers import on_referral
from services.intake.crypto import MasterKey, write_key_file
from services.intake.settings import IntakeSettings
from shared.db import unit_of_work
from shared.envelope import Event, decode
from shared.migrations import upgrade
from tests.conftest import Infra
from tests.support.issuer import LocalIssuer

ALL_SCOPES = "cases:read cases:write consent:write"


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as local:
        yield local


@dataclass
class Intake:
    app: FastAPI
    client: httpx.AsyncClient
    issuer: LocalIssuer
    database_url: str
    database_name: str
    key_file: Path
    bootstrap: str

    def headers(self, agency: str, scope: str = ALL_SCOPES, *, acting_user: str | None = None,
                purpose: str | None = None, client: str | None = None) -> dict[str, str]:
        headers = self.issuer.auth_headers(client or f"client-{agency}", agency, scope, acting_user=acting_user)
        if purpose is not None:
            headers["X-Purpose"] = purpose
        return headers

    def writer(self, agency: str, scope: str = ALL_SCOPES, *, acting_user: str | None = None) -> dict[str, str]:
        """A write's headers: its answer carries the case back, so it names a purpose like a read."""
        return self.headers(agency, scope, acting_user=acting_user, purpose="case_management")

    async def register(self, agency: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post("/cases", json=body or case_body(),
                                          headers=self.headers(agency, purpose="case_management"))
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def read(self, case_id: str, agency: str, purpose: str = "case_management") -> httpx.Response:
        return await self.client.get(f"/cases/{case_id}", headers=self.headers(agency, purpose=purpose))

    async def refer(self, case_id: str, from_agency: str, to_agency: str, categories: list[str], *,
                    status: str = "requested", consent_id: str | None = "consent-x",
                    referral_id: str | None = None) -> str:
        """Apply a referral event to intake's read model through its consumer handler."""
        referral_id = referral_id or f"ref-{uuid.uuid4().hex[:12]}"
        event = Event(
            id=str(uuid.uuid4()), source="/refnet/referral", type=f"org.refnet.referral.{status}.v1",
            subject=referral_id, partition_key=case_id, time=datetime.now(UTC),
            data={"referral_id": referral_id, "case_id": case_id, "from_agency": from_agency,
                  "to_agency": to_agency, "status": status, "pathway": "protection",
                  "shared_categories": categories, "consent_id": consent_id},
        )
        async with unit_of_work(self.app.state.runtime.sessions) as session:
            await on_referral(session, event)
        return referral_id


def unique_person() -> dict[str, Any]:
    """A person whose name, birth date and phone appear nowhere else, so leaks can be searched for."""
    tag = secrets.token_hex(3)
    return {
        "given_name": f"Amina{tag}", "family_name": f"Tesfay{tag}",
        "birth_date": f"19{secrets.randbelow(40) + 60}-0{secrets.randbelow(9) + 1}-1{secrets.randbelow(9)}",
        "gender": "feminine", "citizenship": "ER", "languages": ["ti", "ar"],
        "phone": f"+2499{secrets.randbelow(10**8):08d}", "email": None, "documents": ["none"],
    }


def consent_body(recipient: str | None = None, categories: list[str] | None = None, **overrides: Any
                 ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "grantor": "self", "method": "written", "language": "ti", "interpreter_used": True,
        "provisions": [{"purpose": "referral", "recipient_agency": recipient,
                        "data_categories": categories or ["identity", "demographics", "protection_needs"],
                        "decision": "permit"}],
        "valid_until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        "checklist": {"purpose_explained": True, "use_explained": True, "research_use_explained": True,
                      "access_right_explained": True, "retention_explained": True,
                      "withdrawal_explained": True},
    }
    body.update(overrides)
    return body


def case_body(person: dict[str, Any] | None = None, consent: dict[str, Any] | None = None,
              **screening: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "person": person or unique_person(),
        "screening": {"trafficking_status": "possible", "identified_by": "ngo",
                      "country_of_exploitation": "LY", "exploitation_types": ["forced_labour"],
                      "means_of_control": ["debt_bondage", "confiscated_documents"],
                      "recruiter_relation": "other", "migration_status": "asylum_seeker",
                      "fear_of_return": True, "needs": ["shelter", "protection.rsd"],
                      "risk_level": "high", "notes": f"notes{secrets.token_hex(4)} free text", **screening},
    }
    if consent is not None:
        body["initial_consent"] = consent
    return body


def agency() -> str:
    return f"agency-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def intake(infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> AsyncIterator[Intake]:
    url = new_database("intake")
    await asyncio.to_thread(upgrade, "intake", url)
    keys = Path(tempfile.mkdtemp(prefix="intake-keys-"))
    key_file = keys / "master.b64"
    write_key_file(key_file, MasterKey.generate())
    settings = IntakeSettings(database_url=url, kafka_bootstrap=infra.bootstrap, log_json=True,
                              issuer=issuer.issuer, jwks_url=issuer.jwks_url, master_key_file=str(key_file),
                              relay_poll_seconds=0.2, consumer_group=f"intake-test-{uuid.uuid4().hex[:8]}")
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Intake(app, client, issuer, url, url.rsplit("/", 1)[1], key_file, infra.bootstrap)
    finally:
        # Once seen: the shared relay/consumer shutdown hanging on the broker. Bound it, and say so.
        try:
            await asyncio.wait_for(lifespan.__aexit__(None, None, None), 30)
        except TimeoutError:
            warnings.warn("intake's lifespan shutdown took over 30 s", stacklevel=1)


async def topic_events(bootstrap: str, topic: str, match: Callable[[Event], bool], *, expect: int = 1,
                       timeout: float = 15.0) -> list[Event]:
    """Read ``topic`` from the start until ``expect`` events satisfy ``match`` (or time runs out)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: list[Event] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline and len(found) < expect:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = decode(record.key, record.value, list(record.headers))
                    if match(event):
                        found.append(event)
    finally:
        await consumer.stop()
    return found


async def raw_topic_bytes(bootstrap: str, topics: list[str], *, settle: float = 3.0) -> bytes:
    """Every record (key, value, headers) of ``topics`` so far, concatenated."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    chunks: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + settle
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    chunks.append(record.key or b"")
                    chunks.append(record.value or b"")
                    chunks.extend(bytes(v) for _, v in record.headers)
    finally:
        await consumer.stop()
    return b"\n".join(chunks)


def access_records(case_id: str) -> Callable[[Event], bool]:
    return lambda e: e.type.endswith("access.recorded.v1") and e.data.get("case_id") == case_id


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
