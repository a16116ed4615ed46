"""The integrator CLI against a registry served over real HTTP (uvicorn), seeded as `make run` seeds it:
`refnet token --as`, `refnet agency add|list|suspend`. The registry validates its own tokens by fetching its
JWKS over HTTP, as every other service does."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path

import uvicorn
from typer.testing import CliRunner

from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import registry as bootstrap
from deploy.launcher.cli import app as refnet
from deploy.launcher.infra import free_port
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.auth import TokenValidator
from shared.migrations import upgrade


async def test_cli_issues_tokens_and_manages_agencies_over_http(
    new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url, port = new_database("registry_cli"), free_port()
    base = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(upgrade, "registry", url)
    ctx = BootstrapContext(service="registry", home=tmp_path, database_url=url, service_urls={"registry": base})
    await asyncio.to_thread(bootstrap.prepare, ctx)
    settings = RegistrySettings(database_url=url, kafka_bootstrap="127.0.0.1:9", issuer=base, port=port,
                                signing_key_file=ctx.env["REFNET_REGISTRY_SIGNING_KEY_FILE"],
                                kek_file=ctx.env["REFNET_REGISTRY_KEK_FILE"], log_json=False)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    env = {"REFNET_HOME": str(tmp_path)}

    async def cli(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(CliRunner().invoke, refnet, list(args), env=env)
        return result.exit_code, result.stdout

    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        code, out = await cli("token", "--as", "iom", "--scope", "cases:read")
        assert code == 0, out
        async with TokenValidator(base, "refnet", base + "/.well-known/jwks.json") as validator:
            principal = await validator.validate(out.strip())
        assert principal.agency_id == "agy_iom" and principal.scopes == {"cases:read"}

        code, out = await cli("agency", "list", "--json")
        assert code == 0, out
        assert {"agy_iom", "agy_unhcr", "agy_oversight"} <= {a["id"] for a in json.loads(out)}

        code, out = await cli("agency", "add", "--name", "Caritas Palermo", "--short-name", "caritas",
                              "--country", "IT", "--scope", "cases:read", "--scope", "registry:read")
        assert code == 0, out
        added = json.loads(out)
        credentials = tmp_path / "credentials" / "caritas.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert set(json.loads(credentials.read_text())) == {"name", "agency_id", "client_id", "private_key_pem",
                                                            "token_url", "scopes"}
        assert (await cli("token", "--as", "caritas"))[0] == 0

        code, out = await cli("agency", "suspend", added["agency_id"])
        assert code == 0 and json.loads(out)["status"] == "suspended"
        code, _ = await cli("token", "--as", "caritas")
        assert code == 1
        assert (await cli("token", "--as", "nobody"))[0] != 0
    finally:
        server.should_exit = True
        await serving
