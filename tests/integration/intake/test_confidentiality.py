"""Rule 7 and encryption at rest: a person's name, birth date and phone number appear in no database byte
(pg_dump), no message on any topic, no log line -- only in the API answers to the parties allowed them."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess

import pytest
import structlog
from aiokafka import AIOKafkaConsumer

from deploy.launcher.infra import POSTGRES_BIN_PATH
from shared.observability import configure_logging
from tests.conftest import Infra, psql
from tests.integration.intake.conftest import (
    Intake,
    agency,
    case_body,
    consent_body,
    raw_topic_bytes,
    topic_events,
    unique_person,
)


def _needles(person: dict[str, str], notes: str) -> list[bytes]:
    values = [person["given_name"], person["family_name"], person["birth_date"], person["phone"], notes]
    plain = [v.encode() for v in values]
    # bytea columns are dumped as hex: plaintext stored unencrypted in one would show up like this.
    return plain + [v.encode().hex().encode() for v in values]


def _pg_dump(infra: Infra, database: str) -> bytes:
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", f"{infra.server_url}/{database}"],
        capture_output=True, check=True,
    ).stdout


async def test_no_personal_data_in_the_database_topics_or_logs(
    intake: Intake, infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    log_buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(log_buffer))
    caplog.set_level(logging.DEBUG)
    try:
        owner, recipient = agency(), agency()
        person = unique_person()
        body = case_body(person, consent=consent_body(recipient, ["identity", "contact", "notes"]))
        notes = body["screening"]["notes"]
        created = await intake.register(owner, body)
        case_id = created["id"]
        # Every path that touches the data: reads granted and refused, an invalid body quoting the data,
        # updates, consent, an override with its justification.
        assert (await intake.read(case_id, owner)).status_code == 200
        await intake.refer(case_id, owner, recipient, ["identity", "contact", "notes"])
        shared = await intake.read(case_id, recipient, "referral")
        assert shared.status_code == 200 and shared.json()["person"]["phone"] == person["phone"]
        assert (await intake.read(case_id, agency())).status_code == 404
        bad = case_body(person | {"phone": person["given_name"], "citizenship": person["family_name"][:2]})
        invalid = await intake.client.post("/cases", json=bad, headers=intake.writer(owner))
        assert invalid.status_code == 422
        for needle in (person["given_name"], person["family_name"]):
            assert needle not in invalid.text
        assert (await intake.client.patch(f"/cases/{case_id}", headers=intake.writer(owner),
                                          json={"risk_level": "medium"})).status_code == 200
        justification = f"threat to life, reported by {person['given_name']} at {person['phone']}"
        override = await intake.client.post(
            f"/cases/{case_id}/overrides", headers=intake.issuer.person_headers(agency=owner),
            json={"recipient_agency": recipient, "justification": justification})
        assert override.status_code == 201
        approval = await intake.client.post(f"/cases/{case_id}/overrides/{override.json()['id']}/approval",
                                            headers=intake.issuer.person_headers(agency=owner, roles=("supervisor",)))
        assert approval.status_code == 200
        consent = consent_body(recipient, witness=f"{person['family_name']} senior",
                               capacity_note=f"born {person['birth_date']}")
        assert (await intake.client.post(f"/cases/{case_id}/consents", headers=intake.headers(owner),
                                         json=consent)).status_code == 201
        # Wait until the relay has published everything this case produced.
        await topic_events(intake.bootstrap, "refnet.intake.events",
                           lambda e: e.partition_key == case_id and e.short_type == "consent.granted.v1", expect=2)
    finally:
        configure_logging("INFO", True)

    needles = _needles(person, notes)
    dump = await asyncio.to_thread(_pg_dump, infra, intake.database_name)
    assert b"CREATE TABLE public.cases" in dump and case_id.encode() in dump
    for needle in needles:
        assert needle not in dump, needle

    admin = AIOKafkaConsumer(bootstrap_servers=intake.bootstrap)
    await admin.start()
    try:
        topics = sorted(await admin.topics())
    finally:
        await admin.stop()
    assert "refnet.intake.events" in topics and "refnet.audit.access" in topics
    messages = await raw_topic_bytes(intake.bootstrap, topics)
    assert case_id.encode() in messages
    for needle in needles:
        assert needle not in messages, needle

    logs = log_buffer.getvalue() + "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "request" in logs
    for needle in needles:
        assert needle.decode() not in logs, needle


async def test_after_erasure_no_database_read_returns_the_personal_data(intake: Intake, infra: Infra) -> None:
    owner = agency()
    person = unique_person()
    body = case_body(person, consent=consent_body())
    created = await intake.register(owner, body)
    case_id = created["id"]
    before = await asyncio.to_thread(_pg_dump, infra, intake.database_name)
    erased = await intake.client.post(f"/cases/{case_id}/erase", headers=intake.headers(owner))
    assert erased.status_code == 202
    sql = (f"SELECT count(*) FROM case_keys WHERE case_id = '{case_id}';"  # noqa: S608 -- our own id
           f"SELECT sealed IS NULL, status FROM cases WHERE id = '{case_id}'")
    rows = psql(infra.server_url, sql, intake.database_name)
    assert rows.split() == ["0", "t|erased"]
    after = await asyncio.to_thread(_pg_dump, infra, intake.database_name)
    assert case_id.encode() in after and case_id.encode() in before
    for needle in _needles(person, body["screening"]["notes"]):
        assert needle not in after
    # Every route: the owner sees only non-identifying facts; the consent history keeps no free text.
    for path in (f"/cases/{case_id}", f"/cases/{case_id}/consents", "/cases"):
        response = await intake.client.get(path, headers=intake.writer(owner))
        assert response.status_code == 200
        for value in (person["given_name"], person["family_name"], person["birth_date"], person["phone"],
                      body["screening"]["notes"]):
            assert value not in response.text
