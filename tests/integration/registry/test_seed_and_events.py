"""The demo seed `make run` applies, the key rotation command, and events reaching the broker."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import registry as bootstrap
from deploy.launcher.cli import app
from shared.client_auth import request_token
from shared.envelope import decode
from shared.migrations import upgrade
from tests.conftest import Infra
from tests.integration.registry.conftest import ISSUER, make_settings, serve

CONTRACT_FIELDS = {"name", "agency_id", "client_id", "private_key_pem", "token_url", "scopes"}
DEMO_NAMES = {"admin", "iom", "unhcr", "shelter", "legalaid", "clinic", "oversight", "referral-service"}


async def token_with(http: httpx.AsyncClient, credentials: dict[str, object]) -> str:
    token, _ = await request_token(http, dict(credentials), "")
    return token


async def test_demo_seed_is_idempotent_and_its_credentials_get_tokens(
    new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database("registry_seed")
    await asyncio.to_thread(upgrade, "registry", url)
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url,
                           service_urls={"registry": ISSUER})
    await asyncio.to_thread(bootstrap.prepare, ctx)
    first = {p.name: p.read_text() for p in (tmp_path / "credentials").iterdir() if p.is_file()}
    kek_file = Path(ctx.env["REFNET_REGISTRY_KEK_FILE"])
    kek = kek_file.read_bytes()
    await asyncio.to_thread(bootstrap.prepare, ctx)  # a second `make run`
    assert kek_file.parent == tmp_path / "keys" and kek_file.read_bytes() == kek  # the KEK is kept
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600 and len(base64.b64decode(kek)) == 32
    # (people/ holds the demo people's files: test_people_seed_and_cli.py)
    files = {p.stem: p for p in (tmp_path / "credentials").iterdir() if p.is_file()}
    assert set(files) == DEMO_NAMES
    assert {p.name: p.read_text() for p in files.values()} == first  # keys are kept, not regenerated
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = json.loads(path.read_text())
        assert set(data) == CONTRACT_FIELDS
        assert data["token_url"] == ISSUER + "/oauth/token"
    key_file = Path(ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    settings = make_settings(url, signing_key_file=str(key_file), kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        creds = {name: json.loads(path.read_text()) for name, path in files.items()}
        oversight = await registry.validator.validate(await token_with(registry.http, creds["oversight"]))
        assert "audit:read" in oversight.scopes
        clearance = await registry.validator.validate(await token_with(registry.http, creds["referral-service"]))
        assert "cases:clearance" in clearance.scopes
        iom = {"Authorization": f"Bearer {await token_with(registry.http, creds['iom'])}"}
        agencies = (await registry.http.get("/agencies", headers=iom)).json()["items"]
        assert len(agencies) == len(DEMO_NAMES)
        services = (await registry.http.get("/services", params={"limit": 500}, headers=iom)).json()["items"]
        assert len(services) >= 40
        assert len({s["taxonomy"] for s in services}) == 20
        assert len({c for s in services for c in s["countries"]}) >= 4
        assert len({lang for s in services for lang in s["languages"]}) >= 8
        accepting = (await registry.http.get("/services", params={"accepting": "true", "limit": 500},
                                             headers=iom)).json()["items"]
        assert 0 < len(accepting) < len(services)


async def test_keys_rotate_command_keeps_the_previous_key_and_writes_the_key_file(
    new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database("registry_rotate")
    key_file = tmp_path / "signing.jwks.json"
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": ISSUER})
    await asyncio.to_thread(upgrade, "registry", url)
    await asyncio.to_thread(bootstrap.prepare, ctx)
    key_file.write_text(Path(ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"]).read_text())
    env = {"REFNET_REGISTRY_DATABASE_URL": url, "REFNET_REGISTRY_SIGNING_KEY_FILE": str(key_file),
           "REFNET_REGISTRY_KEK_FILE": ctx.env["REFNET_REGISTRY_KEK_FILE"]}

    async def rotate(*options: str) -> dict[str, object]:
        result = await asyncio.to_thread(CliRunner().invoke, app, ["keys", "rotate", *options], env=env)
        assert result.exit_code == 0, result.output
        output: dict[str, object] = json.loads(result.stdout)
        return output

    settings = make_settings(url, signing_key_file=str(key_file), kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"])
    async for registry in serve(settings):
        before = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
        pending = await rotate()  # published ahead: the current key still signs for a minute
        jwks = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
        assert jwks == [*before, pending["newest_kid"]]
        client = await registry.agency(["cases:read"])
        assert json.loads(base64.urlsafe_b64decode((await registry.token(client)).split(".")[0] + "=="))[
            "kid"] == before[0]
        rotated = await rotate("--activate-in", "0")
        after = [k["kid"] for k in (await registry.http.get("/.well-known/jwks.json")).json()["keys"]]
        assert after == [rotated["newest_kid"], *before] == rotated["published_kids"]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [k["kid"] for k in json.loads(key_file.read_text())["keys"]] == after
    async for restarted in serve(settings):  # the file and the database agree after a restart
        client = await restarted.agency(["cases:read"])
        token = await restarted.token(client)
        assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == after[0]
        retired = await rotate("--retire-previous")
        assert retired["published_kids"] == [after[0]]
        jwks = (await restarted.http.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in jwks] == [after[0]]


async def test_registry_events_reach_the_broker_keyed_by_agency(
    infra: Infra, new_database: Callable[[str], str]
) -> None:
    settings = make_settings(new_database("registry_events"), kafka_bootstrap=infra.bootstrap,
                             relay_poll_seconds=0.2)
    async for registry in serve(settings):
        agency = await registry.agency(["registry:read"])
        consumer = AIOKafkaConsumer("refnet.registry.events", bootstrap_servers=infra.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        found = None
        for _ in range(60):
            if await registry.outbox("agency.registered.v1", subject=agency.agency_id) == []:
                break
            await asyncio.sleep(0.25)
        await consumer.start()
        try:
            for _ in range(40):
                batch = await consumer.getmany(timeout_ms=500)
                for record in (r for rs in batch.values() for r in rs):
                    event = decode(record.key, record.value, record.headers)
                    if event.subject == agency.agency_id:
                        found = (record.key, event)
                if found:
                    break
        finally:
            await consumer.stop()
        assert found is not None
        key, event = found
        assert key == agency.agency_id.encode()
        assert event.type == "org.refnet.agency.registered.v1" and event.source == "/refnet/registry"
        assert event.data["agency_id"] == agency.agency_id and "jwks" not in event.data
