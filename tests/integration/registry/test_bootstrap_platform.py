"""``refnet bootstrap platform``: the production way to the first administrator and the referral service's
client -- no demo data, idempotent, and the credentials it writes get tokens (referral's through the same
``ClientCredentials`` the referral service uses, reaching the registry by an internal address)."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from deploy.launcher.cli import app
from services.registry.store import Agency, Service
from shared.client_auth import ClientCredentials
from shared.db import unit_of_work
from tests.integration.registry.conftest import ISSUER, make_settings, serve

INTERNAL = "http://registry.internal:8001"


async def test_bootstrap_creates_the_platform_clients_once(
    new_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_database("registry_boot")
    settings = make_settings(url)
    monkeypatch.setenv("REFNET_REGISTRY_DATABASE_URL", url)
    monkeypatch.setenv("REFNET_REGISTRY_ISSUER", ISSUER)
    monkeypatch.setenv("REFNET_REGISTRY_REGISTRY_URL", INTERNAL)
    out = tmp_path / "platform"
    async for registry in serve(settings):  # migrates the database and serves the registry in-process
        first = await asyncio.to_thread(CliRunner().invoke, app, ["bootstrap", "platform", "--credentials-dir",
                                                                   str(out)])
        assert first.exit_code == 0, first.output
        files = {p.name: p.read_text() for p in out.iterdir()}
        assert set(files) == {"admin.json", "referral-service.json"}
        for name in files:
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
        again = await asyncio.to_thread(CliRunner().invoke, app, ["bootstrap", "platform", "--credentials-dir",
                                                                   str(out)])
        assert again.exit_code == 0, again.output
        assert "nothing changed" in again.output
        assert {p.name: p.read_text() for p in out.iterdir()} == files
        async with unit_of_work(registry.sessions) as session:
            agencies = sorted((await session.execute(select(Agency.client_id))).scalars().all())
            services = await session.scalar(select(func.count()).select_from(Service))
        assert agencies == ["cli_admin", "cli_referral_service"] and services == 0  # no demo data

        referral = json.loads(files["referral-service.json"])
        assert referral["token_url"] == INTERNAL + "/oauth/token"
        # The referral service's own token source, its calls routed to the in-process registry.
        transport = httpx.ASGITransport(app=registry.http._transport.app)  # type: ignore[attr-defined]
        tokens = ClientCredentials(referral, scope="cases:clearance", transport=transport)
        claims = await registry.validator.validate(await tokens.token())
        assert "cases:clearance" in claims.scopes
        admin = json.loads(files["admin.json"])
        assert "admin" in admin["scopes"]
