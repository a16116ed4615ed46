"""The production shape (deploy/postgres/init): an owner role that is not a superuser runs the migrations,
the service logs in as the writer role itself. Everything must work, and the writer still cannot rewrite."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable

import pytest

from deploy.launcher.infra import Broker
from services.audit.settings import AuditSettings
from shared.migrations import upgrade
from shared.topics import INTAKE_EVENTS
from tests.conftest import Infra, psql
from tests.integration.audit.conftest import running_audit
from tests.support.issuer import LocalIssuer


async def test_owner_migrates_writer_serves(infra: Infra, private_broker: Broker, new_database: Callable[[str], str],
                                            audit_settings: Callable[..., AuditSettings],
                                            issuer: LocalIssuer) -> None:
    owner = f"audit_owner_{uuid.uuid4().hex[:8]}"
    database = new_database("audit_prod").rsplit("/", 1)[1]
    setup = f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'refnet_audit_writer') THEN
                CREATE ROLE refnet_audit_writer LOGIN;
            END IF;
        END $$;
        ALTER ROLE refnet_audit_writer LOGIN;
        CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE;
        ALTER DATABASE "{database}" OWNER TO {owner};
    """  # noqa: S608 -- generated names, no input
    psql(infra.server_url, setup)
    host = infra.server_url.split("@", 1)[1]
    await asyncio.to_thread(upgrade, "audit", f"postgresql+asyncpg://{owner}@{host}/{database}")
    settings = audit_settings(f"postgresql+asyncpg://refnet_audit_writer@{host}/{database}",
                              private_broker.bootstrap)
    async with running_audit(settings, infra.server_url, issuer, migrate=False) as audit:
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": "c-1", "agency": "iom"})
        await audit.wait_for_size(1)
        assert (await audit.get("/audit/verify")).json()["ok"] is True
        assert (await audit.get("/audit/checkpoint")).json()["tree_size"] == 1
        with pytest.raises(Exception, match="permission denied"):
            await asyncio.to_thread(upgrade, "audit", settings.database_url)  # the writer cannot migrate
        for user, expected in (("refnet_audit_writer", "permission denied"), (owner, "append-only")):
            for statement in ("UPDATE audit_entries SET agency = 'x'", "DELETE FROM audit_entries",
                              "TRUNCATE audit_entries"):
                with pytest.raises(subprocess.CalledProcessError) as refused:
                    psql(f"postgresql://{user}@{host}", statement, database)
                assert expected in refused.value.stderr.decode(), (user, statement)
